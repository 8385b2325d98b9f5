//! The host-key check made while connecting: the server's key against known_hosts (see
//! [`known_hosts`]), a revoked key refused under any policy, `accept-new` recording a new host's
//! key, and the commands that tell the user how to trust a key (`trust_commands`).

use std::io::{self, Write};
use std::path::Path;

use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use super::known_hosts;
use crate::config::{HostKeyPolicy, Server, SshOptions, ENV_KNOWN_HOSTS};
use crate::shell::quote;
use crate::Error;

/// Checks the server's key against known_hosts (`known_hosts_text`: the file's text, already
/// read, or the lines of [`ENV_KNOWN_HOSTS`] when it is set). A key an `@revoked` line names for
/// this host is refused under either policy. With `accept-new`, a host that has no entry
/// gets one in the file (its key's fingerprint is returned); a key that differs from an entry
/// is always refused.
pub(super) fn check_host_key(
    session: &Session,
    server: &Server,
    options: &SshOptions,
    name: &str,
    known_hosts_text: &str,
) -> Result<Option<String>, Error> {
    let known_hosts = options.known_hosts.as_path();
    let from_env = options.env.known_hosts.is_some();
    let source = if from_env { format!("`{ENV_KNOWN_HOSTS}`") } else { format!("`{}`", known_hosts.display()) };
    let refuse = |message: String| Error::HostKey { server: name.to_string(), message, unknown: false };
    let unknown = |message: String| Error::HostKey { server: name.to_string(), message, unknown: true };
    let (key, key_type) = session.host_key().ok_or_else(|| refuse("the server sent no host key".to_string()))?;
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|hash| format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)))
        .unwrap_or_else(|| "unknown".to_string());
    let entry = known_hosts::host_name(&server.host, server.port);
    // First, as OpenSSH does: a revoked key is refused whatever else trusts it, and never recorded.
    if let Some(line) = known_hosts::revocation(known_hosts_text, &entry, key) {
        return Err(refuse(format!(
            "the key offered by `{entry}` ({fingerprint}) is revoked: line {} of {source} marks it `{}`. Deploying \
             is refused, whatever else trusts the key (OpenSSH refuses it too: \"REVOKED HOST KEY DETECTED\"). Give \
             the server a new host key and trust that one; if the key was revoked by mistake, remove that line",
            line.number,
            known_hosts::REVOKED,
        )));
    }
    let mut known = session.known_hosts().map_err(|err| refuse(err.to_string()))?;
    // Only host lines: libssh2 knows no markers, and would read `@revoked` as a host name.
    for line in known_hosts::host_lines(known_hosts_text) {
        known
            .read_str(line.text, KnownHostFileKind::OpenSSH)
            .map_err(|err| refuse(format!("cannot parse line {} of {source}: {err}", line.number)))?;
    }
    match known.check_port(&server.host, server.port, key) {
        CheckResult::Match => Ok(None),
        CheckResult::NotFound if options.host_key_policy == HostKeyPolicy::AcceptNew && !from_env => {
            let line = format!(
                "{entry} {} {}\n",
                key_type_name(key_type)
                    .ok_or_else(|| refuse(format!("the server's key type {key_type:?} is not supported")))?,
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            append_known_host(known_hosts, &line).map_err(|err| {
                refuse(format!(
                    "cannot record its key ({fingerprint}) in {source}: {err}: fix the file's permissions or set `ssh.known_hosts`"
                ))
            })?;
            Ok(Some(fingerprint))
        }
        CheckResult::NotFound if from_env => Err(unknown(format!(
            "`{entry}` is not in {source}; its key fingerprint is {fingerprint}. If that is the server's \
             fingerprint, add the line that `{scan}` prints to {source}",
            scan = keyscan(server),
        ))),
        CheckResult::NotFound => {
            let (absent, instead) = match known_hosts.exists() {
                true => ("", String::new()),
                false => {
                    (" (the file does not exist)", format!(" (in CI, give the lines in `{ENV_KNOWN_HOSTS}` instead)"))
                }
            };
            Err(unknown(format!(
                "`{entry}` is not in {source}{absent}; its key fingerprint is {fingerprint}. If that is the \
                 server's fingerprint, trust it with {trust}, and run the command again{instead}",
                trust = trust_commands(server, known_hosts),
            )))
        }
        CheckResult::Mismatch => Err(refuse(format!(
            "the key offered by `{entry}` ({fingerprint}) differs from the one in {source} ({recorded}): the server \
             was reinstalled, or someone is in the middle. Deploying is refused. If the change is \
             expected, remove the old key with `ssh-keygen -R {entry} -f {file}` and trust the new one",
            entry = quote(&entry),
            file = quote(&known_hosts.display().to_string()),
            recorded = known_hosts::recorded_fingerprints(known_hosts_text, &server.host, server.port).join(", "),
        ))),
        CheckResult::Failure => Err(refuse(format!("could not check the key against {source}"))),
    }
}

/// The commands that record `server`'s key in the known_hosts file `file` (not the user's
/// own): `ssh-keyscan` appending to it (run on the gateway, for a server behind one), or one
/// `ssh` connection that asks and records the key there. The file's directory is made first
/// when it has none.
pub(super) fn trust_commands(server: &Server, file: &Path) -> String {
    let quoted = quote(&file.display().to_string());
    let mkdir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
            format!("mkdir -p -m 700 {} && ", quote(&dir.display().to_string()))
        }
        _ => String::new(),
    };
    let target = format!("-p {} {}@{}", server.port, quote(&server.user), quote(&server.host));
    match &server.gateway {
        None => format!(
            "`{mkdir}{} >> {quoted}` (or connect once with `ssh -o UserKnownHostsFile={quoted} {target}`)",
            keyscan(server)
        ),
        Some(gateway) => format!(
            "`{mkdir}ssh -o UserKnownHostsFile={quoted} -p {} {}@{} {} >> {quoted}` (its gateway scans it)",
            gateway.port,
            quote(&gateway.user),
            quote(&gateway.host),
            keyscan(server),
        ),
    }
}

/// The `ssh-keyscan` command that prints `server`'s known_hosts lines.
fn keyscan(server: &Server) -> String {
    format!("ssh-keyscan -p {} {}", server.port, quote(&server.host))
}

/// The known_hosts name of a key type.
fn key_type_name(key_type: HostKeyType) -> Option<&'static str> {
    match key_type {
        HostKeyType::Rsa => Some("ssh-rsa"),
        HostKeyType::Dss => Some("ssh-dss"),
        HostKeyType::Ecdsa256 => Some("ecdsa-sha2-nistp256"),
        HostKeyType::Ecdsa384 => Some("ecdsa-sha2-nistp384"),
        HostKeyType::Ecdsa521 => Some("ecdsa-sha2-nistp521"),
        HostKeyType::Ed25519 => Some("ssh-ed25519"),
        _ => None,
    }
}

/// Appends `line` to the known_hosts file, creating it (mode 0600, in a 0700 directory) if needed.
fn append_known_host(path: &Path, line: &str) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    // A file that does not end with a newline would glue our entry to its last line.
    let ends_cleanly = std::fs::read(path).map(|text| text.is_empty() || text.ends_with(b"\n")).unwrap_or(true);
    let text = if ends_cleanly { line.to_string() } else { format!("\n{line}") };
    file.write_all(text.as_bytes())
}
