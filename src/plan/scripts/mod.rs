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
//! each file's own header says what it expects and what it sets. The snippets still kept as
//! `const`s of shell text, and the few functions that return some, are pasted into the
//! scripts, and share the scripts' variables by name. What each of those expects to be set
//! before it runs, and what it sets or overwrites:
//!
//! | snippet | expects | sets or overwrites |
//! |---|---|---|
//! | every script | | `d`: `deploy_to`, quoted |
//! | `REQUIRE_GIT` | | exits [`EXIT_NO_GIT`] |
//! | `REQUIRE_SETUP` | `$d` | exits [`EXIT_NOT_SET_UP`] |
//! | `PRIVATE` | `$d` | |
//! | `REPORT_LOCK` | `$state`, `LOCK_HELPERS` | |
//! | `REPORT_STATE` | `$d`, `LOCK_HELPERS` | `r`, `rev` |
//! | `REPORT_UNCONFIRMED` | `$state` | `line` |
//! | `REPORT_SUBJECTS` | `$d` | the positional parameters (`set --`), `r`, `rev` |
//! | `NO_LINK` | `$rel`, the working directory `$d` | the function `no_link`; `p`, `rest` |
//! | `RECORD` (release.rs) | `$d`, `$rel`, `$marker` | `record`, `work`, the `EXIT` trap; `r` |
//! | `ATTRIBUTES` (release.rs) | the working directory `$d` | `attributes` |
//! | `REUSE` (release.rs) | `$d`, `$rel`, `$tree`, `$record`, `$work`, `$attributes`, the working directory `$d` | the function `reuse`; `prev`, `stamp`, `prev_tree`, `prev_attributes`, `newlines`, `since` |
//! | `SEAL` (release.rs) | `$rel`, `$tree`, `$record`, `$attributes`, the working directory `$d` | |
//! | `SWITCH_CURRENT` | `$d`, `$rel`, the working directory `$d` | the function `switch_current` |
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
macro_rules! exit_no_git {
    () => {
        3
    };
}
macro_rules! exit_not_set_up {
    () => {
        4
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

pub use batch::{batch_script, mark_step};
pub use daemon::{bases_script, receive_pack_script};
pub use keeper::{await_push_script, confirm_script, KeeperDaemon, Watch};
pub use layout::setup_script;
pub(in crate::plan) use layout::{REPORT_STATE, REPORT_UNCONFIRMED, REQUIRE_GIT, REQUIRE_SETUP};
pub use lock::{keeper_script, unlock_script};
pub(in crate::plan) use lock::REPORT_LOCK;
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
/// Exit status of a remote script when `git` is missing on the server.
#[cfg(test)]
pub const EXIT_NO_GIT: i32 = exit_no_git!();
/// Exit status of a remote script when `deploy_to` has not been set up.
#[cfg(test)]
pub const EXIT_NOT_SET_UP: i32 = exit_not_set_up!();
/// Exit status of the preflight when another deploy holds the lock.
pub const EXIT_LOCKED: i32 = 5;

/// The lock's helpers: `start_time`, `has_line`, `each_line`, `holder_alive`, `alive` (what each
/// expects and sets is in the file's header).
pub(in crate::plan) const LOCK_HELPERS: &str = include_str!("sh/lock_helpers.sh");

/// `drop_lock`: releases `$lock` at once, by a rename, then removes it (see the file's header).
pub(in crate::plan) const DROP_LOCK: &str = include_str!("sh/drop_lock.sh");

/// `state`, the private state directory of `$d` (see the file's header).
pub(in crate::plan) const STATE: &str = include_str!("sh/state.sh");
