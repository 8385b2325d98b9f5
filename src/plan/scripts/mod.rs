//! The remote scripts of every phase. Pure: a [`Config`](crate::config::Config) and plain values
//! in, a quoted [`RemoteScript`](crate::shell::RemoteScript) out. Each script starts with
//! `d=<deploy_to>` and uses `"$d"` after that.
//!
//! By concern:
//! - `layout.rs`: `deploy-setup`, and the snippets that check and report what `deploy_to` holds.
//! - `lock.rs`: the lock keeper (checks, the lock, and the process that holds it for the whole
//!   deploy), `unlock`, and the lock's snippets.
//! - `daemon.rs`: the deploy's `git daemon`, its access hook, and `git receive-pack` for
//!   `transport = "exec"`.
//! - `release.rs`: prepare, hook, publish, discard, inspect (`releases`) and deploy-check.
//! - `batch.rs`: several scripts joined into one remote command, each step marked.
//!
//! # The shell's pieces and their variables
//!
//! The shell kept as real files (`sh/*.sh`, included with `include_str!` and checked by
//! shellcheck in CI) gets its values from a header of quoted assignments (`shell::header`), and
//! each file's own header says what it expects and what it sets. Every script starts with
//! `d=<deploy_to>`, quoted. The prepare script (`release.rs`) still pastes snippets into
//! `format!` text: `RECORD` (expects `$d`, `$rel`, `$marker`; sets `record`, `work`, the `EXIT`
//! trap) and `ATTRIBUTES` (sets `attributes`) among them; the rest are files.
//!
//! The values that a script and the deployer must agree on (the state directory, the exit
//! statuses the deployer tells apart) are the constants below, and the snippets' text is made
//! from them.

// The values some snippets must hold in a `const` (made with `concat!`, which takes literals
// only): each is written once, here, as a macro that the constant below and the snippets use.
macro_rules! state_dir {
    () => {
        ".xtask-deploy"
    };
}

mod batch;
mod daemon;
mod keeper;
mod layout;
mod lock;
mod release;
#[cfg(test)]
mod tests;

pub use batch::{batch_script, mark_step, marking};
pub use daemon::{bases_script, receive_pack_script};
pub use keeper::{await_push_script, confirm_script, KeeperDaemon, Watch};
pub use layout::setup_script;
pub use lock::{keeper_script, unlock_script};
pub(in crate::plan) use release::SWITCH_CURRENT;
pub use release::{check_script, discard_script, hook_script, inspect_script, prepare_script, publish_script};

/// Directory under `deploy_to` where xtask-deploy keeps its own state: the lock, daemon pid
/// files, the list of releases marked bad by a rollback.
pub const STATE_DIR: &str = state_dir!();
/// The FIFO in the lock's directory that wakes the batch awaiting the push (see
/// [`await_push_script`]).
const PUSHED: &str = "pushed";
/// The FIFO in the lock's directory that the git daemon's log goes through.
const DAEMON_LOG: &str = "daemon.log";
/// Exit status of a remote script when `git` is missing on the server (`sh/require.sh` writes
/// it out; a test runs it).
#[cfg(test)]
pub const EXIT_NO_GIT: i32 = 3;
/// Exit status of a remote script when `deploy_to` has not been set up (as above).
#[cfg(test)]
pub const EXIT_NOT_SET_UP: i32 = 4;
/// Exit status of the preflight when another deploy holds the lock.
pub const EXIT_LOCKED: i32 = 5;

/// The lock's helpers: `start_time`, `has_line`, `each_line`, `holder_alive`, `alive` (what each
/// expects and sets is in the file's header).
pub(in crate::plan) const LOCK_HELPERS: &str = include_str!("sh/lock_helpers.sh");

/// `drop_lock`: releases `$lock` at once, by a rename, then removes it (see the file's header).
pub(in crate::plan) const DROP_LOCK: &str = include_str!("sh/drop_lock.sh");

/// `state`, the private state directory of `$d` (see the file's header).
pub(in crate::plan) const STATE: &str = include_str!("sh/state.sh");

/// `require_git` and `require_setup` (see the file's header).
pub(in crate::plan) const REQUIRE: &str = include_str!("sh/require.sh");

/// The reports of what a server holds: `report_state`, `report_lock`, `report_unconfirmed`,
/// `report_subjects` (see the file's header).
pub(in crate::plan) const REPORT: &str = include_str!("sh/report.sh");
