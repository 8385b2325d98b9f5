//! Commands around deploys: `rollback`, `releases` and `unlock`.

use crate::config::Config;
use crate::plan::{self, is_release_name, LockInfo, RemoteState};
use crate::report::{Event, Quiet, Reporter};
use crate::run::parallel::{all_done, each, DEFAULT_PARALLEL};
use crate::run::{lock_all, new_lock, unlock_all};
use crate::ssh::Connection;
use crate::Error;

/// One server's releases, as `cargo xtask releases` lists them.
#[derive(Debug, Clone)]
pub struct ServerReleases {
    pub server: String,
    pub state: RemoteState,
}

/// A release as listed: its name, commit, who deployed it (from `revisions.log`), and flags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseEntry {
    pub name: String,
    pub sha: String,
    pub deployed_by: String,
    pub current: bool,
    /// Marked bad by a rollback: a plain `rollback` skips it.
    pub bad: bool,
    /// A deploy switched `current` to it and has not confirmed it (it is running now, or its
    /// deployer was lost and the server could not go back).
    pub unconfirmed: bool,
}

impl ServerReleases {
    /// The releases, oldest first.
    pub fn entries(&self) -> Vec<ReleaseEntry> {
        let current = self.state.current_release();
        self.state
            .releases
            .iter()
            .map(|(name, sha)| ReleaseEntry {
                name: name.clone(),
                sha: sha.clone(),
                deployed_by: deployer(&self.state.log, name).unwrap_or_else(|| "-".to_string()),
                current: current == Some(name.as_str()),
                bad: self.state.bad.contains(name),
                unconfirmed: self.state.unconfirmed.as_ref() == Some(name),
            })
            .collect()
    }
}

/// The user that `revisions.log` says deployed `release` (Capistrano's wording).
fn deployer(log: &[String], release: &str) -> Option<String> {
    let marker = format!(" deployed as release {release} by ");
    log.iter().rev().find_map(|line| line.split_once(&marker).map(|(_, user)| user.trim().to_string()))
}

/// Reads every server's releases without changing anything, the servers in parallel.
pub fn releases(config: &Config) -> Result<Vec<ServerReleases>, Error> {
    let results = each(config.servers.iter().collect(), DEFAULT_PARALLEL, &mut Quiet, |server, _| {
        let connection = Connection::open(config, server)?;
        let state = plan::parse_state(&connection.run(&plan::inspect_script(&config.on(server)))?);
        Ok(ServerReleases { server: connection.name().to_string(), state })
    });
    results.into_iter().collect()
}

/// Switches `current` back on every server, to the previous release not marked bad, or to
/// `to`; the release left is marked bad. Takes the deploy lock while it works.
pub fn rollback(config: &Config, to: Option<&str>, reporter: &mut dyn Reporter) -> Result<(), Error> {
    if let Some(to) = to {
        if !is_release_name(to) {
            return Err(Error::Local {
                message: format!(
                    "`--to {to}` is not a release name: give the 14-digit name that `cargo xtask releases` lists"
                ),
            });
        }
    }
    let lock = new_lock("rollback", "");
    let user = lock.user.clone();
    let mut servers = lock_all(config, &lock, None, DEFAULT_PARALLEL, reporter)?;
    // Every server is rolled back, in parallel, even when one fails: the first failure is
    // returned and the others reported as warnings.
    let results = each(servers.iter().collect(), DEFAULT_PARALLEL, reporter, |server, reporter| {
        let stdout = server.connection.run(&plan::rollback_script(&server.config, to, &user))?;
        if let Some((from, to)) = stdout.lines().find_map(|line| line.strip_prefix("rolled-back ")?.split_once(' ')) {
            reporter.event(Event::RolledBack {
                server: server.connection.name().to_string(),
                from: from.to_string(),
                to: to.to_string(),
                reason: "rollback".to_string(),
            });
        }
        Ok(())
    });
    let done = all_done(results, reporter);
    unlock_all(&mut servers);
    done
}

/// Removes the deploy lock on every server, whoever holds it (for a deploy that died), the
/// servers in parallel. A server that fails does not stop the others: the first failure is
/// returned and the others reported as warnings.
pub fn unlock(config: &Config, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let results = each(config.servers.iter().collect(), DEFAULT_PARALLEL, reporter, |server, reporter| {
        let started = std::time::Instant::now();
        let connection = Connection::open(config, server)?;
        crate::run::connected(reporter, config, &connection, started.elapsed());
        let stdout = connection.run(&plan::unlock_script(&config.on(server), None))?;
        let holder: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("removed ")?.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        if !holder.is_empty() {
            reporter
                .event(Event::Unlocked { server: connection.name().to_string(), holder: LockInfo::describe(&holder) });
        }
        Ok(())
    });
    all_done(results, reporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployer_comes_from_the_newest_matching_log_line() {
        let log = vec![
            "Branch main (at a) deployed as release 20261125041638 by alice".to_string(),
            "alice rolled back to release 20261125041638".to_string(),
            "Branch main (at b) deployed as release 20261125041639 by bob".to_string(),
        ];
        assert_eq!(deployer(&log, "20261125041639").as_deref(), Some("bob"));
        assert_eq!(deployer(&log, "20261125041638").as_deref(), Some("alice"));
        assert_eq!(deployer(&log, "20261125041640"), None);
    }
}
