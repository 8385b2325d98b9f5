//! How a push fails ([`PushError`], one variant per failure), and how the local `git` it runs
//! fails ([`GitError`], which `--dry-run`'s count shares). Callers decide by variant, never by a
//! message's words; the server is added where an error becomes a [`crate::Error`].

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;

/// Why a push failed. Its `Display` is the message the user sees (after the server's name).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Writing to the server failed while the push was being sent.
    #[error("the connection to the server was lost: {0}")]
    Lost(io::Error),
    /// The connection ended before the server's `report-status`.
    #[error("the server closed before confirming the push: {0}")]
    ClosedBeforeReport(io::Error),
    /// The git:// request line could not be written.
    #[error("cannot reach git on the server: {0}")]
    Unreachable(io::Error),
    /// The connection ended before the ref advertisement did.
    #[error("the server closed the connection before advertising its refs ({0}); is `repo/` a bare repository?")]
    NoAdvertisement(io::Error),
    /// The daemon answered `ERR <message>`.
    #[error("the git daemon refused the push: {0}")]
    Refused(String),
    /// A line of the ref advertisement is not `<sha> <refname>`.
    #[error("malformed ref advertisement line `{0}`")]
    MalformedAdvertisement(String),
    /// The server cannot report what it did with the push.
    #[error("the server does not offer `report-status`, so a push could not be confirmed")]
    NoReportStatus,
    /// The server does not offer a capability a push sent before the advertisement counted on.
    #[error("the server's git does not offer `{0}`, which every git since 1.8 offers: update git on the server")]
    Missing(String),
    /// The server sent a fatal error on side band 3.
    #[error("the server failed: {0}")]
    ServerFailed(String),
    /// A side-band packet on a band other than 1, 2 and 3.
    #[error("the server sent a malformed side-band packet")]
    MalformedSideBand,
    /// The server's report does not say `unpack ok`; `fsck` when what it printed says its fsck
    /// refused an object.
    #[error("the server could not store the pushed objects: `{unpack}`{}{said}", fsck_fix(.fsck))]
    NotStored { unpack: String, fsck: bool, said: Said },
    /// The server refused to update `refname`.
    #[error("the server rejected `{refname}`: {reason}{said}")]
    Rejected { refname: String, reason: String, said: Said },
    /// The server's report has no `ok` for `refname`; `report` is all its lines.
    #[error("the server did not confirm `{refname}`: {}{said}", .report.join("; "))]
    NotConfirmed { refname: String, report: Vec<String>, said: Said },
    /// The local `git` that makes the pack failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The temporary file of a shared pack could not be made.
    #[error("cannot make a temporary file for the pack: {0}")]
    SpoolFile(io::Error),
    /// The temporary file of a shared pack could not be read.
    #[error("cannot read the spooled pack: {0}")]
    ReadSpool(io::Error),
    /// Making a pack shared with other servers' pushes failed (each of them gets this error).
    #[error(transparent)]
    SharedPack(Arc<PushError>),
    /// libgit2's push failed (its message alone).
    #[error("{}", .0.message())]
    Libgit2(git2::Error),
    /// A push through an exec channel failed, and the remote git printed `stderr`.
    #[error("{error}; the server said: {stderr}")]
    ServerSaid { error: Box<PushError>, stderr: String },
    /// A push through the daemon was cut short (see [`PushError::cut_short`]): with the usual
    /// reason and how to find out.
    #[error(
        "{0} (if it refused an object of the commit, `git fsck --strict` in your clone names it; \
         with `transport = \"exec\"` the server's report says why)"
    )]
    CutShort(Box<PushError>),
}

impl PushError {
    /// The connection ended while the pack was sent or before the report came: through the
    /// daemon, most often a receive-pack that refused an object (its report is lost with it).
    pub fn cut_short(&self) -> bool {
        match self {
            PushError::Lost(_) | PushError::ClosedBeforeReport(_) => true,
            PushError::SharedPack(error) => error.cut_short(),
            _ => false,
        }
    }
}

fn fsck_fix(fsck: &bool) -> &'static str {
    match fsck {
        true => {
            ": the pushed commit holds an object git refuses (`git fsck --strict` in your clone names it); \
             deploy a commit without it"
        }
        false => "",
    }
}

/// What the server printed on the side band, shown after the error its report gave: nothing, or
/// `; the server said: <line>; <line>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Said(pub Vec<String>);

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => Ok(()),
            false => write!(f, "; the server said: {}", self.0.join("; ")),
        }
    }
}

/// How a local `git` run by a push (or by `--dry-run`'s count) failed; `command` is `rev-list`
/// or `pack-objects`.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// It could not be started.
    #[error("cannot run `git {command}`: {error}")]
    Run { command: &'static str, error: io::Error },
    /// Its input could not be written.
    #[error("cannot feed `git {command}`: {error}")]
    Feed { command: &'static str, error: io::Error },
    /// Reading its output or waiting for it failed.
    #[error("`git {command}` was lost: {error}")]
    Lost { command: &'static str, error: io::Error },
    /// It exited with `status`, saying `stderr` (trimmed).
    #[error("`git {command}` failed ({status}): {stderr}")]
    Failed { command: &'static str, status: ExitStatus, stderr: String },
    /// `git rev-list --objects` printed a path that is not UTF-8.
    #[error("`git rev-list` listed a path that is not UTF-8")]
    NotUtf8,
    /// `git pack-objects` ended before its pack did.
    #[error("`git pack-objects` ended before its pack did ({status}){}", killed_hint(.status))]
    PackEndedEarly { status: ExitStatus },
    /// `git pack-objects` exited with `status`, saying nothing.
    #[error("`git pack-objects` failed ({status}){}", killed_hint(.status))]
    PackFailed { status: ExitStatus },
}

/// What a pack-objects killed by a signal most likely met.
fn killed_hint(status: &ExitStatus) -> &'static str {
    match std::os::unix::process::ExitStatusExt::signal(status) {
        Some(_) => " (killed: out of memory on a large build output?)",
        None => "",
    }
}
