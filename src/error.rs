//! What can go wrong, for callers to branch on: [`Error`], one variant per kind of failure, and
//! [`exit`], the exit code of each (the table in docs/ci.md).

use crate::interrupt;

/// The exit codes of `cargo xtask`, one per kind of outcome, so that a pipeline can tell them
/// apart (docs/ci.md has the table).
pub mod exit {
    /// The command did what it was asked.
    pub const SUCCESS: u8 = 0;
    /// Something on the deploying machine failed: the repository, the worktree, a build command
    /// or local hook, an artifact.
    pub const LOCAL: u8 = 1;
    /// The command line is wrong: an unknown flag or command (clap's own code), or a release
    /// (`rollback --to`, `releases --unmark`) that is not on the servers.
    pub const USAGE: u8 = 2;
    /// Nothing to deploy: the commit is already current on every server (`--force` deploys it).
    pub const UP_TO_DATE: u8 = 3;
    /// The configuration is missing or wrong.
    pub const CONFIG: u8 = 4;
    /// A server could not be reached, its host key is unknown, changed or revoked, or no key was accepted.
    pub const CONNECT: u8 = 5;
    /// Another deploy holds the lock on a server.
    pub const LOCKED: u8 = 6;
    /// A step on a server failed (a script, a hook, the push). No server switched `current`,
    /// unless the step came after the switch on every server.
    pub const REMOTE: u8 = 7;
    /// Some servers switched `current` to the new release and others did not.
    pub const PARTIAL: u8 = 8;
    /// `deploy-check` found something that would make a deploy fail.
    pub const CHECK_FAILED: u8 = 9;
    /// The deploy switched `current`, then failed (a health check, an `after_publish` hook, a
    /// server that could not switch), and every server that switched went back to its release.
    pub const ROLLED_BACK: u8 = 10;
    /// SIGINT (Ctrl-C) stopped the command (128 + 2, as shells report it).
    pub const INTERRUPTED: u8 = 130;
    /// SIGTERM stopped the command (128 + 15).
    pub const TERMINATED: u8 = 143;
}

/// Everything that can make a deploy fail, grouped by what a caller would do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is missing or wrong; the message names the file and the key.
    #[error("{message}")]
    Config {
        /// What is wrong, naming the file and the key, with the fix when there is one.
        message: String,
    },
    /// Something on the deploying machine: the repository, the worktree, a build command.
    #[error("{message}")]
    Local {
        /// What failed on this machine, with the fix when there is one.
        message: String,
    },
    /// A value on the command line names nothing there is (a release no server has); the
    /// message lists what there is.
    #[error("{message}")]
    Usage {
        /// What is wrong with the value, and the releases there are.
        message: String,
    },
    /// The server could not be reached or the SSH session could not be set up.
    #[error("cannot connect to `{server}`: {message}")]
    Connect {
        /// The server (`user@host:port`).
        server: String,
        /// Why: the address, the network, the handshake, a timeout, or a lost channel.
        message: String,
    },
    /// The server's host key is unknown or differs from the known one. `unknown`: no key is
    /// recorded for the host (`accept-new` would record it); false when one differs, or when
    /// known_hosts cannot be parsed.
    #[error("host key check failed for `{server}`: {message}")]
    HostKey {
        /// The server (`user@host:port`).
        server: String,
        /// Why the key was refused (with its fingerprint when there is one), and what to do.
        message: String,
        /// Whether no key is recorded for the host, as opposed to one that differs or is revoked.
        unknown: bool,
    },
    /// No offered credential was accepted.
    #[error("authentication failed for `{server}`: {message}")]
    Auth {
        /// The server (`user@host:port`).
        server: String,
        /// Which key was refused for which user, or why none could be tried, and what to do.
        message: String,
    },
    /// Another deploy holds the lock on a server.
    #[error(
        "`{server}` is locked by {holder}, whose deploy is still alive (its SSH connection is open, or the \
         server is going back after it): wait for it, or pass `--lock-wait <secs>`. A lock whose deploy \
         died is taken over by the next deploy by itself; `cargo xtask unlock --force` removes a live one, \
         only if you know that deploy is stuck"
    )]
    Locked {
        /// The server (`user@host:port`).
        server: String,
        /// Who holds the lock: user, machine, since when, the commit it deploys, its `--message`.
        holder: String,
    },
    /// A remote script exited non-zero.
    #[error("{step} failed on `{server}` (exit status {status}): {message}")]
    Remote {
        /// The server (`user@host:port`).
        server: String,
        /// The script or step that failed (`preflight`, `healthcheck`, `after_publish`...).
        step: String,
        /// Its exit status; -1 when it has none (the SSH channel failed, the daemon did not start).
        status: i32,
        /// Why: the end of what it printed on stderr (else stdout), or why it was stopped.
        message: String,
    },
    /// The git objects could not be pushed to the server's repository.
    #[error("push to `{server}` failed: {message}")]
    Push {
        /// The server (`user@host:port`).
        server: String,
        /// Why the push failed, and what to do when it is known.
        message: String,
    },
    /// The deploy failed after servers switched `current`, and some of them (`published`, each
    /// with why) could not go back to the release they had.
    #[error(
        "{error}. Release {release} is still live on {published}: it could not go back there (it is marked \
         bad){others}. Where it has an earlier release, go back with `cargo xtask rollback --hosts <host>` (a \
         server whose connection was lost goes back by itself: at once when it ends, after `timeouts.silence` \
         when its link went silent); or deploy a fixed commit",
        published = .published.join(", "),
        others = if .unchanged.is_empty() { String::new() } else {
            format!("; {} are on the release they had", .unchanged.join(", "))
        }
    )]
    Partial {
        /// The new release's name.
        release: String,
        /// Each server where the new release is still current, as `user@host:port (why)`.
        published: Vec<String>,
        /// The servers (`user@host:port`) that are on the release they had.
        unchanged: Vec<String>,
        /// The failure that made the deploy go back.
        error: Box<Error>,
    },
    /// The deploy failed after the switch, and every server that had switched went back to the
    /// release it had (the new one is marked bad there), or goes back by itself, its link down.
    #[error(
        "{error}{stop}{back}{going}{restart}",
        // A failure whose text ends a sentence (a journal line, say) gets no second full stop.
        stop = if .error.to_string().ends_with('.') { "" } else { "." },
        back = if .servers.is_empty() {
            String::new()
        } else {
            format!(
                " Release {release} was rolled back on {servers}: each is on the release it had, and {release} is \
                 marked bad there",
                release = .release,
                servers = .servers.join(", ")
            )
        },
        going = if .going_back.is_empty() {
            String::new()
        } else {
            format!(
                "{start} goes back by itself on {servers}: its link is down, and its lock keeper goes back to the \
                 release it had (restart hooks with ROLLBACK=1, {release} marked bad) once it has heard nothing from \
                 this deploy for `timeouts.silence`",
                start = if .servers.is_empty() { format!(" Release {}", .release) } else { "; it".to_string() },
                release = .release,
                servers = .going_back.join(", ")
            )
        },
        restart = if .restart_failed.is_empty() {
            String::new()
        } else {
            format!("; the restart hooks failed on {}: check the service there", .restart_failed.join(", "))
        }
    )]
    RolledBack {
        /// The new release's name, now marked bad where it was current.
        release: String,
        /// The servers (`user@host:port`) that went back.
        servers: Vec<String>,
        /// The servers whose link went down after they switched, each as `user@host:port by
        /// <UTC time>`: each goes back by itself by then.
        going_back: Vec<String>,
        /// The servers (`user@host:port`) among them whose restart hooks failed after going back.
        restart_failed: Vec<String>,
        /// The failure that made the deploy go back.
        error: Box<Error>,
    },
    /// The deploy was confirmed on `confirmed`, but whether `unknown` took its confirmation is
    /// not known (the connection was lost at that moment).
    #[error(
        "{error}. Release {release} is {confirmed}not known to be confirmed on {unknown}: a server \
         that did not take the confirmation goes back by itself; see `cargo xtask releases`, then deploy \
         again or roll back",
        confirmed = if .confirmed.is_empty() {
            String::new()
        } else {
            format!("confirmed on {}, but ", .confirmed.join(", "))
        },
        unknown = .unknown.join(", ")
    )]
    Unconfirmed {
        /// The new release's name.
        release: String,
        /// The servers (`user@host:port`) that took the confirmation.
        confirmed: Vec<String>,
        /// The servers (`user@host:port`) that may not have taken it (one that did not goes back).
        unknown: Vec<String>,
        /// The first failure to confirm.
        error: Box<Error>,
    },
    /// A signal stopped the command (SIGINT or SIGTERM); `state` says what that left on the
    /// servers, as far as the command knows.
    #[error("interrupted ({signal}){state}")]
    Interrupted {
        /// The signal: SIGINT or SIGTERM (the exit code is 130 or 143).
        signal: interrupt::Signal,
        /// What the command left on the servers, written to follow the signal in the message
        /// (empty when there is nothing to say).
        state: String,
    },
}

impl Error {
    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } => exit::CONFIG,
            Error::Local { .. } => exit::LOCAL,
            Error::Usage { .. } => exit::USAGE,
            Error::Connect { .. } | Error::HostKey { .. } | Error::Auth { .. } => exit::CONNECT,
            Error::Locked { .. } => exit::LOCKED,
            Error::Remote { .. } | Error::Push { .. } => exit::REMOTE,
            Error::Partial { .. } | Error::Unconfirmed { .. } => exit::PARTIAL,
            Error::RolledBack { .. } => exit::ROLLED_BACK,
            // 128 plus the signal's number, as shells report a process killed by it.
            Error::Interrupted { signal: interrupt::Signal::Interrupt, .. } => exit::INTERRUPTED,
            Error::Interrupted { signal: interrupt::Signal::Terminate, .. } => exit::TERMINATED,
        }
    }

    /// The server this error happened on, if one is to blame.
    pub fn server(&self) -> Option<&str> {
        match self {
            Error::Config { .. } | Error::Local { .. } | Error::Usage { .. } | Error::Interrupted { .. } => None,
            Error::Connect { server, .. }
            | Error::HostKey { server, .. }
            | Error::Auth { server, .. }
            | Error::Locked { server, .. }
            | Error::Remote { server, .. }
            | Error::Push { server, .. } => Some(server),
            Error::Partial { error, .. } | Error::RolledBack { error, .. } | Error::Unconfirmed { error, .. } => {
                error.server()
            }
        }
    }

    /// An [`Error::Local`] with `message`.
    pub(crate) fn local(message: impl Into<String>) -> Error {
        Error::Local { message: message.into() }
    }
}
