//! What `deploy-check` makes of what a server said: one row per check, pure.

use std::time::Duration;

use super::{CheckStatus, LocalBinaries, DISK_MARGIN_KIB};
use crate::binaries;
use crate::config::{Config, Healthcheck};
use crate::plan::{self, LockInfo, Release};

/// Judges the output of [`plan::check_script`] on `server`, with the binaries found here: the
/// rows after `auth`. Pure.
pub fn judge(
    config: &Config,
    server: &str,
    stdout: &str,
    local: &LocalBinaries,
) -> Vec<(&'static str, CheckStatus, String)> {
    let mut writable = None;
    let mut git = None;
    let mut unset = Vec::new();
    let mut missing_files = Vec::new();
    let mut missing_dirs = Vec::new();
    let mut disk = None;
    for line in stdout.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "writable" => writable = rest.split_once(' ').map(|(yes, dir)| (yes == "yes", dir.to_string())),
            "git" => git = Some(rest.trim().to_string()),
            "unset" => unset.push(rest.to_string()),
            "missing-file" => {
                if let Some(file) = rest.parse::<usize>().ok().and_then(|index| config.linked_files.get(index)) {
                    missing_files.push(format!("shared/{file}"));
                }
            }
            "missing-dir" => {
                if let Some(dir) = rest.parse::<usize>().ok().and_then(|index| config.linked_dirs.get(index)) {
                    missing_dirs.push(format!("shared/{dir}/"));
                }
            }
            "disk" => {
                let mut numbers = rest.split(' ').map(|number| number.parse::<u64>().ok());
                disk = Some((numbers.next().flatten(), numbers.next().flatten().unwrap_or(0), numbers.next().flatten()));
            }
            _ => {}
        }
    }
    let state = plan::parse_state(stdout);
    let mut rows = Vec::new();
    rows.push(match writable {
        Some((true, dir)) if dir == config.deploy_to => ("deploy_to", CheckStatus::Ok, format!("{dir} is writable")),
        Some((true, dir)) => (
            "deploy_to",
            CheckStatus::Ok,
            format!("{} does not exist yet; {dir} is writable, so deploy-setup can make it", config.deploy_to),
        ),
        Some((false, dir)) => (
            "deploy_to",
            CheckStatus::Fail,
            format!(
                "cannot write in {dir}: make {} writable for the SSH user, or set `deploy_to` to a directory it owns",
                config.deploy_to
            ),
        ),
        None => ("deploy_to", CheckStatus::Fail, "the check script did not report it".to_string()),
    });
    rows.push(match git.as_deref() {
        Some("") | None => (
            "git",
            CheckStatus::Fail,
            "git is not installed on the server: install it (for example `apt-get install git`)".to_string(),
        ),
        Some(version) => ("git", CheckStatus::Ok, version.to_string()),
    });
    rows.push(if unset.is_empty() {
        ("setup", CheckStatus::Ok, "releases/, shared/ and repo/ exist".to_string())
    } else {
        (
            "setup",
            CheckStatus::Fail,
            format!("{} missing in {}: run `cargo xtask deploy-setup`", unset.join(", "), config.deploy_to),
        )
    });
    rows.push(judge_linked(config, &missing_files, &missing_dirs, unset.is_empty()));
    rows.push(if !state.holder.is_empty() {
        (
            "lock",
            CheckStatus::Fail,
            format!(
                "held by {}: wait for that deploy; if it died, `cargo xtask unlock`",
                LockInfo::describe(&state.holder)
            ),
        )
    } else if !state.stale.is_empty() {
        (
            "lock",
            CheckStatus::Warn,
            format!(
                "stale lock of {} (its connection is gone): the next deploy takes it over",
                LockInfo::describe(&state.stale)
            ),
        )
    } else {
        ("lock", CheckStatus::Ok, "free".to_string())
    });
    rows.push(match disk {
        Some((Some(free), current, repo)) => {
            let needed = current + DISK_MARGIN_KIB;
            let mut detail = format!("{} free; a release needs about {}", kib(free), kib(needed));
            if let Some(repo) = repo {
                detail.push_str(&format!("; repo/ takes {}", kib(repo)));
            }
            if free < needed {
                ("free disk", CheckStatus::Fail, format!("{detail}: free some space on the server"))
            } else if free < 2 * needed {
                ("free disk", CheckStatus::Warn, detail)
            } else {
                ("free disk", CheckStatus::Ok, detail)
            }
        }
        _ => ("free disk", CheckStatus::Warn, "could not read the free space (`df -Pk`)".to_string()),
    });
    rows.push(judge_binaries(server, state.platform.as_ref(), local));
    rows
}

/// The `linked files` row. A missing `linked_files` entry fails (a deploy refuses a release
/// without it, and nothing makes it but the user); a missing `linked_dirs` entry only warns:
/// deploy-setup makes it (`set_up`: whether it has run), and a deploy without it goes through,
/// its link leading nowhere.
fn judge_linked(
    config: &Config,
    missing_files: &[String],
    missing_dirs: &[String],
    set_up: bool,
) -> (&'static str, CheckStatus, String) {
    let mut problems = Vec::new();
    if !missing_files.is_empty() {
        problems.push(format!(
            "{} missing in {}: create them on the server, deploy-setup does not (a deploy refuses a release \
             without them)",
            missing_files.join(", "),
            config.deploy_to
        ));
    }
    if !missing_dirs.is_empty() {
        let fix = match set_up {
            false => "`cargo xtask deploy-setup` creates them",
            true => "run `cargo xtask deploy-setup` again to create them (a deploy would link to nothing)",
        };
        problems.push(format!("{} missing in {}: {fix}", missing_dirs.join(", "), config.deploy_to));
    }
    let status = match (missing_files.is_empty(), missing_dirs.is_empty()) {
        (true, true) => CheckStatus::Ok,
        (true, false) => CheckStatus::Warn,
        (false, _) => CheckStatus::Fail,
    };
    let linked = config.linked_files.len() + config.linked_dirs.len();
    if linked == 0 {
        return ("linked files", CheckStatus::Skipped, "no `linked_files` or `linked_dirs` configured".to_string());
    }
    let detail = if problems.is_empty() { format!("{linked} present") } else { problems.join("; ") };
    ("linked files", status, detail)
}

/// The `binaries` row: whether the ELF files among the artifacts built here can run on `server`.
fn judge_binaries(
    server: &str,
    platform: Option<&binaries::Platform>,
    local: &LocalBinaries,
) -> (&'static str, CheckStatus, String) {
    let (status, detail) = match local {
        LocalBinaries::NotConfigured => (CheckStatus::Skipped, "no `artifacts` configured".to_string()),
        LocalBinaries::NotBuilt => (
            CheckStatus::Skipped,
            "an artifact is not there (deploy-check builds nothing): build, then check again; if it is still \
             missing after the build, its path in `artifacts` is wrong"
                .to_string(),
        ),
        LocalBinaries::Unreadable(err) => (CheckStatus::Fail, err.clone()),
        LocalBinaries::Found(needs) => match binaries::problems(needs, &[(server, platform)]) {
            Some(problems) => (CheckStatus::Fail, problems),
            None if needs.is_empty() => (CheckStatus::Ok, "no ELF file among the artifacts".to_string()),
            None => {
                let platform = platform.expect("problems() says a missing platform");
                let glibc = platform.glibc.map(|(major, minor)| format!(", glibc {major}.{minor}")).unwrap_or_default();
                (CheckStatus::Ok, format!("{} ELF file(s) fit {}{glibc}", needs.len(), platform.machine))
            }
        },
    };
    ("binaries", status, detail)
}

/// What the `health` row runs on `config.servers[index]`, whose state `check_script` reported:
/// the health check and the current release, or why the row is skipped. Pure.
pub fn health_target<'a>(
    config: &'a Config,
    index: usize,
    state: &plan::RemoteState,
) -> Result<(&'a Healthcheck, Release), String> {
    let Some(healthcheck) = &config.healthcheck else {
        return Err("no `healthcheck` configured".to_string());
    };
    if !healthcheck.scope.includes(&config.servers, index) {
        return Err("the health check's `roles` leave this server out".to_string());
    }
    if !state.holder.is_empty() {
        // Its release may be one it switched to and has not confirmed: not the one to judge.
        return Err("a deploy holds the lock: the current release is checked when it is done".to_string());
    }
    let (Some(name), Some(sha)) = (state.current_release(), state.current_sha()) else {
        return Err("no current release to check".to_string());
    };
    let release = Release {
        name: name.to_string(),
        sha: sha.to_string(),
        branch: String::new(),
        user: String::new(),
        release_commit: None,
    };
    Ok((healthcheck, release))
}

/// The `health` row from the health check of `release`: passed (tries, time taken), or failed
/// with what it printed on stderr (shown on one line, its end). Pure.
pub fn judge_health(release: &Release, result: Result<(u32, Duration), &str>) -> (CheckStatus, String) {
    match result {
        Ok((tries, elapsed)) => (
            CheckStatus::Ok,
            format!("passed in the current release {} ({tries} tries, {} ms)", release.name, elapsed.as_millis()),
        ),
        Err(stderr) => {
            let line = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
            let cut = line.char_indices().rev().nth(299).map_or(0, |(at, _)| at);
            let ellipsis = if cut > 0 { "..." } else { "" };
            // A warning, not a failure: a deploy is still possible, and may be the fix.
            (
                CheckStatus::Warn,
                format!(
                    "fails in the current release {}: {ellipsis}{} (a deploy whose health check fails would go back \
                     to this release)",
                    release.name,
                    &line[cut..]
                ),
            )
        }
    }
}

/// A size in KiB as people read it.
fn kib(size: u64) -> String {
    match size {
        size if size >= 1024 * 1024 => format!("{:.1} GiB", size as f64 / (1024.0 * 1024.0)),
        size if size >= 1024 => format!("{:.1} MiB", size as f64 / 1024.0),
        size => format!("{size} KiB"),
    }
}

