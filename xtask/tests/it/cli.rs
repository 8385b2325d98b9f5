//! The `xtask` binary as users run it, against a real loopback sshd: bad input ends with one
//! clear error and a non-zero exit; a deploy killed mid-push leaves nothing behind.

use std::fs;
use std::io::BufReader;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, incompressible, read_until, World};
use xtask_deploy::exit;

fn xtask(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.args(args).stdin(Stdio::null());
    command
}

fn deploy_cli(world: &World) -> Output {
    world.command(env!("CARGO_BIN_EXE_xtask"), &["deploy"]).output().unwrap()
}

/// Deploys once, breaks something with `break_it`, deploys again through the CLI, and checks
/// the failure: non-zero exit, one error paragraph containing `expected`, `current` untouched.
fn assert_refused(name: &str, break_it: impl FnOnce(&World), expected: &[&str]) {
    let world = World::new();
    world.setup();
    let before = world.deploy();
    break_it(&world);
    let output = deploy_cli(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{name}: deploy succeeded:\n{stderr}");
    let error = stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or_else(|| panic!("{name}: {stderr}"));
    for needle in expected {
        assert!(error.contains(needle), "{name}: `{needle}` not in the error:\n{error}");
    }
    assert!(stderr.trim_end().ends_with(error), "{name}: the error is not the last paragraph:\n{stderr}");
    assert_eq!(world.current(), Some(before.release.clone()), "{name}: current moved");
    assert_eq!(world.releases(), vec![before.release], "{name}: a release was left");
    assert_eq!(world.daemons(), vec![], "{name}: a daemon was left");
}

#[test]
fn a_mistyped_key_is_refused_with_the_file_and_key() {
    assert_refused(
        "mistyped key",
        |world| {
            world.edit_manifest(|text| {
                text.replace("[package.metadata.deploy]\n", "[package.metadata.deploy]\nkeep_release = 3\n")
            })
        },
        &["unknown field `keep_release`: did you mean `keep_releases`?", "Cargo.toml", "expected one of"],
    );
}

#[test]
fn a_wrongly_typed_value_is_refused_with_the_key_path() {
    assert_refused(
        "wrong type",
        |world| {
            let port = world.server.port();
            world.edit_manifest(|text| text.replace(&format!("port = {port}"), &format!("port = \"{port}\"")))
        },
        &["`package.metadata.deploy.servers[0].port`", "expected u16"],
    );
}

#[test]
fn malformed_toml_is_refused() {
    assert_refused(
        "malformed toml",
        |world| world.edit_manifest(|text| text.replace("deploy_to = ", "deploy_to = = ")),
        &["failed to read the manifest", "Cargo.toml:", "expected"],
    );
}

#[test]
fn a_config_without_servers_names_the_table_to_add() {
    assert_refused(
        "no servers",
        |world| {
            world.edit_manifest(|text| {
                let start = text.find("[[package.metadata.deploy.servers]]").unwrap();
                let end = text.find("[package.metadata.deploy.ssh]").unwrap();
                format!("{}{}", &text[..start], &text[end..])
            })
        },
        &["no servers", "[[package.metadata.deploy.servers]]"],
    );
}

#[test]
fn an_unreachable_host_fails_fast_with_what_to_check() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    assert_refused(
        "unreachable host",
        |world| {
            let port = world.server.port();
            world.edit_manifest(|text| text.replace(&format!("port = {port}"), &format!("port = {closed_port}")));
            world.app.commit_all("point at a closed port").unwrap();
        },
        &["cannot connect to", &format!("127.0.0.1:{closed_port}"), "check `host` and `port`"],
    );
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn a_changed_host_key_is_refused_with_the_fingerprint_and_the_fix() {
    assert_refused(
        "changed host key",
        |world| {
            let other = tempfile::tempdir().unwrap();
            let key = other.path().join("key");
            let status =
                Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
            assert!(status.success());
            let public = fs::read_to_string(key.with_extension("pub")).unwrap();
            let fields: Vec<&str> = public.split_whitespace().take(2).collect();
            let line = format!("[127.0.0.1]:{} {}\n", world.server.port(), fields.join(" "));
            fs::write(world.server.known_hosts(), line).unwrap();
        },
        &["host key check failed", "differs", "SHA256:", "ssh-keygen -R"],
    );
}

#[test]
fn an_unknown_host_key_is_refused_with_how_to_trust_it() {
    assert_refused(
        "unknown host key",
        |world| fs::write(world.server.known_hosts(), "").unwrap(),
        &["is not in", "SHA256:", "ssh-keyscan -p"],
    );
}

#[test]
fn a_missing_known_hosts_file_is_refused_with_a_command_that_fills_it() {
    let world = World::new();
    let file = world.server.dir().join("keys/known_hosts");
    world.edit_manifest(|text| {
        let line = text.lines().find(|line| line.starts_with("known_hosts = ")).unwrap().to_string();
        text.replace(&line, &format!("known_hosts = {:?}", file.display().to_string()))
    });
    let setup = || world.command(env!("CARGO_BIN_EXE_xtask"), &["deploy-setup"]).output().unwrap();
    let refused = setup();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(i32::from(xtask_deploy::exit::CONNECT)), "{stderr}");
    let (port, user, file) = (world.server.port(), world.server.user(), file.display());
    let dir = world.server.dir().join("keys");
    for needle in [
        format!("is not in `{file}` (the file does not exist); its key fingerprint is SHA256:"),
        format!("`mkdir -p -m 700 {} && ssh-keyscan -p {port} 127.0.0.1 >> {file}`", dir.display()),
        format!("`ssh -o UserKnownHostsFile={file} -p {port} {user}@127.0.0.1`"),
    ] {
        assert!(stderr.contains(&needle), "`{needle}` not in:\n{stderr}");
    }
    // The advice is true: run as printed, it trusts the server in the configured file.
    let advice = stderr.split("trust it with `").nth(1).and_then(|rest| rest.split('`').next()).unwrap();
    let ran = Command::new("sh").arg("-c").arg(advice).output().unwrap();
    assert!(ran.status.success(), "{advice}: {ran:?}");
    let trusted = setup();
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
}

#[test]
fn a_dirty_worktree_is_refused_naming_the_files() {
    assert_refused(
        "dirty worktree",
        |world| world.app.write("src/main.rs", "fn main() { todo!() }\n").unwrap(),
        &["uncommitted changes", "`src/main.rs`", "--allow-dirty"],
    );
}

/// How a test interrupts a deploy in the middle of its push.
#[derive(Clone, Copy, Debug)]
enum Interruption {
    /// A signal to the deploying process.
    Signal(&'static str),
    /// SIGKILL to the server-side sshd process of the deploy's connection.
    ConnectionCut,
}

#[test]
fn a_deploy_killed_mid_push_leaves_no_daemon_and_current_untouched() {
    let stopped = interrupt_mid_push(Interruption::Signal("KILL"));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&stopped.exit), Some(9));
}

#[test]
fn a_deploy_interrupted_by_ctrl_c_mid_push_says_so_ends_its_events_and_exits_130() {
    let stopped = interrupt_mid_push(Interruption::Signal("INT"));
    assert_stopped_by(&stopped, "SIGINT", exit::INTERRUPTED);
}

#[test]
fn a_deploy_terminated_mid_push_says_so_ends_its_events_and_exits_143() {
    let stopped = interrupt_mid_push(Interruption::Signal("TERM"));
    assert_stopped_by(&stopped, "SIGTERM", exit::TERMINATED);
}

#[test]
fn a_connection_cut_mid_push_leaves_no_daemon_and_current_untouched() {
    let stopped = interrupt_mid_push(Interruption::ConnectionCut);
    assert_eq!(stopped.exit.code(), Some(i32::from(exit::REMOTE)), "{}", stopped.stderr);
    assert!(stopped.stderr.contains("error:"), "the deployer should report the lost connection:\n{}", stopped.stderr);
}

/// How a deploy under test ended.
struct Stopped {
    exit: std::process::ExitStatus,
    /// Its `--json` events.
    events: Vec<serde_json::Value>,
    stderr: String,
    /// From the interruption to the exit.
    took: Duration,
}

/// `cargo xtask deploy --json` of `world`'s app, its stdout and stderr piped.
fn spawn_json_deploy(world: &World) -> std::process::Child {
    let manifest = world.app.manifest_path();
    let mut command = xtask(&["deploy", "--json", "--manifest-path", manifest.to_str().unwrap()]);
    command.stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap()
}

/// Sends `signal` (`INT`, `KILL`) to process `pid`.
fn send(signal: &str, pid: u32) {
    assert!(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success());
}

impl Stopped {
    /// Waits for `child`, stopped at `interrupted`, to end. `stderr`: its stderr when it was
    /// taken to be read as the child ran, with what was read so far.
    fn wait(
        mut child: std::process::Child,
        stderr: Option<(BufReader<std::process::ChildStderr>, String)>,
        interrupted: std::time::Instant,
    ) -> Stopped {
        let mut text = String::new();
        if let Some((mut rest, seen)) = stderr {
            text = seen;
            std::io::Read::read_to_string(&mut rest, &mut text).unwrap();
        }
        let stdout = child.stdout.take().unwrap();
        let exit = child.wait().unwrap();
        let took = interrupted.elapsed();
        if let Some(mut rest) = child.stderr.take() {
            std::io::Read::read_to_string(&mut rest, &mut text).unwrap();
        }
        let events = std::io::read_to_string(stdout).unwrap();
        let events = events.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        Stopped { exit, events, stderr: text, took }
    }
}

/// A deploy stopped by `signal` (`SIGINT`) ended promptly with the exit code `code`, its error
/// naming the signal and what it left, and its JSON events ending with `summary` and `exit`.
fn assert_stopped_by(stopped: &Stopped, signal: &str, code: u8) {
    let stderr = &stopped.stderr;
    eprintln!("{signal}: the deployer exited {:?} after it, saying:\n{stderr}", stopped.took);
    assert_eq!(stopped.exit.code(), Some(i32::from(code)), "{stderr}");
    assert!(stopped.took < Duration::from_secs(3), "stopping took {:?}:\n{stderr}", stopped.took);
    let message = format!("error: interrupted ({signal}): no server was changed");
    assert!(stderr.contains(&message), "no `{message}`:\n{stderr}");
    assert!(stderr.trim_end().lines().last().unwrap().starts_with("error: interrupted"), "{stderr}");
    let names: Vec<&str> = stopped.events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(names[names.len() - 3..], ["failed", "summary", "exit"], "{names:?}");
    let summary = &stopped.events[names.len() - 2];
    assert_eq!((summary["outcome"].as_str(), summary["exit_code"].as_u64()), (Some("interrupted"), Some(code.into())));
    assert_eq!(summary["servers"][0]["status"], "unchanged");
    assert_eq!(summary["servers"][0]["error"], serde_json::Value::Null, "the cut connection is no server's fault");
    let end = &stopped.events[names.len() - 1];
    assert_eq!((end["command"].as_str(), end["exit_code"].as_u64()), (Some("deploy"), Some(code.into())));
    assert!(end["error"].as_str().unwrap().starts_with(&format!("interrupted ({signal})")), "{end}");
}

/// Starts a deploy (`--json`) of a large commit, interrupts it as soon as the push starts, and
/// checks that the server is left as it was and the next deploy just works.
fn interrupt_mid_push(how: Interruption) -> Stopped {
    let world = World::new();
    world.setup();
    let before = world.deploy();
    let big_sha = world.commit("assets/big.bin", &incompressible(12_000_000, 7));

    let mut child = spawn_json_deploy(&world);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let seen = read_until(&mut stderr, "Pushing");
    assert!(!world.daemons().is_empty(), "the daemon should be running during the push");
    let targets = match how {
        Interruption::Signal(signal) => vec![(signal, child.id())],
        Interruption::ConnectionCut => world.server.session_pids().into_iter().map(|pid| ("KILL", pid)).collect(),
    };
    assert!(!targets.is_empty(), "{how:?}: nothing to interrupt");
    let interrupted = std::time::Instant::now();
    for (signal, pid) in targets {
        send(signal, pid);
    }
    let stopped = Stopped::wait(child, Some((stderr, seen)), interrupted);
    assert!(!stopped.exit.success(), "{how:?} did not stop the deploy");
    assert!(!stopped.stderr.contains("Pushed"), "the push had finished before {how:?}:\n{}", stopped.stderr);

    assert_eq!(world.daemons_after(Duration::from_secs(10)), vec![], "daemon left after {how:?}");
    // The lock went with the connection: its keeper saw its stdin close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.locked() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!world.locked(), "the lock was left after {how:?}");
    assert_eq!(world.current(), Some(before.release.clone()));
    assert_eq!(world.releases(), vec![before.release.clone()]);

    // The next deploy needs no manual step.
    let output = deploy_cli(&world);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!world.locked(), "the lock was not released");
    let current = world.current().unwrap();
    assert_ne!(current, before.release);
    assert_eq!(world.revision_of(&current), big_sha);
    assert_eq!(world.daemons(), vec![]);
    stopped
}

#[test]
fn a_deploy_terminated_in_its_build_stops_the_build_and_changes_no_server() {
    let world = World::new();
    world.setup();
    let before = world.deploy();
    let (child, build) = deploy_with_a_slow_build(&world, "");
    let interrupted = std::time::Instant::now();
    // To the deployer alone, as a CI runner or a service manager sends it.
    send("TERM", child.id());
    let stopped = Stopped::wait(child, None, interrupted);
    assert_stopped_by(&stopped, "SIGTERM", exit::TERMINATED);
    // Signalled before the deployer exited; the kernel may take a moment to end them.
    for pid in build {
        assert!(support::wait_until(Duration::from_secs(2), || !running(pid)), "the build's process {pid} still runs");
    }
    assert_eq!(world.current(), Some(before.release.clone()));
    assert_eq!(world.releases(), vec![before.release]);
    assert!(support::wait_until(Duration::from_secs(10), || !world.locked()), "the lock was left");
    assert_eq!(world.daemons(), vec![]);
}

#[test]
fn a_second_signal_ends_the_deployer_at_once_when_its_build_ignores_the_first() {
    let world = World::new();
    world.setup();
    let (mut child, build) = deploy_with_a_slow_build(&world, "trap '' INT TERM; ");
    send("TERM", child.id());
    // The build ignores it, and the deployer waits for its build.
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "the deployer did not wait for its build");
    let again = std::time::Instant::now();
    send("TERM", child.id());
    let stopped = Stopped::wait(child, None, again);
    assert_eq!(stopped.exit.code(), Some(i32::from(exit::TERMINATED)), "{}", stopped.stderr);
    assert!(stopped.took < Duration::from_secs(2), "the second signal took {:?}", stopped.took);
    // Signalled before the deployer exited; the kernel may take a moment to end them.
    for pid in build {
        assert!(support::wait_until(Duration::from_secs(2), || !running(pid)), "the build's process {pid} still runs");
    }
    // At once: no summary, no exit event.
    let names: Vec<&str> = stopped.events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert!(!names.contains(&"summary") && !names.contains(&"exit"), "{names:?}");
    assert!(support::wait_until(Duration::from_secs(10), || !world.locked()), "the lock was left");
}

/// Starts a deploy (`--json`) of `world`'s app whose build command runs `prefix` then a child
/// of its own for a minute (as `cargo build` runs rustc); returns it once the build runs, with
/// the build's process and its child.
fn deploy_with_a_slow_build(world: &World, prefix: &str) -> (std::process::Child, Vec<u32>) {
    let pids = world.server.dir().join("build-pids");
    fs::create_dir_all(&pids).unwrap();
    let dir = pids.display();
    let build = format!(
        "{prefix}echo $$ > '{dir}/build'; sleep 60 & echo $! > '{dir}/new' && mv '{dir}/new' '{dir}/child'; wait"
    );
    let build = xtask_deploy::loopback::toml_string(&format!("sh -c {}", xtask_deploy::shell::quote(&build)));
    world.edit_manifest(|text| {
        text.replace("[package.metadata.deploy]\n", &format!("[package.metadata.deploy]\nbuild = [{build}]\n"))
    });
    world.app.commit_all("a slow build").unwrap();
    let child = spawn_json_deploy(world);
    assert!(support::wait_until(Duration::from_secs(30), || pids.join("child").exists()), "the build did not start");
    let read = |name: &str| fs::read_to_string(pids.join(name)).unwrap().trim().parse::<u32>().unwrap();
    (child, ["build", "child"].map(read).into())
}

#[test]
fn a_deploy_interrupted_while_connecting_stops_at_once() {
    // A server that takes the connection and never says a word: the SSH handshake would wait
    // for it until `timeouts.connect`.
    let world = World::with_config("timeouts = { connect = 60 }");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    world.edit_manifest(|text| text.replace(&format!("port = {}\n", world.server.port()), &format!("port = {port}\n")));
    world.app.commit_all("a server that never answers").unwrap();
    let mut child = spawn_json_deploy(&world);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let seen = read_until(&mut stderr, "Deploying");
    std::thread::sleep(Duration::from_millis(300));
    let interrupted = std::time::Instant::now();
    send("INT", child.id());
    let stopped = Stopped::wait(child, Some((stderr, seen)), interrupted);
    assert_stopped_by(&stopped, "SIGINT", exit::INTERRUPTED);
}

#[test]
fn on_a_terminal_the_servers_line_shows_the_push_progress() {
    let world = World::new();
    let _relay = world.behind_a_slow_link();
    world.setup();
    world.commit_big();
    // `script` runs the deploy on a terminal of its own and copies what it drew to stdout.
    let manifest = world.app.manifest_path();
    let deploy = format!("{} deploy --manifest-path {}", env!("CARGO_BIN_EXE_xtask"), support::quote_path(&manifest));
    let output = Command::new("script").args(["-qec", &deploy, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let drawn = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{drawn}");
    // The server's line, redrawn in place: bytes, the pack's objects, the rate; then the end.
    let lines: Vec<&str> = drawn.split(['\r', '\n', '\x1b']).map(str::trim_end).collect();
    let shown = |verb: &str, tail: &str| {
        lines.iter().any(|line| line.contains(verb) && line.contains(" objects") && line.ends_with(tail))
    };
    assert!(shown("  Pushing ", " MiB/s"), "no progress line:\n{drawn}");
    assert!(shown("  Sent ", " MiB, 9 objects; the server stores them"), "no end of the pack:\n{drawn}");
}

/// Whether process `pid` runs (exists, and is not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

#[test]
fn deploy_setup_through_the_cli_is_idempotent() {
    let world = World::new();
    let manifest = world.app.manifest_path();
    let args = ["deploy-setup", "--manifest-path", manifest.to_str().unwrap()];
    let first = xtask(&args).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stderr).contains("Created"));
    let second = xtask(&args).output().unwrap();
    assert!(second.status.success());
    let second_stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second_stderr.contains("Created"), "{second_stderr}");
}

/// The README's first command.
#[test]
fn the_demo_deploys_twice_and_stops_its_server() {
    let output = xtask(&["demo"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.matches("/  REVISION ").count(), 2, "two releases listed:\n{stdout}");
    assert_eq!(stdout.matches("deployed as release").count(), 2, "{stdout}");
    assert!(stdout.contains("current -> "), "{stdout}");
    let app = stdout.split('`').nth(1).expect("the demo names its app dir");
    let dir = app.strip_suffix("/hello").expect("the app lives in the server's dir");
    let port = stdout.split("127.0.0.1:").nth(1).and_then(|rest| rest.split(',').next()).unwrap();
    assert!(xtask_deploy::loopback::LoopbackServer::processes_mentioning(dir).is_empty(), "demo left processes");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err(), "sshd still listens");
    assert!(!std::path::Path::new(dir).exists(), "the demo's temp dir was not removed");
}

/// A real `ssh-agent` on a socket in a temp dir, stopped by pid when dropped.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent").arg("-D").arg("-a").arg(&socket).stdout(Stdio::null()).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "ssh-agent did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { child, socket, _dir: dir }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn without_an_identity_the_agent_authenticates_and_no_agent_is_a_clear_error() {
    let world = World::new();
    world
        .edit_manifest(|text| text.lines().filter(|line| !line.starts_with("identity")).collect::<Vec<_>>().join("\n"));
    world.app.commit_all("authenticate with the agent").unwrap();
    let empty_home = tempfile::tempdir().unwrap();
    let manifest = world.app.manifest_path();
    let run = |command: &str, agent: Option<&Agent>| {
        let mut cmd = xtask(&[command, "--manifest-path", manifest.to_str().unwrap()]);
        cmd.env("HOME", empty_home.path()).env_remove("SSH_AUTH_SOCK");
        if let Some(agent) = agent {
            cmd.env("SSH_AUTH_SOCK", &agent.socket);
        }
        cmd.output().unwrap()
    };

    let refused = run("deploy-setup", None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("set `ssh.identity`, give the key in `XTASK_DEPLOY_SSH_KEY`, or load a key into ssh-agent"),
        "{stderr}"
    );

    let agent = Agent::start();
    let added = Command::new("ssh-add")
        .arg(world.server.identity())
        .env("SSH_AUTH_SOCK", &agent.socket)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    for command in ["deploy-setup", "deploy"] {
        let output = run(command, Some(&agent));
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(
        world.revision_of(&world.current().unwrap()),
        world.app.repo().head().unwrap().target().unwrap().to_string()
    );
}

#[test]
fn a_hashed_known_hosts_entry_of_another_key_type_is_honoured() {
    let world = World::new();
    // An older client recorded the server's ECDSA key, and Debian and Ubuntu hash known_hosts
    // by default (HashKnownHosts yes): the session must ask the server for that key type.
    let ecdsa = fs::read_to_string(world.server.dir().join("host_ecdsa.pub")).unwrap();
    let fields: Vec<&str> = ecdsa.split_whitespace().take(2).collect();
    fs::write(world.server.known_hosts(), format!("[127.0.0.1]:{} {}\n", world.server.port(), fields.join(" ")))
        .unwrap();
    let status = Command::new("ssh-keygen").arg("-H").arg("-f").arg(world.server.known_hosts()).output().unwrap();
    assert!(status.status.success());
    let hashed = fs::read_to_string(world.server.known_hosts()).unwrap();
    assert!(hashed.starts_with("|1|") && hashed.contains("ecdsa-sha2-nistp256"), "{hashed}");
    let manifest = world.app.manifest_path();
    let output = xtask(&["deploy-setup", "--manifest-path", manifest.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Runs `command` to its end with stdout and stderr in `log`; returns its exit status and the
/// peak resident set of that one process in KiB (`VmHWM`, read while it runs: the kernel's
/// figure after exit would include its children, git among them).
fn run_measured(mut command: Command, log: &std::path::Path) -> (std::process::ExitStatus, u64) {
    let out = fs::File::create(log).unwrap();
    let mut child = command.stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    loop {
        // VmHWM only grows; the last read before the exit is the peak, but for the last 20 ms.
        let status = fs::read_to_string(&status_file).unwrap_or_default();
        let hwm = status.lines().find_map(|line| line.strip_prefix("VmHWM:"));
        if let Some(kib) = hwm.and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit, peak_kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_step_printing_without_end_leaves_the_deployers_memory_bounded() {
    // Issue 18, finding 6: a hook running `yes` grew the deployer from 20 MB to 92 MB in 12 s.
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nafter_update = [{ remote = \"yes | head -c 200000000; exit 3\" }]",
    );
    world.setup();
    let log = world.server.dir().join("deploy.log");
    let manifest = world.app.manifest_path();
    let started = std::time::Instant::now();
    let (status, peak_kib) = run_measured(xtask(&["deploy", "--manifest-path", manifest.to_str().unwrap()]), &log);
    let output = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(i32::from(xtask_deploy::exit::REMOTE)), "{output}");
    assert!(peak_kib <= 64 * 1024, "peak RSS {peak_kib} KiB");
    // The error ends with the end of the hook's output, and says how much of it was not kept.
    let error = &output[output.find("\nerror: ").unwrap_or_else(|| panic!("{output}"))..];
    assert!(error.contains("after_update"), "{error}");
    let said = error.split("[xtask-deploy: ").nth(1).and_then(|rest| rest.split(' ').next());
    let dropped: u64 = said.and_then(|number| number.parse().ok()).unwrap_or_else(|| panic!("{output}"));
    eprintln!(
        "200 MB of hook output: {:?}, deployer's peak RSS {} MiB, {dropped} bytes dropped",
        started.elapsed(),
        peak_kib / 1024
    );
    assert!((199_900_000..200_000_000).contains(&dropped), "{dropped} bytes dropped");
    assert!(error.contains("bytes of output dropped here; the first 8 KiB and the last 16 KiB are kept"), "{error}");
    assert!(error.len() < 64 * 1024, "the error holds {} bytes", error.len());
}

#[test]
fn a_300_mb_artifact_goes_through_without_the_deployer_holding_it() {
    let world = World::with_config(r#"artifacts = ["target/big.bin"]"#);
    let big = world.app.dir().join("target/big.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    {
        use std::io::Write;
        // 300 MiB that zlib compresses quickly (a 16 KiB period), so the test takes seconds.
        let block = incompressible(16 * 1024, 3);
        let mut file = std::io::BufWriter::new(fs::File::create(&big).unwrap());
        for _ in 0..300 * 64 {
            file.write_all(block.as_bytes()).unwrap();
        }
    }
    world.setup();
    let log = world.server.dir().join("deploy.log");
    let (status, peak_kib) = run_measured(world.command(env!("CARGO_BIN_EXE_xtask"), &["deploy"]), &log);
    let output = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{output}");
    eprintln!("deployer's peak RSS with a 300 MiB artifact: {} MiB", peak_kib / 1024);
    assert!(peak_kib <= 64 * 1024, "peak RSS {peak_kib} KiB:\n{output}");
    let deployed = world.deploy_to.join("current/target/big.bin");
    assert_eq!(fs::metadata(&deployed).unwrap().len(), 300 << 20);
    let same = Command::new("cmp").arg(&big).arg(&deployed).status().unwrap();
    assert!(same.success(), "the artifact on the server differs from the local one");
}

#[test]
fn a_deploy_refused_before_any_server_prints_only_its_error() {
    // Issue 27, item 11: a dirty worktree printed `Summary ...: unchanged; not reached` and
    // `Failed deploy ... in 0.00s` before the error, as if the servers had been tried.
    let world = World::new();
    world.setup();
    world.deploy();
    fs::write(world.app.dir().join("src/main.rs"), "fn main() { /* not committed */ }\n").unwrap();
    let output = deploy_cli(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(exit::LOCAL)), "{stderr}");
    assert!(stderr.trim_end().lines().count() == 1 && stderr.starts_with("error: "), "more than the error:\n{stderr}");
    assert!(stderr.contains("uncommitted changes"), "{stderr}");

    // A build that fails runs before any server is locked too: its lines, then the error.
    world.app.commit_all("commit it").unwrap();
    world.edit_manifest(|text| {
        text.replace("[package.metadata.deploy]\n", "[package.metadata.deploy]\nbuild = [\"false\"]\n")
    });
    world.app.commit_all("a build that fails").unwrap();
    let output = deploy_cli(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(exit::LOCAL)), "{stderr}");
    assert!(
        !stderr.contains("Summary") && !stderr.contains("Failed deploy"),
        "a summary of servers never tried:\n{stderr}"
    );
    assert!(stderr.trim_end().lines().last().unwrap().starts_with("error: "), "{stderr}");
}

#[test]
fn deploy_check_with_an_unknown_host_key_says_to_run_it_again_not_to_deploy() {
    // Issue 27, item 11: deploy-check's host-key failure ended "and deploy again".
    let world = World::new();
    world.setup();
    fs::write(world.server.known_hosts(), "").unwrap();
    let output = world.command(env!("CARGO_BIN_EXE_xtask"), &["deploy-check"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("ssh-keyscan -p") && text.contains("and run the command again"), "{text}");
    assert!(!text.contains("deploy again"), "{text}");
}

/// Issue 27, item 4: a `deploy_to` with a `..` part took the lock and started the daemon
/// before failing with "no such repository". Now the config is refused with exit 4, before
/// any server is reached.
#[test]
fn a_deploy_to_with_dot_dot_is_refused_at_load_with_exit_4() {
    let world = World::new();
    let written = format!("{}/../other", world.deploy_to.display());
    world.edit_manifest(|manifest| {
        let line =
            format!("deploy_to = {}", xtask_deploy::loopback::toml_string(&world.deploy_to.display().to_string()));
        assert!(manifest.contains(&line), "{manifest}");
        manifest.replacen(&line, &format!("deploy_to = {}", xtask_deploy::loopback::toml_string(&written)), 1)
    });
    let output = deploy_cli(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(exit::CONFIG)), "{stderr}");
    assert!(
        stderr.contains(&format!("`package.metadata.deploy.deploy_to` is `{written}`, which has a `.` or `..` part")),
        "{stderr}"
    );
    assert!(!world.server.dir().join("srv/other").exists(), "a server was touched");
}

/// Issue 27, item 7: `cd xtask && cargo xtask deploy-check` said "no [package.metadata.deploy]
/// table in .../xtask/Cargo.toml: add one". Given an app whose workspace holds an `xtask`
/// package, when I run a command from `xtask/` with no `--manifest-path`, then the workspace
/// root's table is read.
#[test]
fn run_from_the_xtask_directory_the_workspace_roots_deploy_table_is_read() {
    let world = World::new();
    world.edit_manifest(|manifest| format!("{manifest}\n[workspace]\nmembers = [\"xtask\"]\n"));
    let dir = world.app.dir().join("xtask");
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("Cargo.toml"), "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .unwrap();
    fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    world.app.commit_all("an xtask package").unwrap();
    world.setup();
    let output = xtask(&["deploy-check"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", world.app.dir().join("target"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(i32::from(exit::SUCCESS)), "{stdout}{stderr}");
    assert!(!stderr.contains("no `[package.metadata.deploy]` table"), "{stderr}");
}
