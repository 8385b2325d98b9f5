//! Remote shell scripts and the quoting of every value put into them.
//!
//! **Architecture Invariant:** a [`RemoteScript`] is the only thing [`crate::ssh`] will execute,
//! and values enter one only through [`quote`], so nothing reaches a remote shell unquoted.

use std::fmt;

pub mod kept;

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

/// How a [`RemoteScript`] reaches a server: the exec request's command line is [`bootstrap_line`],
/// the same few hundred bytes for every script, and the script itself travels first on the
/// channel's stdin, as [`Delivery::input`] says. So no script, and no value in one (a lock's
/// message, a hook, a secret), is ever on a command line, where `/proc/<pid>/cmdline` shows it to
/// every local user; and the exec request stays far below the limits of SSH servers other than
/// OpenSSH (dropbear refuses a command over 9,000 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The exec request's command line.
    pub line: String,
    /// What to write on the channel's stdin before anything else: a line of the bootstrap's
    /// values (the length of what follows; the kept file's id, line count and directory, when
    /// the script is sent as runs of its lines), then the script or its runs.
    pub input: Vec<u8>,
    /// When the script is sent as runs of the kept file's lines: the server then answers
    /// [`kept::HAVE`]; or [`kept::NEED`], and is sent [`kept::Kept::sent`]; or [`kept::WHOLE`],
    /// and is sent this (the script's length on a line, then the script).
    pub kept: Option<Vec<u8>>,
}

/// Whether a script runs with the channel's stdin as its own, or under the supervisor (see
/// [`SUPERVISOR`]), which stops it when that stdin closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervision {
    /// The script reads the rest of the channel's stdin (a lock keeper, a push).
    None,
    /// The script's stdin is `/dev/null`, and the channel's closing stops it with all it started.
    Supervised,
}

/// What the bootstrap runs for `script`: its text without comments (under the supervisor when
/// `supervision` says), ending with [`SCRIPT_END`]. The same for both ways a script travels.
pub fn body(script: &RemoteScript, supervision: Supervision) -> String {
    let text = without_comments(&script.text);
    let body = match supervision {
        Supervision::None => text,
        Supervision::Supervised => format!("set -- {}\n{}", quote(&text), without_comments(SUPERVISOR)),
    };
    format!("{body}\n{SCRIPT_END}")
}

/// How `script` reaches the server (see [`Delivery`]): whole, or, with `kept` (where the server
/// keeps our scripts, see [`kept`]), as runs of the kept file's lines.
pub fn delivery(script: &RemoteScript, supervision: Supervision, kept: Option<KeptAt>) -> Delivery {
    delivery_with(script, supervision, kept.map(|at| (kept::kept(), at)))
}

/// Where a server keeps our scripts: under its `deploy_to`; and whether the command may write
/// them there (`deploy-check`, `releases`, `--dry-run` and the services' status and logs change
/// nothing on a server: they use a file the server has, or the one they are sent, unkept).
#[derive(Debug, Clone, Copy)]
pub struct KeptAt<'a> {
    pub deploy_to: &'a str,
    pub write: bool,
}

/// [`delivery`], with `file` kept where `at` says.
fn delivery_with(script: &RemoteScript, supervision: Supervision, kept: Option<(&kept::Kept, KeptAt)>) -> Delivery {
    let body = body(script, supervision);
    let line = bootstrap_line(script.name);
    // A script the file cannot make goes whole.
    match kept.and_then(|(file, at)| Some((file, at, file.runs(&body)?))) {
        Some((file, at, runs)) => {
            let header = format!(
                "_n={} _i={} _l={} _k={}{}",
                runs.len(),
                file.id,
                file.line_count(),
                quote(&format!("{}/{}", at.deploy_to, kept::KEPT_DIR)),
                if at.write { " _w=1" } else { "" },
            );
            Delivery { line, input: framed(&header, &runs), kept: Some(framed(&body.len().to_string(), &body)) }
        }
        None => Delivery { line, input: framed(&format!("_n={}", body.len()), &body), kept: None },
    }
}

/// `head` on a line, then `payload`: how the bootstrap reads what it is sent.
fn framed(head: &str, payload: &str) -> Vec<u8> {
    format!("{head}\n{payload}").into_bytes()
}

/// `text`, a shell script of ours, without its comment lines and blank lines: what `sh` would
/// skip anyway, and a third of the keeper's script, sent with every deploy. Only whole lines
/// go, and only outside quotes and here-documents: a user's command, quoted into a script,
/// keeps every line (a `#` line of a here-document in it is data).
pub fn without_comments(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    // The quote open at the start of the line, and the word that ends a here-document.
    let mut open: Option<u8> = None;
    let mut heredoc: Option<String> = None;
    for line in text.split_inclusive('\n') {
        if let Some(word) = &heredoc {
            if line.trim_start_matches('\t').trim_end_matches('\n') == word {
                heredoc = None;
            }
            kept.push_str(line);
            continue;
        }
        let bare = line.trim();
        if open.is_none() && (bare.is_empty() || bare.starts_with('#')) {
            continue;
        }
        kept.push_str(line);
        // Every character that matters here is ASCII: bytes, without decoding the line.
        let bytes = line.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let c = bytes[at];
            match open {
                Some(b'\'') if c == b'\'' => open = None,
                Some(b'\'') => {}
                Some(_) if c == b'\\' => at += 1,
                Some(quote) if c == quote => open = None,
                Some(_) => {}
                None if c == b'\\' => at += 1,
                None if c == b'\'' || c == b'"' || c == b'`' => open = Some(c),
                // A comment to the end of the line: its quotes are not quotes.
                None if c == b'#' && (at == 0 || bytes[at - 1].is_ascii_whitespace() || bytes[at - 1] == b';') => break,
                None if c == b'<' && bytes.get(at + 1) == Some(&b'<') && bytes.get(at + 2) != Some(&b'<') => {
                    let rest = line[at + 2..].trim_start_matches('-').trim_start();
                    let word: String = rest
                        .chars()
                        .filter(|c| *c != '\'' && *c != '"' && *c != '\\')
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !word.is_empty() {
                        heredoc = Some(word);
                    }
                    at += 1;
                }
                None => {}
            }
            at += 1;
        }
    }
    kept
}

/// The last line of every script sent (a comment to `sh`): the bootstrap runs nothing of a
/// script that does not end with it, as a script cut short by a lost connection would not.
pub const SCRIPT_END: &str = "#@@xtask-deploy-script-end";

/// The one command line every exec request carries: `exec sh -c '<bootstrap>' xtask-deploy-<name>`.
/// Every login shell (sh, bash, dash, zsh, fish, tcsh, csh) runs it the same way: it sees a
/// single-quoted word free of newlines, `!`, backslashes and single quotes (csh refuses a newline
/// inside quotes, fish treats backslashes in them, csh and zsh expand `!`), then a plain word.
/// `sh` reads the script from stdin ([`bootstrap`]) and `eval`s it, so its exit status and the
/// rest of stdin are the script's own, and `$0` names it in `ps`.
pub fn bootstrap_line(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c == ' ' { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("exec sh -c {} xtask-deploy-{name}", bootstrap())
}

/// What the login shell hands to `sh` (see [`bootstrap_line`]), single-quoted for every shell:
/// reads the line of values and evaluates it, then exactly `$_n` bytes (`head -c` reads no
/// further, so what follows on stdin stays for the script). With a kept file's id (`$_i`), those
/// bytes are runs of its lines: it answers [`kept::HAVE`] when the copy it read hashes to that
/// id, else [`kept::NEED`], reads the file the deployer then sends, checks it the same way, keeps
/// it when the command may write (`$_w`), and decodes the runs (`xk`, which the lock keeper uses
/// again for batches). A server without `awk` or `git` answers [`kept::WHOLE`] and is sent the
/// script whole. It runs the script only when it ends with [`SCRIPT_END`]: a script (or a kept
/// file) that did not arrive whole, or a server without `head`, runs nothing and exits 127.
/// (`_i` and `_w` are emptied first: the server's environment does not set them.)
fn bootstrap() -> &'static str {
    static BOOTSTRAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOTSTRAP.get_or_init(|| format!(
        r#"'{functions};xe(){{ echo "xtask-deploy: $1 did not arrive whole" >&2;exit 127;}};_i=;_w=;IFS= read -r h||xe script;eval "$h";p=$(head -c "$_n")||xe script;if [ "$_i" ];then if command -v awk >/dev/null&&command -v git >/dev/null;then _f=$_k/$_i;_d=$(cat "$_f" 2>/dev/null);if kh;then echo {have};else echo {need};IFS= read -r h||xe script;eval "$(head -c "$h")";fi;p=$(xk "$p")||xe script;else echo {whole};IFS= read -r h||xe script;p=$(head -c "$h");fi;fi;case $p in *"{SCRIPT_END}");;*)xe script;;esac;eval "$p"'"#,
        functions = kept::FUNCTIONS,
        have = kept::HAVE,
        need = kept::NEED,
        whole = kept::WHOLE,
    ))
}

/// `text` in base64 (standard alphabet, padded, on one line), as `base64 -d` on a server decodes it.
pub fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Runs a command held in the environment variable `XTASK_DEPLOY_RUN` (see [`export_command`]):
/// the variable is unset before the command runs, so what it starts does not inherit it. A
/// command run this way is on no command line: only its own user (and root) can read a process's
/// environment, whereas `/proc/<pid>/cmdline` is open to every local user.
///
/// The scripts kept as `.sh` files (the hooks, the health check, the restart hooks, the
/// keeper's jobs) write these words out; tests check that they agree with this.
#[cfg(any(test, feature = "testkit"))]
pub const RUN_EXPORTED: &str = r#"sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'"#;

/// A header of quoted assignments, `name=value` a line each: how a script kept as a real `.sh`
/// file is given its values (nothing is spliced into its text).
pub fn header(values: &[(&str, &str)]) -> String {
    values.iter().map(|(name, value)| format!("{name}={}\n", quote(value))).collect()
}

/// A header of positional arguments, `set -- 'a' 'b' ...`: how a script kept as a real `.sh`
/// file is given a list.
pub fn arguments(values: &[&str]) -> String {
    let words: Vec<String> = values.iter().map(|value| quote(value)).collect();
    format!("set --{}{}\n", if words.is_empty() { "" } else { " " }, words.join(" "))
}

/// The shell line that puts `command` where [`RUN_EXPORTED`] finds it.
#[cfg(any(test, feature = "testkit"))]
pub fn export_command(command: &str) -> String {
    format!("XTASK_DEPLOY_RUN={}; export XTASK_DEPLOY_RUN", quote(command))
}

/// How the markers a batch of steps prints begin (see `plan::batch_script`); each batch's own
/// marker adds a nonce ([`step_marker`]).
pub const STEP_MARKER: &str = "@@xtask-deploy-step";

/// A batch's own step marker: [`STEP_MARKER`] and `nonce`, which nothing a step prints holds by
/// chance (a hook's output cannot start or end a step).
pub fn step_marker(nonce: u64) -> String {
    format!("{STEP_MARKER}-{nonce:016x}")
}

/// Runs `script` (`$1`, through [`RUN_EXPORTED`]'s variable: on no command line) with stdin
/// from `/dev/null`, in a session (process group) of its own, and
/// stops that whole group (TERM, then KILL a second later) when the channel's stdin reaches
/// EOF: the deployer died, lost its connection, or gave up on the step. So nothing a step
/// started (an extraction, a hook) outlives its deploy. Without `setsid` on the server only
/// the script's own process is stopped. Once it has seen EOF the watchdog ignores this shell's
/// TERM (sent when the script ends, which the first TERM brings about), so its KILL still
/// reaches children that ignore TERM. A script that ends by itself leaves its group alone.
const SUPERVISOR: &str = r#"exec 3<&0
XTASK_DEPLOY_RUN=$1
export XTASK_DEPLOY_RUN
set --
run='xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
if command -v setsid >/dev/null 2>&1; then setsid sh -c "$run" "$0" </dev/null & else sh -c "$run" "$0" </dev/null & fi
unset XTASK_DEPLOY_RUN
job=$!
( while read -r _; do :; done <&3; trap '' TERM; kill -TERM -"$job" "$job" 2>/dev/null; sleep 1; kill -KILL -"$job" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
exec 3<&- >/dev/null 2>&1
wait "$job"
status=$?
kill "$watchdog" 2>/dev/null
exit "$status""#;

/// Starts `script` on this machine as a server's login shell would (`sh -c <line>`), and writes
/// what the deployer writes first: for tests of what scripts do once they have arrived.
#[cfg(test)]
pub(crate) fn spawn_here(script: &RemoteScript, supervision: Supervision) -> (std::process::Child, std::process::ChildStdin) {
    let delivery = delivery(script, supervision, None);
    login_shell(std::path::Path::new("sh"), &delivery.line, &delivery.input)
}

/// Starts `line` as sshd would with `shell` as the login shell (`<shell> -c <line>`), every
/// stream piped, and writes `input` on its stdin, which is returned open.
#[cfg(test)]
fn login_shell(shell: &std::path::Path, line: &str, input: &[u8]) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = std::process::Command::new(shell)
        .arg("-c")
        .arg(line)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the shell");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input).expect("write the script");
    (child, stdin)
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments_go_and_quoted_lines_and_here_documents_stay() {
        let text = "set -u\n# a comment, isn't it\n\n  # indented\necho \"$#\" ${#x} a#b # tail 'quote\n\
                    cmd='one\n# kept: inside quotes\ntwo'\ncat <<END\n# kept: data\nEND\n# gone\necho \"x\n#kept\"\n";
        assert_eq!(
            super::without_comments(text),
            "set -u\necho \"$#\" ${#x} a#b # tail 'quote\ncmd='one\n# kept: inside quotes\ntwo'\ncat <<END\n\
             # kept: data\nEND\necho \"x\n#kept\"\n"
        );
    }

    #[test]
    fn every_script_without_its_comments_is_still_valid_shell() {
        let snapshots = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/plan/scripts/tests/snapshots"));
        let services = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/plan/service"));
        let scripts = snapshots.unwrap().chain(services.unwrap()).flatten();
        for entry in scripts.filter(|entry| entry.path().extension().is_some_and(|ext| ext == "sh")) {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let compact = super::without_comments(&text);
            assert!(compact.len() < text.len(), "{:?} has comments to drop", entry.path());
            let checked = std::process::Command::new("sh").args(["-n", "-c", &compact]).output().unwrap();
            assert!(checked.status.success(), "{:?}: {}", entry.path(), String::from_utf8_lossy(&checked.stderr));
            // Only whole lines went: what is left is the script's lines, in order.
            let mut lines = text.lines();
            for line in compact.lines() {
                assert!(lines.any(|original| original == line), "{line:?} is not a line of {:?}", entry.path());
            }
        }
    }

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
        // Stdin stays open, as the deployer's channel does: EOF would mean "stop".
        let (child, stdin) = spawn_here(&script, Supervision::Supervised);
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
        let (child, stdin) = spawn_here(&script, Supervision::Supervised);
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(stdin);
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

    /// The remote command as sshd runs it, `<login shell> -c <line>`, for every login shell
    /// installed here: the same output, stdin and exit status from each, `!`, `$`, quotes,
    /// backslashes and newlines in the script included (issue 18: tcsh and csh refused a
    /// multi-line line).
    #[test]
    fn every_login_shell_runs_a_script_alike_with_or_without_the_supervisor() {
        let text = "set -u\nx='it'\\''s $HOME !! !$ `x` \\ \"q\"'\nprintf '%s|%s\\n' \"$x\" \"$0\"\nread -r line; echo \"in:$line\"\necho err >&2\nexit 7";
        let script = RemoteScript { name: "test", text: text.to_string() };
        let expected = "it's $HOME !! !$ `x` \\ \"q\"|xtask-deploy-test\nin:input\n";
        let mut ran = Vec::new();
        for shell in ["sh", "bash", "dash", "zsh", "fish", "tcsh", "csh"] {
            let Some(path) =
                ["/bin", "/usr/bin"].iter().map(|dir| std::path::Path::new(dir).join(shell)).find(|p| p.exists())
            else {
                println!("note: `{shell}` is not installed (`bash .ci/install-deps` installs it); skipped");
                continue;
            };
            // Whole; then as runs of a kept file the server lacks (it answers, is sent the file
            // and keeps it); then as runs of the file it kept.
            let deploy_to = tempfile::tempdir().unwrap();
            std::fs::create_dir(deploy_to.path().join(".xtask-deploy")).unwrap();
            let dir = deploy_to.path().to_str().unwrap();
            for (supervision, answer) in [Supervision::None, Supervision::Supervised]
                .into_iter()
                .flat_map(|supervision| [None, Some(kept::NEED), Some(kept::HAVE)].map(|answer| (supervision, answer)))
            {
                let file = &*Box::leak(Box::new(kept::Kept::new(Box::leak(body(&script, supervision).into_boxed_str()))));
                let at = KeptAt { deploy_to: dir, write: true };
                let delivery = delivery_with(&script, supervision, answer.map(|_| (file, at)));
                assert!(!delivery.line.contains('\n'), "{}", delivery.line);
                assert_eq!(delivery.kept.is_some(), answer.is_some());
                if answer == Some(kept::NEED) {
                    let _ = std::fs::remove_dir_all(deploy_to.path().join(kept::KEPT_DIR));
                }
                let (child, mut stdin) = login_shell(&path, &delivery.line, &delivery.input);
                if answer == Some(kept::NEED) {
                    std::io::Write::write_all(&mut stdin, &file.sent()).unwrap();
                }
                std::io::Write::write_all(&mut stdin, b"input\n").unwrap();
                // Under the supervisor the script reads no stdin, and stdin stays open (EOF
                // would stop it); without it, the script reads the rest of the channel's stdin.
                let supervised = supervision == Supervision::Supervised;
                let stdin = if supervised {
                    Some(stdin)
                } else {
                    drop(stdin);
                    None
                };
                let out = child.wait_with_output().unwrap();
                drop(stdin);
                let stdout = String::from_utf8(out.stdout).unwrap();
                let mut want = if supervised { expected.replace("in:input", "in:") } else { expected.to_string() };
                if let Some(answer) = answer {
                    want = format!("{answer}\n{want}");
                    let copy = std::fs::read(deploy_to.path().join(kept::KEPT_DIR).join(&file.id));
                    assert_eq!(copy.ok().as_deref(), Some(file.text.as_bytes()), "{shell}: the file is kept");
                }
                assert_eq!((out.status.code(), stdout.as_str()), (Some(7), want.as_str()), "{shell}, {supervision:?}, {answer:?}");
                assert_eq!(String::from_utf8(out.stderr).unwrap(), "err\n", "{shell}, {supervision:?}, {answer:?}");
            }
            ran.push(shell);
        }
        assert!(ran.contains(&"sh"), "{ran:?}");
    }

    /// The supervisor runs its script from `XTASK_DEPLOY_RUN` with the words of [`RUN_EXPORTED`]
    /// (as the keeper's jobs do: `plan::scripts` tests that).
    #[test]
    fn the_supervisor_runs_an_exported_script_as_run_exported_does() {
        let runner = RUN_EXPORTED.trim_start_matches("sh -c ").trim_matches('\'');
        assert!(SUPERVISOR.contains(&format!("run='{runner}'")), "{SUPERVISOR}");
    }

    #[test]
    fn the_command_line_is_short_and_holds_nothing_of_the_script() {
        let text = "echo secret-word; ".repeat(5_000);
        for supervision in [Supervision::None, Supervision::Supervised] {
            let at = KeptAt { deploy_to: "/srv/app", write: true };
            let delivery = delivery(&RemoteScript { name: "keeper", text: text.clone() }, supervision, Some(at));
            assert!(delivery.line.len() < 1024, "{} bytes: {}", delivery.line.len(), delivery.line);
            assert_eq!(delivery.line, bootstrap_line("keeper"));
            assert!(!delivery.line.contains("secret-word"));
        }
        assert_eq!(bootstrap_line("a b;$(x)"), bootstrap_line("a-bx"), "the name is a plain word");
        assert!(bootstrap().contains(&format!("*\"{SCRIPT_END}\")")), "the bootstrap checks for the end line");
    }

    #[test]
    fn a_script_cut_short_runs_nothing() {
        let script = RemoteScript { name: "test", text: "echo one\necho two\n".into() };
        let delivery = delivery(&script, Supervision::None, None);
        // Cut anywhere: after the length line, mid-way, one byte short of the end.
        for keep in [0, 2, 14, delivery.input.len() - 1] {
            let (child, stdin) = login_shell(std::path::Path::new("sh"), &delivery.line, &delivery.input[..keep]);
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(127), &b""[..]), "cut at {keep}");
        }
    }

    /// A kept file cut short on its way (a connection lost, Ctrl-C) runs nothing of the script,
    /// wherever it was cut, and is not kept.
    #[test]
    fn a_kept_file_cut_short_runs_nothing_and_is_not_kept() {
        let deploy_to = tempfile::tempdir().unwrap();
        std::fs::create_dir(deploy_to.path().join(".xtask-deploy")).unwrap();
        let marker = deploy_to.path().join("ran");
        let text = format!("set -u\nd=/srv/app\ntouch {}\n", quote(&marker.display().to_string()));
        let script = RemoteScript { name: "test", text };
        let body = body(&script, Supervision::None);
        let file = &*Box::leak(Box::new(kept::Kept::new(Box::leak(body.clone().into_boxed_str()))));
        let at = KeptAt { deploy_to: deploy_to.path().to_str().unwrap(), write: true };
        let delivery = delivery_with(&script, Supervision::None, Some((file, at)));
        let sent = file.sent();
        for keep in [sent.len() - 1, sent.len() - body.len() / 2, sent.len() - body.len() + 3] {
            let (child, mut stdin) = login_shell(std::path::Path::new("sh"), &delivery.line, &delivery.input);
            std::io::Write::write_all(&mut stdin, &sent[..keep]).unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(127), "cut at {keep}: {out:?}");
            assert!(!marker.exists(), "cut at {keep}: the script ran");
            assert!(!deploy_to.path().join(kept::KEPT_DIR).join(&file.id).exists(), "cut at {keep}: kept");
        }
    }

    /// `_i` (or `_w`) in the server's environment changes nothing: a script sent whole runs.
    #[test]
    fn the_bootstraps_values_come_from_the_deployer_only() {
        let script = RemoteScript { name: "test", text: "echo ran".into() };
        let delivery = delivery(&script, Supervision::None, None);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&delivery.line)
            .env("_i", "0123456789abcdef0123456789abcdef01234567")
            .env("_w", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &delivery.input).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "ran\n"));
    }

    /// A server without `awk` answers that it takes the script whole, and runs it whole.
    #[test]
    fn a_server_without_awk_is_sent_the_script_whole() {
        let bin = tempfile::tempdir().unwrap();
        for tool in ["sh", "head", "cat", "git", "mkdir", "printf"] {
            if let Some(path) = ["/bin", "/usr/bin"].iter().map(|dir| std::path::Path::new(dir).join(tool)).find(|p| p.exists()) {
                std::os::unix::fs::symlink(path, bin.path().join(tool)).unwrap();
            }
        }
        let script = RemoteScript { name: "test", text: "echo ran".into() };
        let body = body(&script, Supervision::None);
        let file = &*Box::leak(Box::new(kept::Kept::new(Box::leak(body.into_boxed_str()))));
        let at = KeptAt { deploy_to: "/nonexistent", write: false };
        let delivery = delivery_with(&script, Supervision::None, Some((file, at)));
        let mut child = std::process::Command::new(bin.path().join("sh"))
            .arg("-c")
            .arg(&delivery.line)
            .env("PATH", bin.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &delivery.input).unwrap();
        std::io::Write::write_all(&mut stdin, delivery.kept.as_ref().unwrap()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!((out.status.code(), stdout.as_ref()), (Some(0), format!("{}\nran\n", kept::WHOLE).as_str()));
    }

    #[test]
    fn a_command_run_from_the_environment_is_on_no_command_line() {
        let command = "sleep 43.25; : secret-word";
        let text = format!("{}\n{RUN_EXPORTED} &\nsleep 0.5\nwait\necho done", export_command(command));
        let (child, stdin) = spawn_here(&RemoteScript { name: "test", text }, Supervision::Supervised);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let running = crate::loopback::LoopbackServer::processes_mentioning("sleep 43.25");
        let seen = crate::loopback::LoopbackServer::processes_mentioning("secret-word");
        let _ = std::process::Command::new("pkill").args(["-f", "^sleep 43.25"]).status();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert!(running.iter().any(|(_, cmd)| cmd.starts_with("sleep 43.25")), "{running:?}");
        assert_eq!(seen, vec![], "the command's text is on a command line");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    }
}
