//! The deploy lock: the preflight (checks, takes the lock, reaps what an earlier deploy left,
//! reports the state, then keeps the lock while its channel is open, confirming and pruning, or
//! going back when the deployer is lost), `unlock`, and the snippets they share.

use crate::config::Config;
use crate::plan::LockInfo;
use crate::protocol::{Answer, Say};
use crate::shell::RemoteScript;

use super::daemon::CHECKED_GIT;
use super::keeper::{KeeperDaemon, Watch, KEEPER_JOBS};
use super::layout::platform_probe;
use super::{DAEMON_LOG, DROP_LOCK, EXIT_LOCKED, LOCK_HELPERS, PUSHED, REPORT, REQUIRE, STATE};

/// `tidy_repo` and `stop_tidying`: `git gc` of `repo/` after a confirmed deploy, off its path,
/// never beside a deploy, stopped by the next one (see the file).
const TIDY: &str = include_str!("sh/tidy.sh");

/// The lock keeper's pieces, in the order [`keeper_script`] puts them (each file's header says
/// what it expects and sets).
const KEEPER_START: &str = include_str!("sh/keeper_start.sh");
const KEEPER_TAKE: &str = include_str!("sh/keeper_take.sh");
const KEEPER_SERVE: &str = include_str!("sh/keeper_serve.sh");
const KEEPER_LOOP: &str = include_str!("sh/keeper_loop.sh");

/// `release_lock` (see the file's header).
const RELEASE_LOCK: &str = include_str!("sh/release_lock.sh");

/// Checks that setup was done, takes the deploy lock (`mkdir`, atomic) holding `lock`, stops
/// daemons orphaned by an earlier deploy, and reports the server's state (see
/// [`crate::plan::parse_state`]). When another deploy holds the lock it prints the holder as
/// `holder <key>=<value>` lines and exits [`EXIT_LOCKED`], changing nothing. A lock whose
/// holder's SSH connection is gone (the deployer was killed, or its connection cut) is stale:
/// it is taken over, and its holder printed as `stale <key>=<value>` lines.
///
/// With `daemon`, it then starts the deploy's git daemon (see [`super::keeper`]). It prints
/// [`Answer::READY`], and keeps the lock while its channel is open, running what the deployer sends
/// (batches of steps, the confirmation: see [`super::keeper`]). If the channel closes while a
/// release this deploy switched to is unconfirmed, the keeper goes back to the release the
/// server had and runs `restart_hooks` (the `after_publish` hooks) for it; once confirmed, it
/// removes the old releases chosen at the confirmation.
pub fn keeper_script(
    config: &Config,
    lock: &LockInfo,
    restart_hooks: &[crate::plan::Restart],
    daemon: Option<&KeeperDaemon>,
    watch: Option<&Watch>,
) -> RemoteScript {
    let values = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("lock_info", &lock.lines().join("\n")),
        ("lock_user", &lock.user),
        ("exit_locked", &EXIT_LOCKED.to_string()),
        ("checked_git", CHECKED_GIT),
        ("pushed_fifo", PUSHED),
        ("daemon_log", DAEMON_LOG),
        ("say_beat", Say::Beat.word()),
        ("say_confirm", Say::Confirm.word()),
        ("say_run", Say::Run { end: "", script: "" }.word()),
        ("say_kept", Say::Kept { end: "", runs: "" }.word()),
        ("say_stop", Say::Stop.word()),
        ("say_pushed", Say::Pushed { ok: true }.word()),
        ("say_pushing", Say::Pushing(std::time::Duration::ZERO).word()),
        ("beat_answer", &format!("{:03o}", crate::protocol::BEAT_ANSWER)),
        ("answer_ready", Answer::READY),
    ]);
    let restart = crate::plan::confirm::restart_hooks_header(restart_hooks, config.timeouts.step.as_secs());
    let daemon = daemon.map_or(super::keeper::NO_DAEMON.to_string(), super::keeper::start_daemon);
    let watch = watch.map(super::keeper::watch_function).unwrap_or_default();
    let text = [
        "set -u\n",
        &values,
        &super::keeper::ours(&lock.token),
        &restart,
        REQUIRE,
        KEEPER_START,
        STATE,
        crate::plan::confirm::GO_BACK,
        LOCK_HELPERS,
        DROP_LOCK,
        RELEASE_LOCK,
        TIDY,
        crate::plan::confirm::RESTART_HOOKS,
        KEEPER_TAKE,
        REPORT,
        KEEPER_SERVE,
        &platform_probe(config),
        &daemon,
        KEEPER_JOBS,
        &super::keeper::confirm_function(config),
        &watch,
        KEEPER_LOOP,
    ]
    .concat();
    RemoteScript { name: "preflight", text }
}

/// Removes the deploy lock: only when it holds `token` (a deploy never removes a lock it did
/// not take), or whoever holds it when `token` is `None` (`cargo xtask unlock`). Prints the
/// holder as `removed <key>=<value>` lines when it removed one.
///
/// Unless `force`, a lock whose holder is alive (its deploy's SSH connection, or the keeper
/// going back after it) is left in place: the script prints `holder <key>=<value>` lines and
/// exits [`EXIT_LOCKED`]. A dead holder's lock is removed (a deploy would take it over anyway).
pub fn unlock_script(config: &Config, token: Option<&str>, force: bool) -> RemoteScript {
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("force", if force { "1" } else { "0" }),
        ("exit_locked", &EXIT_LOCKED.to_string()),
    ]);
    let ours = token.map(super::keeper::ours).unwrap_or_default();
    let text = ["set -u\n", &header, &ours, STATE, LOCK_HELPERS, DROP_LOCK, RELEASE_LOCK, UNLOCK].concat();
    RemoteScript { name: "unlock", text }
}

/// The unlock's shell (see [`unlock_script`]), with its header of what it expects.
const UNLOCK: &str = include_str!("sh/unlock.sh");

