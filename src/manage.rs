//! Commands around deploys: `rollback` (which restores the service: restart hooks, health
//! check), `releases` (and `releases --unmark`) and `unlock`.

use std::time::Instant;

use crate::config::Config;
use crate::fleet::parallel::{all_done, each, first_failure, DEFAULT_PARALLEL};
use crate::fleet::{lock_all, new_lock, new_step_marker, run_health, unlock_all, LockedServer};
use crate::plan::{self, is_release_name, LockInfo, Release, RemoteState, RollbackTo};
use crate::report::{Event, Quiet, Reporter};
pub use crate::report::ServerReleases;
use crate::ssh::Connection;
use crate::Error;

/// Reads every server's releases without changing anything, the servers in parallel, one
/// remote command each. A commit subject the server's `repo/` lacks is read in the local clone.
pub fn releases(config: &Config) -> Result<Vec<ServerReleases>, Error> {
    let results = each(config.servers.iter().collect(), DEFAULT_PARALLEL, &mut Quiet, |server, _| {
        let connection = Connection::open(config, server)?.read_only();
        let stdout = connection.run(&plan::inspect_script(&config.on(server)))?;
        let subjects = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("subject ")?.split_once(' '))
            .map(|(sha, subject)| (sha.to_string(), subject.to_string()))
            .collect();
        Ok(ServerReleases { server: connection.name().to_string(), state: plan::parse_state(&stdout), subjects })
    });
    let mut servers: Vec<ServerReleases> = results.into_iter().collect::<Result<_, _>>()?;
    subjects_from_here(config, &mut servers);
    Ok(servers)
}

/// Fills in, from the local clone, the subjects of the releases' commits that the servers'
/// `repo/` did not have (a server set up by another tool, say). Without a local clone they
/// stay unknown.
fn subjects_from_here(config: &Config, servers: &mut [ServerReleases]) {
    let missing =
        |server: &ServerReleases| server.state.releases.iter().any(|(_, sha)| !server.subjects.contains_key(sha));
    if !servers.iter().any(missing) {
        return;
    }
    let Ok(repo) = git2::Repository::discover(config.manifest_dir()) else { return };
    for server in servers {
        for (_, sha) in &server.state.releases {
            let commit = git2::Oid::from_str(sha).ok().and_then(|oid| repo.find_commit(oid).ok());
            if let Some(subject) = commit.and_then(|commit| commit.summary().ok().flatten().map(str::to_string)) {
                server.subjects.entry(sha.clone()).or_insert(subject);
            }
        }
    }
}

/// Switches `current` back on every server as `to` says (see [`RollbackTo`]: the release
/// left is marked bad by a plain rollback), then restores the service: each server's
/// `after_publish` hooks run in the restored release (with `ROLLBACK=1`), then the health check
/// where one applies to the server. Takes the deploy lock while it works.
///
/// Every server is rolled back, in parallel, even when one fails: the first failure (a server
/// that could not switch, a restart hook or a health check that failed) is returned, naming
/// the server, and the others are reported as warnings.
pub fn rollback(config: &Config, to: RollbackTo, reporter: &mut dyn Reporter) -> Result<(), Error> {
    if let RollbackTo::Release { name, .. } = to {
        require_release_name(config, name, "--to")?;
    }
    let lock = new_lock("rollback", "");
    let user = lock.user.clone();
    let mut servers = lock_all(config, &lock, None, &Default::default(), DEFAULT_PARALLEL, Vec::new(), reporter)?;
    if let RollbackTo::Release { name, .. } = to {
        // Every server must have it: none is switched otherwise.
        let lacking: Vec<&LockedServer> = servers.iter().filter(|server| !has_release(&server.state, name)).collect();
        if !lacking.is_empty() {
            let err = no_such_release(name, "--to", lacking.iter().map(|server| listed(server)), false);
            unlock_all(&mut servers);
            return Err(err);
        }
        if servers.iter().all(|server| server.state.current_release() == Some(name)) {
            unlock_all(&mut servers);
            return Err(Error::Usage {
                message: format!(
                    "release {name} is already current on every server: nothing to go back to; `cargo xtask \
                     releases` lists the others"
                ),
            });
        }
    }
    // `lock_all` returns every server, in the order of `config.servers`: the index is the
    // server's place there, which hook and health check scopes go by.
    let results =
        each(servers.iter().enumerate().collect(), DEFAULT_PARALLEL, reporter, |(index, server), reporter| {
            rollback_one(config, index, server, to, &user, reporter)
        });
    let done = all_done(results, reporter);
    unlock_all(&mut servers);
    done
}

/// Rolls back `server`, `config.servers[index]`, and restores its service.
pub(crate) fn rollback_one(
    config: &Config,
    index: usize,
    server: &LockedServer,
    to: RollbackTo,
    user: &str,
    reporter: &mut dyn Reporter,
) -> Result<(), Error> {
    let name = server.connection.name().to_string();
    let hooks = plan::restarts(config, index);
    let marker = new_step_marker();
    let script = plan::rollback_script(&server.config, to, user, &hooks, &marker);
    // Two steps: the switch, then the restart hooks (see `plan::rollback_script`).
    let output = server.connection.output_steps(&script, 2, &marker, |_| {})?;
    let done = plan::parse_rollback(&output.stdout());
    if let Some((from, to)) = &done.switched {
        reporter.event(Event::RolledBack {
            server: name.clone(),
            from: from.clone(),
            to: to.clone(),
            reason: "rollback".to_string(),
        });
    }
    if let Some(release) = &done.marked {
        reporter.event(Event::Marked { server: name.clone(), release: release.clone() });
    }
    if let Some(release) = &done.unmarked {
        reporter.event(Event::Unmarked { server: name.clone(), release: release.clone() });
    }
    let restored = match (output.status, done.switched) {
        (0, Some((_, restored))) => restored,
        _ => return Err(server.connection.steps_failure(script.name, &output)),
    };
    if !done.failed_hooks.is_empty() {
        let failed: Vec<String> = done
            .failed_hooks
            .iter()
            .map(|&(hook, status)| format!("`{}` exited with status {status}", hooks.get(hook).map_or("?", |hook| hook.what.as_str())))
            .collect();
        return Err(Error::Remote {
            server: name,
            step: "after_publish".to_string(),
            status: done.failed_hooks[0].1,
            message: format!(
                "current is release {restored} after the rollback, but restarting it failed ({}); the hooks' output: {}",
                failed.join(", "),
                tail(output.steps.get(1).map(|hooks| hooks.stderr.as_str()).unwrap_or_default())
            ),
        });
    }
    let release = Release {
        name: restored.clone(),
        sha: done.revision,
        branch: String::new(),
        user: user.to_string(),
        release_commit: None,
    };
    match health_of(config, index, server, &release, reporter)? {
        None => Ok(()),
        Some((status, text)) => Err(Error::Remote {
            server: name,
            step: "healthcheck".to_string(),
            status,
            message: format!("current is release {restored} after the rollback, but {text}"),
        }),
    }
}

/// Runs the health check that applies to `config.servers[index]` (if any) in `release` on the
/// locked `server`, and reports how it went: `None` when it passed or none applies, else its
/// exit status and the end of its output.
pub(crate) fn health_of(
    config: &Config,
    index: usize,
    server: &LockedServer,
    release: &Release,
    reporter: &mut dyn Reporter,
) -> Result<Option<(i32, String)>, Error> {
    let Some(healthcheck) = config.healthcheck.as_ref().filter(|check| check.scope.includes(&config.servers, index))
    else {
        return Ok(None);
    };
    let name = server.connection.name().to_string();
    let started = Instant::now();
    match run_health(&server.connection, &server.config, index, release, healthcheck)? {
        Ok((_, elapsed)) => {
            reporter.event(Event::HealthCheck { server: name, passed: true, elapsed, output: String::new() });
            Ok(None)
        }
        Err(output) => {
            let text = tail(&output.stderr);
            let elapsed = started.elapsed();
            reporter.event(Event::HealthCheck { server: name, passed: false, elapsed, output: text.clone() });
            Ok(Some((output.status, text)))
        }
    }
}

/// The end of what a remote command printed, trimmed: at most 2,000 characters, as the health
/// check keeps of its output.
fn tail(text: &str) -> String {
    let text = text.trim();
    let cut = text.char_indices().rev().nth(1999).map_or(0, |(at, _)| at);
    let tail = &text[cut..];
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail.to_string()
    }
}

/// Clears the bad mark of `release` on every server (and drops the marks of releases that no
/// longer exist), holding the deploy lock. A server that fails does not stop the others.
/// Warns when no server had the mark.
pub fn unmark(config: &Config, release: &str, reporter: &mut dyn Reporter) -> Result<(), Error> {
    require_release_name(config, release, "--unmark")?;
    let lock = new_lock("releases --unmark", "");
    let mut servers = lock_all(config, &lock, None, &Default::default(), DEFAULT_PARALLEL, Vec::new(), reporter)?;
    if !servers.iter().any(|server| has_release(&server.state, release)) {
        let err = no_such_release(release, "--unmark", servers.iter().map(listed), true);
        unlock_all(&mut servers);
        return Err(err);
    }
    let results = each(servers.iter().collect(), DEFAULT_PARALLEL, reporter, |server, reporter| {
        let stdout = server.connection.run(&plan::marks_script(&server.config, Some(release)))?;
        let cleared = plan::parse_rollback(&stdout).unmarked.is_some();
        if cleared {
            reporter
                .event(Event::Unmarked { server: server.connection.name().to_string(), release: release.to_string() });
        }
        Ok(cleared)
    });
    let (cleared, failure) = first_failure(results, reporter);
    unlock_all(&mut servers);
    if let Some(err) = failure {
        return Err(err);
    }
    if !cleared.contains(&true) {
        reporter.event(Event::Warning { message: format!("release {release} was not marked bad on any server") });
    }
    Ok(())
}

/// Refuses a `flag` value that is not a release name before any script names it (a command
/// line error, [`Error::Usage`]), listing the releases there are, read as `releases` reads them.
fn require_release_name(config: &Config, name: &str, flag: &str) -> Result<(), Error> {
    if is_release_name(name) {
        return Ok(());
    }
    let there = match releases(config) {
        Ok(servers) => {
            let lists = servers.iter().map(|server| (server.server.clone(), release_names(&server.state)));
            format!("the releases are {}", lists_of_releases(lists))
        }
        Err(err) => format!("the servers' releases could not be read ({err})"),
    };
    Err(Error::Usage {
        message: format!(
            "`{flag} {name}` is not a release name: give a 14-digit name that `cargo xtask releases` lists; {there}"
        ),
    })
}

fn has_release(state: &RemoteState, name: &str) -> bool {
    state.releases.iter().any(|(release, _)| release == name)
}

fn release_names(state: &RemoteState) -> Vec<String> {
    state.releases.iter().map(|(name, _)| name.clone()).collect()
}

/// A locked server's name and its releases, for [`no_such_release`].
fn listed(server: &LockedServer) -> (String, Vec<String>) {
    (server.connection.name().to_string(), release_names(&server.state))
}

/// The error for `flag`'s release `name`, which the servers in `lacking` (each with its
/// releases) do not have: `anywhere` when no server has it.
fn no_such_release(
    name: &str,
    flag: &str,
    lacking: impl Iterator<Item = (String, Vec<String>)>,
    anywhere: bool,
) -> Error {
    let lacking: Vec<(String, Vec<String>)> = lacking.collect();
    let servers: Vec<String> = lacking.iter().map(|(server, _)| format!("`{server}`")).collect();
    let on = if anywhere && servers.len() > 1 { "any server".to_string() } else { servers.join(", ") };
    Error::Usage {
        message: format!(
            "there is no release `{name}` (`{flag}`) on {on}: the releases there are {} (`cargo xtask releases` \
             lists them)",
            lists_of_releases(lacking.into_iter())
        ),
    }
}

/// `` `a`, `b` on `server` ``, for each server, joined with `; `.
fn lists_of_releases(servers: impl Iterator<Item = (String, Vec<String>)>) -> String {
    let lists: Vec<String> = servers
        .map(|(server, releases)| {
            let names: Vec<String> = releases.iter().map(|name| format!("`{name}`")).collect();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            format!("{names} on `{server}`")
        })
        .collect();
    lists.join("; ")
}

/// Removes the deploy lock on every server, the servers in parallel: a lock whose deploy is
/// gone, and with `force` also one whose deploy is alive (its SSH connection, or the server's
/// going back after it); without `force` that one stays and is an [`Error::Locked`]. A server that fails does not stop the others: the first failure is
/// returned and the others reported as warnings.
pub fn unlock(config: &Config, force: bool, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let results = each(config.servers.iter().collect(), DEFAULT_PARALLEL, reporter, |server, reporter| {
        let started = std::time::Instant::now();
        let connection = Connection::open(config, server)?;
        crate::fleet::connected(reporter, config, &connection, started.elapsed());
        let script = plan::unlock_script(&config.on(server), None, force);
        let output = connection.output(&script)?;
        if output.status == plan::EXIT_LOCKED {
            let holder = LockInfo::describe(&plan::parse_state(&output.stdout).holder);
            return Err(Error::Locked { server: connection.name().to_string(), holder });
        }
        if output.status != 0 {
            return Err(connection.failure(script.name, &output));
        }
        let stdout = output.stdout;
        let holder: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("removed ")?.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let server = connection.name().to_string();
        if holder.is_empty() {
            reporter.event(Event::Warning { message: format!("no lock on {server}: nothing was removed") });
        } else {
            reporter.event(Event::Unlocked { server, holder: LockInfo::describe(&holder) });
        }
        Ok(())
    });
    all_done(results, reporter)
}
