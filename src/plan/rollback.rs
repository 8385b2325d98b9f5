//! Going back to an earlier release (`rollback`), and the bad marks: which release `current`
//! goes back to, which release is marked bad, which mark is cleared, and dropping the marks of
//! releases that no longer exist.
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O; every value in a
//! script is quoted.

use crate::config::Config;
use crate::shell::RemoteScript;

use super::confirm::{restart_hooks_header, HEALTHY, RESTART_HOOKS};
use super::{mark_step, marking, STATE, SWITCH_CURRENT};

/// Where `rollback` takes `current`, and whether the release it leaves is marked bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTo<'a> {
    /// The newest release older than the current one that is not marked bad; the release
    /// left is marked bad.
    Previous,
    /// The release `name` (its bad mark, if it has one, is cleared); the release left is marked
    /// bad only with `mark_left`.
    Release {
        /// The release's name (its UTC time, `YYYYMMDDHHMMSS`), as `releases` lists it.
        name: &'a str,
        /// Whether the release left is marked bad (`rollback --to NAME --mark`).
        mark_left: bool,
    },
}

/// What a server reported of its rollback ([`rollback_script`]'s output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollbackDone {
    /// `(from, to)` once `current` was switched.
    pub switched: Option<(String, String)>,
    /// The `REVISION` of the release switched to (`-` when it has none).
    pub revision: String,
    /// The release left, when it was marked bad.
    pub marked: Option<String>,
    /// The release switched to, when it was marked bad and the mark was cleared.
    pub unmarked: Option<String>,
    /// `(index, exit status)` of each restart hook that failed, the index into the hooks given
    /// to [`rollback_script`].
    pub failed_hooks: Vec<(usize, i32)>,
}

/// Reads the output of [`rollback_script`] (or, for `unmarked`, of [`marks_script`]).
pub fn parse_rollback(stdout: &str) -> RollbackDone {
    let mut done = RollbackDone { revision: "-".to_string(), ..Default::default() };
    for line in stdout.lines() {
        let Some((kind, rest)) = line.split_once(' ') else { continue };
        match kind {
            "rolled-back" => {
                if let Some((from, to)) = rest.split_once(' ') {
                    done.switched = Some((from.to_string(), to.to_string()));
                }
            }
            "revision" => done.revision = rest.to_string(),
            "marked" => done.marked = Some(rest.to_string()),
            "unmarked" => done.unmarked = Some(rest.to_string()),
            "hook-failed" => {
                let mut numbers = rest.split(' ').map(str::parse);
                if let (Some(Ok(index)), Some(Ok(status))) = (numbers.next(), numbers.next()) {
                    done.failed_hooks.push((index as usize, status));
                }
            }
            _ => {}
        }
    }
    done
}

/// Reads the line [`HEALTHY`] that a passing `health_script` prints: the tries and the
/// milliseconds it took.
pub fn parse_healthy(stdout: &str) -> Option<(u32, u64)> {
    stdout.lines().find_map(|line| {
        let mut words = line.strip_prefix(HEALTHY)?.split_whitespace();
        Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
    })
}

/// Switches `current` back as `to` says, marks the release it leaves as bad (see
/// [`RollbackTo`]), clears the mark of the release it goes to, drops the marks of releases
/// that no longer exist, logs `<user> rolled back to release <name>` as Capistrano does, and
/// then runs `restart_hooks` (the server's `after_publish` hooks) in the restored release with
/// `ROLLBACK=1`, so that the service runs the restored release.
///
/// Prints `rolled-back <from> <to>`, `revision <sha>` (the restored release's `REVISION`),
/// `marked <from>`, `unmarked <to>` and, for each restart hook that failed,
/// `hook-failed <index> <status>` (read by [`parse_rollback`]); the hooks' output goes to
/// stderr. A failing hook does not make the script fail: `current` has moved by then. It is
/// two steps, the switch and the hooks, each with its own step time, marked with `marker`: run
/// it with `Connection::output_steps(script, 2, marker, ...)`.
pub fn rollback_script(
    config: &Config,
    to: RollbackTo,
    user: &str,
    restart_hooks: &[super::Restart],
    marker: &str,
) -> RemoteScript {
    let (to, mark_left) = match to {
        RollbackTo::Release { name, mark_left } => (name, mark_left),
        RollbackTo::Previous => ("", true),
    };
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("to", to),
        ("mark_left", if mark_left { "1" } else { "0" }),
        ("user", user),
    ]);
    let hooks = restart_hooks_header(restart_hooks, config.timeouts.step.as_secs());
    let text = [
        marking(marker).as_str(),
        &mark_step(0),
        "set -eu\n",
        &header,
        &hooks,
        STATE,
        RESTART_HOOKS,
        REWRITE_MARKS,
        SWITCH_CURRENT,
        ROLLBACK,
        // The switch is done; the restart hooks get a step's time of their own.
        &mark_step(1),
        "run_restart_hooks\n",
        &mark_step(2),
    ]
    .concat();
    RemoteScript { name: "rollback", text }
}

/// Rewrites the bad marks: drops the marks of releases that no longer exist (and repeated
/// ones), and the mark of `unmark` when given, printing `unmarked <name>` if it had one. Run
/// only while holding the lock (`releases --unmark`; a deploy after it published).
pub fn marks_script(config: &Config, unmark: Option<&str>) -> RemoteScript {
    let header = crate::shell::header(&[("d", &config.deploy_to), ("unmark", unmark.unwrap_or(""))]);
    RemoteScript { name: "marks", text: ["set -eu\n", &header, STATE, REWRITE_MARKS, "rewrite_marks\n"].concat() }
}

/// `cargo xtask rollback`'s switch (see [`rollback_script`]), with its header of what it expects.
const ROLLBACK: &str = include_str!("rollback/rollback.sh");

/// Rewrites `$state/bad` keeping each mark once, only of releases that exist, and not the
/// mark of `$unmark` (printing `unmarked $unmark` when there was one). Shell builtins but the
/// final `mv`, which replaces the file atomically.
pub(crate) const REWRITE_MARKS: &str = include_str!("scripts/sh/rewrite_marks.sh");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::config;
    use crate::shell::quote;

    #[test]
    fn a_rollback_reports_what_it_did() {
        let done = parse_rollback(
            "marked 20261125041639\nunmarked 20261125041638\nrolled-back 20261125041639 20261125041638\n\
             revision abcd\nhook-failed 1 3\n",
        );
        assert_eq!(
            done,
            RollbackDone {
                switched: Some(("20261125041639".into(), "20261125041638".into())),
                revision: "abcd".into(),
                marked: Some("20261125041639".into()),
                unmarked: Some("20261125041638".into()),
                failed_hooks: vec![(1, 3)],
            }
        );
        assert_eq!(parse_rollback("").revision, "-");
        assert_eq!(parse_healthy("x\n@@xtask-deploy-healthy 3 2041\n"), Some((3, 2041)));
        assert_eq!(parse_healthy("@@xtask-deploy-healthy\n"), None);
    }

    #[test]
    fn only_a_plain_rollback_or_mark_left_marks_the_release_left() {
        let cfg = config("/srv/x");
        let marks = |to| rollback_script(&cfg, to, "alice", &[], "@@m").text.contains("\nmark_left=1\n");
        assert!(ROLLBACK.contains("if [ \"$mark_left\" = 1 ]; then\n  echo \"$from\" >> \"$state/bad\"\n  echo \"marked $from\""));
        assert!(marks(RollbackTo::Previous));
        assert!(!marks(RollbackTo::Release { name: "20261125041638", mark_left: false }));
        assert!(marks(RollbackTo::Release { name: "20261125041638", mark_left: true }));
    }

    #[test]
    fn the_restart_hooks_run_after_the_switch_in_the_restored_release() {
        let script =
            rollback_script(&config("/srv/x"), RollbackTo::Previous, "alice", &[crate::plan::Restart::hook("systemctl restart it's")], "@@m").text;
        let switch = script.find("\nswitch_current\n").unwrap();
        let hook = script.rfind("\nrun_restart_hooks\n").unwrap();
        assert!(switch < hook, "{script}");
        assert!(script.contains("ROLLBACK=1") && script.contains(&format!("\nrestart_0={}\n", quote("systemctl restart it's"))), "{script}");
        assert!(script.find("rolled-back $from $rel").unwrap() < hook, "reported before the hooks run");
    }

    #[test]
    fn unmark_is_quoted_and_optional() {
        let cfg = config("/srv/x");
        assert!(marks_script(&cfg, Some("2026$(x)")).text.contains("unmark='2026$(x)'\n"));
        assert!(marks_script(&cfg, None).text.contains("unmark=''\n"));
    }
}
