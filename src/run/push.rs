//! Getting the commit onto one server: the deploy's git daemon (port choice and retries) and
//! the pushes of the commit and its submodules through tunnels to it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::Config;
use crate::local::push_refname;
use crate::plan;
use crate::ssh::{Connection, RemoteProcess};
use crate::transport;
use crate::Error;

use super::LocalState;

/// The longest a deploy's git daemon may live, whatever happens to the deploy.
pub const DAEMON_MAX_LIFETIME: Duration = Duration::from_secs(900);
/// How long the daemon may take to start listening.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The ref a submodule's deployed commit is pushed to in its server-side repository.
const SUBMODULE_REF: &str = "refs/heads/deployed";
/// How many ports are tried when the chosen one is taken.
const DAEMON_PORT_ATTEMPTS: usize = 8;

/// Pushes the commit, then each submodule's commit into its own repository, each through its
/// own tunnel to the daemon. Returns the bytes sent in all.
pub(super) fn push_all(
    config: &Config,
    connection: &Connection,
    local: &LocalState,
    port: u16,
    pack: transport::PackMethod,
) -> Result<u64, Error> {
    let failed = |message: String| Error::Push { server: connection.name().to_string(), message };
    let repo_path = format!("{}/repo", config.deploy_to);
    let refname = push_refname(&local.revision.branch);
    let push = transport::DaemonPush { path: &repo_path, port, sha: &local.revision.sha, refname: &refname };
    let mut bytes_sent =
        transport::push_through_daemon(&local.repo, connection.tunnel(port)?, &push, pack).map_err(failed)?.bytes_sent;
    for submodule in &local.submodules {
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
pub(super) fn start_daemon(
    config: &Config,
    connection: &Connection,
    submodule_repos: &[&str],
) -> Result<(RemoteProcess, u16), Error> {
    let mut last_output = String::new();
    for attempt in 0..DAEMON_PORT_ATTEMPTS {
        let port = 10_000 + (random() ^ attempt as u64) as u16 % 22_000;
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

/// A random number, different on every call (std's per-process random hasher keys plus time).
pub(crate) fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}
