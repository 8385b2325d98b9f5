//! Walking the plan over the servers: connect and check every server first, then per server
//! start the daemon, push through the tunnel, stop the daemon, make and publish the release.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::local;
use crate::plan::{self, Release, RemoteState};
use crate::report::{Event, Reporter};
use crate::ssh::{Connection, RemoteProcess};
use crate::submodules::{self, Submodule};
use crate::transport;
use crate::Error;

/// The longest a deploy's git daemon may live, whatever happens to the deploy.
pub const DAEMON_MAX_LIFETIME: Duration = Duration::from_secs(900);
/// How long the daemon may take to start listening.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The ref a submodule's deployed commit is pushed to in its server-side repository.
const SUBMODULE_REF: &str = "refs/heads/deployed";
/// How many ports are tried when the chosen one is taken.
const DAEMON_PORT_ATTEMPTS: usize = 8;

/// Choices for one deploy that are not part of the configuration.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Deploy this revision instead of the configured one.
    pub revision: Option<String>,
    /// Deploy even when the worktree has uncommitted changes.
    pub allow_dirty: bool,
    /// How the pack is made (default: a thin pack from the local `git`, else libgit2).
    pub pack: transport::PackMethod,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct DeployReport {
    /// The release name, the same on every server.
    pub release: String,
    /// The commit released.
    pub sha: String,
    /// One entry per server, in configuration order.
    pub servers: Vec<ServerReport>,
    /// Wall time of the whole deploy.
    pub elapsed: Duration,
}

/// What a deploy did on one server.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub server: String,
    pub bytes_sent: u64,
    pub connect: Duration,
    pub daemon: Duration,
    pub push: Duration,
    pub release: Duration,
    pub removed: Vec<String>,
}

/// Prepares every server: `releases/`, `shared/` and the bare `repo/` under `deploy_to`.
/// Running it again changes nothing.
pub fn setup(config: &Config, reporter: &mut dyn Reporter) -> Result<(), Error> {
    for server in &config.servers {
        let started = Instant::now();
        let connection = Connection::open(server, &config.ssh)?;
        reporter.event(Event::Connected { server: connection.name().to_string(), elapsed: started.elapsed() });
        let stdout = connection.run(&plan::setup_script(config))?;
        for what in stdout.lines().filter_map(|line| line.strip_prefix("created ")) {
            reporter.event(Event::Created { server: connection.name().to_string(), what: what.to_string() });
        }
    }
    Ok(())
}

/// Deploys the configured revision to every server.
pub fn deploy(config: &Config, options: &DeployOptions, reporter: &mut dyn Reporter) -> Result<DeployReport, Error> {
    let started = Instant::now();
    let repo = local::open_repo(config.manifest_dir())?;
    if !options.allow_dirty {
        local::check_clean(&repo)?;
    }
    let revision_name = options.revision.as_deref().unwrap_or(&config.revision);
    let revision = local::resolve(&repo, revision_name)?;
    reporter.event(Event::Resolved { revision: revision_name.to_string(), sha: revision.sha.clone() });
    // Every submodule commit must be at hand before anything is sent.
    let submodules = if config.submodules { submodules::collect(&repo, &revision.sha)? } else { Vec::new() };
    local::run_build(&config.build, config.manifest_dir(), reporter)?;

    // Every server is reached and checked before anything changes on any of them.
    let mut targets: Vec<(Connection, RemoteState, Duration)> = Vec::new();
    for server in &config.servers {
        let connect_started = Instant::now();
        let connection = Connection::open(server, &config.ssh)?;
        let connect = connect_started.elapsed();
        reporter.event(Event::Connected { server: connection.name().to_string(), elapsed: connect });
        let state = plan::parse_preflight(&connection.run(&plan::preflight_script(config))?);
        reporter.event(Event::Checked {
            server: connection.name().to_string(),
            releases: state.releases.len(),
            reaped: state.reaped.clone(),
        });
        targets.push((connection, state, connect));
    }
    let existing = targets.iter().flat_map(|(_, state, _)| state.releases.iter().map(String::as_str));
    let release = Release {
        name: plan::release_name(time::OffsetDateTime::now_utc(), existing),
        sha: revision.sha.clone(),
        branch: revision.branch.clone(),
        user: local::user_name().unwrap_or_else(|| "unknown".to_string()),
    };
    let refname = local::push_refname(&revision.branch);

    let mut servers = Vec::new();
    for (connection, _state, connect) in &targets {
        let target = Target { repo: &repo, release: &release, refname: &refname, submodules: &submodules };
        let mut server = deploy_to_server(config, connection, &target, options.pack, reporter)?;
        server.connect = *connect;
        servers.push(server);
    }
    Ok(DeployReport { release: release.name, sha: release.sha, servers, elapsed: started.elapsed() })
}

/// What every server receives: the same commit, release, ref and submodules.
struct Target<'a> {
    repo: &'a git2::Repository,
    release: &'a Release,
    refname: &'a str,
    submodules: &'a [Submodule],
}

fn deploy_to_server(
    config: &Config,
    connection: &Connection,
    target: &Target<'_>,
    pack: transport::PackMethod,
    reporter: &mut dyn Reporter,
) -> Result<ServerReport, Error> {
    let name = connection.name().to_string();
    let release = target.release;
    let daemon_started = Instant::now();
    let submodule_repos: Vec<&str> = target.submodules.iter().map(|sub| sub.release.repo.as_str()).collect();
    let (daemon, port) = start_daemon(config, connection, &submodule_repos)?;
    let daemon_elapsed = daemon_started.elapsed();
    reporter.event(Event::DaemonReady { server: name.clone(), port, elapsed: daemon_elapsed });

    let push_started = Instant::now();
    reporter.event(Event::Pushing { server: name.clone(), sha: release.sha.clone() });
    let pushed = push_all(config, connection, target, port, pack);
    // The daemon lives only while the push lasts, whatever its outcome.
    daemon.finish(Duration::from_secs(10));
    let bytes_sent = pushed?;
    let push_elapsed = push_started.elapsed();
    reporter.event(Event::Pushed { server: name.clone(), bytes_sent, elapsed: push_elapsed });

    let release_started = Instant::now();
    let submodule_releases: Vec<_> = target.submodules.iter().map(|sub| sub.release.clone()).collect();
    let stdout = connection.run(&plan::release_script(config, release, &submodule_releases))?;
    let release_elapsed = release_started.elapsed();
    reporter.event(Event::Published { server: name.clone(), release: release.name.clone(), elapsed: release_elapsed });
    let removed: Vec<String> =
        stdout.lines().filter_map(|line| line.strip_prefix("removed ")).map(str::to_string).collect();
    for old in &removed {
        reporter.event(Event::Removed { server: name.clone(), release: old.clone() });
    }
    Ok(ServerReport {
        server: name,
        bytes_sent,
        connect: Duration::ZERO,
        daemon: daemon_elapsed,
        push: push_elapsed,
        release: release_elapsed,
        removed,
    })
}

/// Pushes the commit, then each submodule's commit into its own repository, each through its
/// own tunnel to the daemon. Returns the bytes sent in all.
fn push_all(
    config: &Config,
    connection: &Connection,
    target: &Target<'_>,
    port: u16,
    pack: transport::PackMethod,
) -> Result<u64, Error> {
    let failed = |message: String| Error::Push { server: connection.name().to_string(), message };
    let repo_path = format!("{}/repo", config.deploy_to);
    let push = transport::DaemonPush { path: &repo_path, port, sha: &target.release.sha, refname: target.refname };
    let mut bytes_sent =
        transport::push_through_daemon(target.repo, connection.tunnel(port)?, &push, pack).map_err(failed)?.bytes_sent;
    for submodule in target.submodules {
        let repo = git2::Repository::open(&submodule.git_dir)
            .map_err(|err| failed(format!("cannot open submodule `{}`: {}", submodule.release.path, err.message())))?;
        let path = format!("{}/{}", config.deploy_to, submodule.release.repo);
        let push = transport::DaemonPush { path: &path, port, sha: &submodule.release.commit, refname: SUBMODULE_REF };
        let stats = transport::push_through_daemon(&repo, connection.tunnel(port)?, &push, pack)
            .map_err(|message| failed(format!("submodule `{}`: {message}", submodule.release.path)))?;
        bytes_sent += stats.bytes_sent;
    }
    Ok(bytes_sent)
}

/// Starts the deploy's git daemon on a free loopback port of the server, trying other ports
/// when the chosen one is taken, and waits until it listens.
fn start_daemon(
    config: &Config,
    connection: &Connection,
    submodule_repos: &[&str],
) -> Result<(RemoteProcess, u16), Error> {
    let mut last_output = String::new();
    for attempt in 0..DAEMON_PORT_ATTEMPTS {
        let port = random_port(attempt);
        let script = plan::daemon_script(config, port, DAEMON_MAX_LIFETIME.as_secs(), submodule_repos);
        let mut process = connection.spawn(&script)?;
        match process.wait_for_stderr("Ready to rumble", DAEMON_READY_TIMEOUT) {
            Ok(_) => return Ok((process, port)),
            Err(output) if output.contains("unable to allocate") || output.contains("in use") => {
                last_output = output;
                continue;
            }
            Err(output) => {
                return Err(Error::Remote {
                    server: connection.name().to_string(),
                    step: "git daemon".to_string(),
                    status: -1,
                    message: format!("the daemon did not start: {}", output.trim()),
                })
            }
        }
    }
    Err(Error::Remote {
        server: connection.name().to_string(),
        step: "git daemon".to_string(),
        status: -1,
        message: format!(
            "no free port after {DAEMON_PORT_ATTEMPTS} tries on the server's 127.0.0.1: {}",
            last_output.trim()
        ),
    })
}

/// A port below Linux's ephemeral range, different on every call.
fn random_port(attempt: usize) -> u16 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_usize(attempt);
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    10_000 + (hasher.finish() % 22_000) as u16
}
