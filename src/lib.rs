//! xtask-deploy: Capistrano-style deploys over SSH for Rust repositories.
//!
//! The flow follows the modules: [`config`] reads `[package.metadata.deploy]`, [`plan`] decides
//! what runs where (pure, no I/O), [`ssh`] and [`transport`] do the talking, [`run`] walks the
//! plan over the servers and reports [`report::Event`]s. [`loopback`] starts a throwaway `sshd`
//! on 127.0.0.1 for the demo, the benchmark and the tests. [`submodules`] finds what else a
//! commit needs pushed.

pub mod bench;
pub mod config;
pub mod demo;
pub mod local;
pub mod loopback;
pub mod manage;
pub mod plan;
pub mod report;
pub mod run;
pub mod shell;
pub mod ssh;
pub mod submodules;
pub mod transport;

pub use config::Config;
pub use report::{Event, Reporter};
pub use run::{deploy, plan_deploy, setup, DeployOptions, DeployReport};

/// Everything that can make a deploy fail, grouped by what a caller would do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is missing or wrong; the message names the file and the key.
    #[error("{message}")]
    Config { message: String },
    /// Something on the deploying machine: the repository, the worktree, a build command.
    #[error("{message}")]
    Local { message: String },
    /// The server could not be reached or the SSH session could not be set up.
    #[error("cannot connect to `{server}`: {message}")]
    Connect { server: String, message: String },
    /// The server's host key is unknown or differs from the known one.
    #[error("host key check failed for `{server}`: {message}")]
    HostKey { server: String, message: String },
    /// No offered credential was accepted.
    #[error("authentication failed for `{server}`: {message}")]
    Auth { server: String, message: String },
    /// Another deploy holds the lock on a server.
    #[error(
        "`{server}` is locked by {holder}: wait for that deploy, or pass `--lock-wait <secs>`; \
         if it died, remove the lock with `cargo xtask unlock`"
    )]
    Locked { server: String, holder: String },
    /// A remote script exited non-zero.
    #[error("{step} failed on `{server}` (exit status {status}): {message}")]
    Remote { server: String, step: String, status: i32, message: String },
    /// The git objects could not be pushed to the server's repository.
    #[error("push to `{server}` failed: {message}")]
    Push { server: String, message: String },
}

impl Error {
    /// An [`Error::Local`] with `message`.
    pub(crate) fn local(message: impl Into<String>) -> Error {
        Error::Local { message: message.into() }
    }
}
