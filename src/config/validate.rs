//! Per-key validation: each checks one value of the raw table and either gives its typed form or
//! the message naming the key at fault; and the path rules they share.

use std::path::{Path, PathBuf};

/// A `deploy_to` as the scripts use it: absolute, not `/`, without a trailing `/`, and with no
/// NUL or newline; or what is wrong with it.
pub(super) fn remote_dir(dir: String) -> Result<String, String> {
    if !dir.starts_with('/') {
        return Err(format!("must be an absolute path on the server, got `{dir}`"));
    }
    if dir.contains(['\0', '\n']) {
        return Err("contains a NUL or newline character".to_string());
    }
    match dir.trim_end_matches('/') {
        "" => Err("must not be `/`".to_string()),
        trimmed => Ok(trimmed.to_string()),
    }
}

/// Whether the relative path `path` is `dir` or lies below it.
pub(super) fn path_inside(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// A relative path with no `..`, `.` or empty part: it cannot leave the directory it is joined to.
pub fn is_plain_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Expands a leading `~/` to `home` and makes a relative path relative to `base` (the manifest's
/// directory), so that a config means the same whatever directory cargo runs from.
pub(super) fn expand_path(path: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => base.join(path),
    }
}
