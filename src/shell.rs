//! Remote shell scripts and the quoting of every value put into them.
//!
//! **Architecture Invariant:** a [`RemoteScript`] is the only thing [`crate::ssh`] will execute,
//! and values enter one only through [`quote`], so nothing reaches a remote shell unquoted.

use std::fmt;

/// A POSIX `sh` script to run on a server, with a short name for messages and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteScript {
    /// What the script does, in a few words (`deploy-setup`, `release`...).
    pub name: &'static str,
    /// The script text, every interpolated value already quoted.
    pub text: String,
}

impl fmt::Display for RemoteScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "# {}\n{}", self.name, self.text)
    }
}

/// Quotes `value` as one word for a POSIX shell (via the `shlex` crate). A shell cannot receive
/// a NUL byte at all; config validation refuses one earlier, and here such a value becomes the
/// empty word, so that it fails closed instead of being cut short.
pub fn quote(value: &str) -> String {
    match shlex::try_quote(value) {
        Ok(quoted) => quoted.into_owned(),
        Err(_) => "''".to_string(),
    }
}

/// The command line sent to the server's login shell to run `script` under `sh`: see
/// [`login_shell_line`].
pub fn exec_line(script: &RemoteScript) -> String {
    login_shell_line(&script.text, "sh")
}

/// The one line that every login shell (sh, bash, dash, zsh, fish, tcsh, csh) runs the same
/// way: `exec sh -c '<decoder>' <name> <text in base64>`. The login shell only sees a
/// single-quoted word free of newlines, `!`, backslashes and single quotes, then words made of
/// base64's letters: csh refuses a newline inside quotes, fish treats backslashes in them, csh
/// and zsh expand `!`. `sh` decodes the text (coreutils' `base64`) and runs it as `sh -c <text>`
/// with `$0` set to `name`, so its exit status and stdin are the script's own. A text that cannot
/// be decoded (no `base64` on the server) runs nothing and exits 127.
fn login_shell_line(text: &str, name: &str) -> String {
    format!("exec sh -c {DECODER} {name} {}", base64(text))
}

/// `text` in base64 (standard alphabet, padded, on one line), as `base64 -d` on a server decodes it.
pub fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// What the login shell hands to `sh` (see [`login_shell_line`]); single-quoted for every shell.
const DECODER: &str = r#"'p=$(printf %s "$1" | base64 -d) || exit 127; exec sh -c "$p" "$0"'"#;

/// How the markers a batch of steps prints begin (see `plan::batch_script`); each batch's own
/// marker adds a nonce ([`step_marker`]).
pub const STEP_MARKER: &str = "@@xtask-deploy-step";

/// A batch's own step marker: [`STEP_MARKER`] and `nonce`, which nothing a step prints holds by
/// chance (a hook's output cannot start or end a step).
pub fn step_marker(nonce: u64) -> String {
    format!("{STEP_MARKER}-{nonce:016x}")
}

/// Runs `script` with stdin from `/dev/null`, in a session (process group) of its own, and
/// stops that whole group (TERM, then KILL a second later) when the channel's stdin reaches
/// EOF: the deployer died, lost its connection, or gave up on the step. So nothing a step
/// started (an extraction, a hook) outlives its deploy. Without `setsid` on the server only
/// the script's own process is stopped. Once it has seen EOF the watchdog ignores this shell's
/// TERM (sent when the script ends, which the first TERM brings about), so its KILL still
/// reaches children that ignore TERM. A script that ends by itself leaves its group alone.
const SUPERVISOR: &str = r#"exec 3<&0
if command -v setsid >/dev/null 2>&1; then setsid sh -c "$1" </dev/null & else sh -c "$1" </dev/null & fi
job=$!
( while read -r _; do :; done <&3; trap '' TERM; kill -TERM -"$job" "$job" 2>/dev/null; sleep 1; kill -KILL -"$job" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
exec 3<&- >/dev/null 2>&1
wait "$job"
status=$?
kill "$watchdog" 2>/dev/null
exit "$status""#;

/// The command line that runs `script` under the supervisor above (see [`login_shell_line`]).
/// The script is the supervisor's `$1`, set by a `set --` line before it.
pub fn supervised_exec_line(script: &RemoteScript) -> String {
    login_shell_line(&format!("set -- {}\n{SUPERVISOR}", quote(&script.text)), "xtask-deploy-step")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What `sh` makes of `quote(value)`: the value itself, if quoting is right.
    fn round_trip(value: &str) -> String {
        let script = format!("printf '%s' {}", quote(value));
        let out = Command::new("sh").arg("-c").arg(&script).output().expect("run sh");
        assert!(out.status.success(), "sh failed on {script:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_reach_the_shell_unchanged() {
        for value in [
            "plain",
            "with space",
            "it's",
            "double \" quote",
            "$(touch /tmp/xtask-deploy-pwned)",
            "`id`",
            "line\nbreak",
            "-leading-dash",
            "back\\slash",
            "*?[glob]~",
            "",
            "semi;colon&amp|pipe",
        ] {
            assert_eq!(round_trip(value), value, "value {value:?}");
        }
        assert!(!std::path::Path::new("/tmp/xtask-deploy-pwned").exists());
    }

    #[test]
    fn a_supervised_script_keeps_its_output_and_status_and_reads_no_stdin() {
        let script = RemoteScript { name: "test", text: "echo out; echo err >&2; cat; exit 7".to_string() };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(supervised_exec_line(&script))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Stdin stays open, as the deployer's channel does: EOF would mean "stop".
        let stdin = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "out\n");
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "err\n");
    }

    /// Runs `text` under the supervisor, lets it start, then closes its stdin as a deployer
    /// that died would; returns the still-running supervisor.
    fn supervise_then_close_stdin(text: String) -> std::process::Child {
        let script = RemoteScript { name: "test", text };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(supervised_exec_line(&script))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(child.stdin.take());
        child
    }

    #[test]
    fn a_supervised_script_and_its_children_stop_when_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        let text = format!("sleep 41.7 & sleep 41.8; touch {}", quote(late.to_str().unwrap()));
        let mut child = supervise_then_close_stdin(text);
        let started = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the script was not stopped");
        assert_eq!(status.code(), Some(128 + 15), "stopped by TERM");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let left = crate::loopback::LoopbackServer::processes_mentioning("sleep 41.");
        assert!(left.iter().all(|(_, cmd)| !cmd.starts_with("sleep")), "{left:?}");
        assert!(!late.exists());
    }

    #[test]
    fn a_child_that_ignores_term_is_killed_a_second_after_stdin_closes() {
        let text = "( trap '' TERM; exec sleep 42.7 ) & sleep 42.8".to_string();
        let mut child = supervise_then_close_stdin(text);
        assert_eq!(child.wait().unwrap().code(), Some(128 + 15), "stopped by TERM");
        // The supervisor has ended; its watchdog still owes the SIGKILL a second after the TERM.
        let mut left = Vec::new();
        for _ in 0..40 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            left = crate::loopback::LoopbackServer::processes_mentioning("sleep 42.");
            left.retain(|(_, cmd)| cmd.starts_with("sleep"));
            if left.is_empty() {
                break;
            }
        }
        assert_eq!(left, vec![], "a child ignoring SIGTERM outlived the step");
    }

    #[test]
    fn exec_line_runs_the_script_text_through_sh() {
        let script = RemoteScript { name: "test", text: "x='a b'; printf '%s' \"$x\"".to_string() };
        let out = Command::new("sh").arg("-c").arg(exec_line(&script)).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b");
    }

    /// The remote command as sshd runs it, `<login shell> -c <line>`, for every login shell
    /// installed here: the same output, stdin and exit status from each, `!`, `$`, quotes,
    /// backslashes and newlines included (issue 18: tcsh and csh refused the multi-line line).
    #[test]
    fn every_login_shell_runs_both_lines_alike() {
        let text = "set -u\nx='it'\\''s $HOME !! !$ `x` \\ \"q\"'\nprintf '%s|%s\\n' \"$x\" \"$0\"\nread -r line; echo \"in:$line\"\necho err >&2\nexit 7";
        let script = RemoteScript { name: "test", text: text.to_string() };
        let expected = "it's $HOME !! !$ `x` \\ \"q\"|sh\nin:input\n";
        let mut ran = Vec::new();
        for shell in ["sh", "bash", "dash", "zsh", "fish", "tcsh", "csh"] {
            let Some(path) =
                ["/bin", "/usr/bin"].iter().map(|dir| std::path::Path::new(dir).join(shell)).find(|p| p.exists())
            else {
                println!("note: `{shell}` is not installed (`bash .ci/install-deps` installs it); skipped");
                continue;
            };
            for (line, supervised) in [(exec_line(&script), false), (supervised_exec_line(&script), true)] {
                assert!(!line.contains('\n'), "{line}");
                let mut child = Command::new(&path)
                    .arg("-c")
                    .arg(&line)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                std::io::Write::write_all(&mut stdin, b"input\n").unwrap();
                // Under the supervisor the script reads no stdin, and stdin stays open (EOF
                // would stop it); without it, the script reads the channel's stdin.
                let stdin = if supervised {
                    Some(stdin)
                } else {
                    drop(stdin);
                    None
                };
                let out = child.wait_with_output().unwrap();
                drop(stdin);
                let stdout = String::from_utf8(out.stdout).unwrap();
                let want = if supervised { expected.replace("in:input", "in:") } else { expected.to_string() };
                assert_eq!(
                    (out.status.code(), stdout.as_str()),
                    (Some(7), want.as_str()),
                    "{shell}, supervised: {supervised}"
                );
                assert_eq!(String::from_utf8(out.stderr).unwrap(), "err\n", "{shell}, supervised: {supervised}");
            }
            ran.push(shell);
        }
        assert!(ran.contains(&"sh"), "{ran:?}");
    }

    #[test]
    fn a_text_that_cannot_be_decoded_runs_nothing() {
        let line = exec_line(&RemoteScript { name: "test", text: "echo ran".into() });
        let corrupt = format!("{}%%", &line[..line.len() - 2]);
        let out = Command::new("sh").arg("-c").arg(&corrupt).output().unwrap();
        assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(127), &b""[..]));
    }
}
