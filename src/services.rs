//! The commands around the running services (`services` in the config): `service status`,
//! `service logs`, `service restart`, and `secrets set|unset|list`. Each reaches the servers
//! through `fleet`; a restart that fails goes back as a deploy does.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fleet::parallel::{all_done, each, first_failure, DEFAULT_PARALLEL};
use crate::fleet::{lock_all, new_lock, unlock_all, LockedServer};
use crate::manage::{health_of, rollback_one};
use crate::plan::service::{self, LogsRequest, SecretsAction, SECRETS_DONE};
use crate::plan::{Release, RollbackTo};
pub use crate::report::ServiceStatus;
use crate::report::{Event, Quiet, Reporter};
use crate::ssh::Connection;
use crate::Error;

/// Reads the state of every service on every server, read-only, the servers in parallel.
pub fn status(config: &Config) -> Result<Vec<ServiceStatus>, Error> {
    require_services(config)?;
    let servers = config.servers.iter().enumerate().collect();
    let results = each(servers, DEFAULT_PARALLEL, &mut Quiet, |(index, server), _| {
        if service::services_on(config, index).is_empty() {
            return Ok(Vec::new());
        }
        let connection = Connection::open(config, server)?.read_only();
        let stdout = connection.run(&service::status_script(&config.on(server), index))?;
        Ok(parse_status(connection.name(), &stdout))
    });
    let servers: Vec<Vec<ServiceStatus>> = results.into_iter().collect::<Result<_, _>>()?;
    Ok(servers.into_iter().flatten().collect())
}

/// Reads what the status script printed on `server`.
pub(crate) fn parse_status(server: &str, stdout: &str) -> Vec<ServiceStatus> {
    let current = stdout.lines().find_map(|line| line.strip_prefix("current ")).map(str::to_string);
    let mut rows: Vec<ServiceStatus> = Vec::new();
    for line in stdout.lines() {
        let Some((name, pair)) = line.strip_prefix("service ").and_then(|rest| rest.split_once(' ')) else { continue };
        let Some((key, value)) = pair.split_once('=') else { continue };
        if rows.last().is_none_or(|row| row.service != name) {
            rows.push(ServiceStatus {
                server: server.to_string(),
                service: name.to_string(),
                current: current.clone(),
                ..ServiceStatus::default()
            });
        }
        let row = rows.last_mut().expect("pushed above");
        let value = value.to_string();
        match key {
            "ActiveState" => row.state = value,
            "SubState" => row.sub_state = value,
            "MainPID" => row.pid = value.parse().ok().filter(|pid| *pid != 0),
            "ActiveEnterTimestamp" => row.since = value,
            "MemoryCurrent" => row.memory = value.parse().ok(),
            "NRestarts" => row.restarts = value.parse().unwrap_or_default(),
            "Release" => row.release = Some(value),
            "Socket" => row.socket = Some(value),
            _ => {}
        }
    }
    rows
}

/// Prints the journal of the services on every server as [`Event::Log`] lines, each naming
/// its server; with `request.follow`, goes on until interrupted.
pub fn logs(config: &Config, request: &LogsRequest, reporter: &mut dyn Reporter) -> Result<(), Error> {
    require_services(config)?;
    if let Some(unknown) = request.services.iter().find(|name| !config.services.iter().any(|s| s.name == **name)) {
        let known: Vec<String> = config.services.iter().map(|service| format!("`{}`", service.name)).collect();
        return Err(Error::Usage { message: format!("no service is `{unknown}`: the services are {}", known.join(", ")) });
    }
    let servers = config.servers.iter().enumerate().collect();
    let results = each(servers, config.servers.len().max(1), reporter, |(index, server), reporter| {
        let runs = service::services_on(config, index);
        if !runs.iter().any(|each| request.services.is_empty() || request.services.contains(&each.name)) {
            return Ok(());
        }
        let connection = Connection::open(config, server)?.read_only();
        let script = service::logs_script(&config.on(server), index, request);
        // Followed logs run until interrupted; a signal cuts the connection, which ends the read.
        let deadline = Instant::now() + if request.follow { Duration::from_secs(365 * 24 * 3600) } else { config.timeouts.step };
        let mut stream = connection.exec_stream(&script, deadline)?;
        let mut reader = BufReader::new(&mut stream);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(1..)) {
            let text = line.trim_end_matches(['\n', '\r']).to_string();
            reporter.event(Event::Log { server: connection.name().to_string(), line: text });
            line.clear();
        }
        drop(reader);
        let stderr = stream.stderr_text();
        match stderr.trim() {
            "" => Ok(()),
            said => Err(Error::Remote {
                server: connection.name().to_string(),
                step: "service logs".to_string(),
                status: 1,
                message: said.to_string(),
            }),
        }
    });
    crate::interrupt::check()?;
    all_done(results, reporter)
}

/// Restarts every service from the current release on every server (holding the deploy lock),
/// watched as a deploy's restart is, then the health check where one applies. When any server
/// fails, every server goes back to its previous release (marking the one left bad) and
/// restarts from it: [`Error::RolledBack`].
pub fn restart(config: &Config, reporter: &mut dyn Reporter) -> Result<(), Error> {
    require_services(config)?;
    let lock = new_lock("service restart", "");
    let user = lock.user.clone();
    let mut servers = lock_all(config, &lock, None, &Default::default(), DEFAULT_PARALLEL, Vec::new(), reporter)?;
    let results =
        each(servers.iter().enumerate().collect(), DEFAULT_PARALLEL, reporter, |(index, server), reporter| {
            restart_one(config, index, server, reporter)
        });
    let (_, failure) = first_failure(results, reporter);
    let Some(err) = failure else {
        unlock_all(&mut servers);
        return Ok(());
    };
    let release = servers.iter().find_map(|server| server.state.current_release().map(str::to_string)).unwrap_or_default();
    let back = each(servers.iter().enumerate().collect(), DEFAULT_PARALLEL, reporter, |(index, server), reporter| {
        rollback_one(config, index, server, RollbackTo::Previous, &user, reporter)
            .map(|()| server.connection.name().to_string())
    });
    unlock_all(&mut servers);
    let mut went_back = Vec::new();
    let mut restart_failed = Vec::new();
    for (result, server) in back.into_iter().zip(&config.servers) {
        match result {
            Ok(name) => went_back.push(name),
            Err(other) => {
                reporter.event(Event::Warning { message: format!("going back failed too: {other}") });
                restart_failed.push(server.display_name());
            }
        }
    }
    Err(Error::RolledBack { release, servers: went_back, going_back: Vec::new(), restart_failed, error: Box::new(err) })
}

/// Restarts the services of one locked server and runs its health check.
fn restart_one(config: &Config, index: usize, server: &LockedServer, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let Some(script) = service::restart_script(&server.config, index) else { return Ok(()) };
    let name = server.connection.name().to_string();
    let current = server.state.current_release().unwrap_or_default().to_string();
    reporter.event(Event::Running {
        phase: crate::plan::Phase::Restart,
        server: Some(name.clone()),
        what: format!("release {current}"),
    });
    let output = server.connection.output(&script)?;
    if output.status != 0 {
        return Err(Error::Remote {
            server: name,
            step: "restart".to_string(),
            status: output.status,
            message: output.stderr.trim().to_string(),
        });
    }
    let release = Release {
        name: current,
        sha: server.state.current_sha().unwrap_or_default().to_string(),
        branch: String::new(),
        user: String::new(),
        release_commit: None,
    };
    match health_of(config, index, server, &release, reporter)? {
        None => Ok(()),
        Some((status, message)) => Err(Error::Remote { server: name, step: "healthcheck".to_string(), status, message }),
    }
}

/// Sets the secret `name` to `value` on every server (in [`service::SECRETS_FILE`], mode 0600):
/// the value travels on the script's stdin, never on a command line, and appears in no event
/// or error. The services see it from their next restart.
pub fn set_secret(config: &Config, name: &str, value: &str, reporter: &mut dyn Reporter) -> Result<(), Error> {
    let line = service::secret_line(name, value).map_err(|message| Error::Usage { message })?;
    secrets_everywhere(config, SecretsAction::Set(name), Some(&line), reporter).map(drop)
}

/// Removes the secret `name` on every server.
pub fn unset_secret(config: &Config, name: &str, reporter: &mut dyn Reporter) -> Result<(), Error> {
    service::secret_line(name, "").map_err(|message| Error::Usage { message })?;
    for (server, said) in secrets_everywhere(config, SecretsAction::Unset(name), None, reporter)? {
        if said.iter().any(|line| line == "absent") {
            reporter.event(Event::Warning { message: format!("secret `{name}` was not set on {server}") });
        }
    }
    Ok(())
}

/// The names of the secrets each server holds (never their values): `(server, names)`.
pub fn secret_names(config: &Config) -> Result<Vec<(String, Vec<String>)>, Error> {
    secrets_everywhere(config, SecretsAction::List, None, &mut Quiet)
}

fn secrets_everywhere(
    config: &Config,
    action: SecretsAction,
    input: Option<&str>,
    reporter: &mut dyn Reporter,
) -> Result<Vec<(String, Vec<String>)>, Error> {
    let results = each(config.servers.iter().collect(), DEFAULT_PARALLEL, reporter, |server, _| {
        let connection = Connection::open(config, server)?;
        let mut process = connection.spawn(&service::secrets_script(&config.on(server), action))?;
        if let Some(line) = input {
            process.send(format!("{line}\n").as_bytes())?;
        }
        process.close_stdin();
        match process.wait_for_line(SECRETS_DONE, config.timeouts.step)? {
            Ok(names) => Ok((connection.name().to_string(), names.lines().map(str::to_string).collect())),
            Err(output) => Err(Error::Remote {
                server: connection.name().to_string(),
                step: "secrets".to_string(),
                status: output.status,
                message: output.stderr.trim().to_string(),
            }),
        }
    });
    let (done, failure) = first_failure(results, reporter);
    match failure {
        Some(err) => Err(err),
        None => Ok(done),
    }
}

/// Refuses a service command for a config without `services`.
fn require_services(config: &Config) -> Result<(), Error> {
    if config.services.is_empty() {
        return Err(Error::Config {
            message: format!(
                "no `services` in the deploy table of `{}`: add a `[package.metadata.deploy.services.<name>]` \
                 table with its `command` (see docs/services.md)",
                config.manifest_path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_lines_become_one_row_per_service() {
        let stdout = "current 20261207100000\nservice web ActiveState=active\nservice web SubState=running\n\
                      service web MainPID=412\nservice web MemoryCurrent=1048576\nservice web NRestarts=0\n\
                      service web Release=20261207100000\nservice web Socket=active\n\
                      service worker ActiveState=failed\nservice worker MainPID=0\n";
        let rows = parse_status("deploy@h:22", stdout);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].state.as_str(), rows[0].pid, rows[0].memory), ("active", Some(412), Some(1048576)));
        assert_eq!(rows[0].release.as_deref(), Some("20261207100000"));
        assert_eq!(rows[0].current.as_deref(), Some("20261207100000"));
        assert_eq!((rows[1].state.as_str(), rows[1].pid), ("failed", None));
    }
}
