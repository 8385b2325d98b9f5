//! The fault matrix: a deploy (the real CLI, against the loopback sshd) is held at each phase,
//! then either killed with SIGKILL, cut off (the server-side sshd processes of its connection
//! killed), or sent SIGINT or SIGTERM (it must stop within 2 s, exit 130 or 143, and say what
//! it left, which the checks below find). After each: `current` points at the old, complete
//! release (after the switch and before the deploy was confirmed, the server went back to it
//! by itself, ran the restart hook for it and marked the new one bad), no process of the
//! deploy runs on the server within a few seconds, the lock is released, no unfinished release
//! is left, and the next deploy succeeds without any manual step. Each test is one column of
//! the matrix, for one transport and one fault; it prints its rows and writes them to
//! `$CARGO_TARGET_TMPDIR/fault-matrix-*.md`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{wait_until, Hold, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    DaemonStart,
    MidPush,
    Extracting,
    BeforeSwitch,
    /// In an `after_publish` hook: switched, not yet confirmed.
    AfterSwitch,
    /// In the health check: switched, not yet confirmed.
    HealthCheck,
}

const PHASES: [Phase; 7] = [
    Phase::Connecting,
    Phase::DaemonStart,
    Phase::MidPush,
    Phase::Extracting,
    Phase::BeforeSwitch,
    Phase::AfterSwitch,
    Phase::HealthCheck,
];

/// The phases a frozen link is held at: every one after the lock is taken (the deployer beats
/// from then on, and hears the silence). While it connects, nothing is on the server yet, and
/// the deployer gives up at `timeouts.connect`.
const FROZEN_PHASES: [Phase; 6] = [
    Phase::DaemonStart,
    Phase::MidPush,
    Phase::Extracting,
    Phase::BeforeSwitch,
    Phase::AfterSwitch,
    Phase::HealthCheck,
];

/// An `after_publish` hook that records each restart: the release and whether it is a rollback.
const RECORD_RESTART: &str = r#"echo "$RELEASE ${ROLLBACK:-0}" >> "$DEPLOY_TO/shared/restarts""#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The deploying process gets SIGKILL.
    Kill,
    /// The SSH connection is cut from the server's side (its sshd processes killed).
    Cut,
    /// The deploying process gets SIGINT (Ctrl-C): it stops, says where it left the servers,
    /// and exits 130.
    Interrupt,
    /// The deploying process gets SIGTERM: as SIGINT, exit 143.
    Terminate,
    /// The link stops carrying packets, both ways, without closing (a relay in front of the
    /// sshd stops forwarding): the server hears nothing for `timeouts.silence` (5 s here) and
    /// ends the deploy by itself; the deployer hears nothing back as long, and gives up.
    Freeze,
}

#[test]
fn daemon_transport_deployer_killed_at_each_phase() {
    column("daemon", Fault::Kill);
}

#[test]
fn daemon_transport_connection_cut_at_each_phase() {
    column("daemon", Fault::Cut);
}

#[test]
fn daemon_transport_deployer_interrupted_at_each_phase() {
    column("daemon", Fault::Interrupt);
}

#[test]
fn daemon_transport_link_frozen_at_each_phase() {
    column("daemon", Fault::Freeze);
}

#[test]
fn exec_transport_link_frozen_at_each_phase() {
    column("exec", Fault::Freeze);
}

#[test]
fn exec_transport_deployer_terminated_at_each_phase() {
    column("exec", Fault::Terminate);
}

#[test]
fn exec_transport_deployer_killed_at_each_phase() {
    column("exec", Fault::Kill);
}

#[test]
fn exec_transport_connection_cut_at_each_phase() {
    column("exec", Fault::Cut);
}

/// Which SSH server the deploy reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Software {
    /// OpenSSH's sshd, as root.
    OpenSsh,
    /// Dropbear, as a non-root user (issue 31): the dead man's switch holds there too.
    Dropbear,
}

/// Dropbear's rows: a deployer killed, and its connection cut, in an `after_publish` hook
/// (switched, not confirmed), with either transport (the daemon one pushes through `git
/// receive-pack` on dropbear, see `tests/it/dropbear.rs`).
#[test]
fn dropbear_deployer_killed_or_cut_after_the_switch() {
    for transport in ["daemon", "exec"] {
        for fault in [Fault::Kill, Fault::Cut] {
            println!("{}", case(Software::Dropbear, transport, Phase::AfterSwitch, fault));
        }
    }
}

fn column(transport: &str, fault: Fault) {
    let mut table = format!(
        "| transport `{transport}`, {fault:?} at | current after | processes gone after | lock | next deploy |\n\
         | --- | --- | --- | --- | --- |\n"
    );
    for phase in PHASES {
        if phase == Phase::DaemonStart && transport == "exec" {
            table.push_str(&format!("| {phase:?} | (no daemon with `exec`) | | | |\n"));
            continue;
        }
        if fault == Fault::Freeze && !FROZEN_PHASES.contains(&phase) {
            table.push_str(&format!("| {phase:?} | (nothing on the server yet: `timeouts.connect`) | | | |\n"));
            continue;
        }
        table.push_str(&case(Software::OpenSsh, transport, phase, fault));
    }
    println!("{table}");
    let file = format!("{}/fault-matrix-{transport}-{fault:?}.md", env!("CARGO_TARGET_TMPDIR"));
    fs::write(file, &table).unwrap();
}

/// One cell: holds a deploy at `phase`, applies `fault`, checks what is left, and returns the
/// table row.
fn case(software: Software, transport: &str, phase: Phase, fault: Fault) -> String {
    let name = format!("{software:?}/{transport}/{phase:?}/{fault:?}");
    let mut config = format!("transport = \"{transport}\"");
    if fault == Fault::Freeze {
        // A push under way gets `timeouts.push` on top of the silence on the server.
        config.push_str("\ntimeouts = { silence = 5, push = 10 }");
    }
    let world = match software {
        Software::OpenSsh => World::with_config(&config),
        Software::Dropbear => {
            let forwarding = xtask_deploy::loopback::Dropbear { forwarding: true };
            World::on_dropbear(std::path::Path::new("/bin/sh"), &config, forwarding)
        }
    };
    let hold = Hold::new(&world);
    let mut relay = None;
    if phase == Phase::Connecting || fault == Fault::Freeze {
        let started = Relay::start(world.server.port());
        // The deploy goes through the relay, which the server's key is trusted behind.
        world.route_through(started.port);
        relay = Some(started);
    }
    match phase {
        Phase::Connecting => {}
        Phase::DaemonStart => hold.install_git_shim(&world, "daemon"),
        Phase::Extracting => hold.install_git_shim(&world, "archive"),
        Phase::BeforeSwitch | Phase::AfterSwitch | Phase::HealthCheck => {
            let held = format!("{{ remote = \"{}\" }}", hold.fragment());
            let record = format!("{{ remote = '{RECORD_RESTART}' }}");
            let tables = match phase {
                Phase::BeforeSwitch => format!("[package.metadata.deploy.hooks]\nbefore_publish = [{held}]\n"),
                Phase::AfterSwitch => format!("[package.metadata.deploy.hooks]\nafter_publish = [{record}, {held}]\n"),
                _ => format!(
                    "[package.metadata.deploy.hooks]\nafter_publish = [{record}]\n\
                     [package.metadata.deploy.healthcheck]\nremote = \"{}\"\n",
                    hold.fragment()
                ),
            };
            let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
            world.commit("Cargo.toml", &format!("{manifest}\n{tables}"));
        }
        Phase::MidPush => {}
    }
    world.setup();
    if phase == Phase::MidPush {
        let hook = world.deploy_to.join("repo/hooks/pre-receive");
        fs::write(&hook, format!("#!/bin/sh\n{}\ncat >/dev/null\n", hold.fragment())).unwrap();
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let old = world.deploy();
    let new_sha = world.commit("src/main.rs", &format!("fn main() {{ println!(\"{name}\"); }}\n"));

    hold.arm();
    if let (Some(relay), Phase::Connecting) = (&relay, phase) {
        relay.mode.store(HOLD, Ordering::SeqCst);
    }
    let mut child = spawn_deploy(&world);
    let held = match (&relay, phase) {
        (Some(relay), Phase::Connecting) => relay.wait_held(Duration::from_secs(30)),
        _ => hold.wait_held(Duration::from_secs(30)),
    };
    if !held {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!("{name}: the deploy never reached the point:\n{}", String::from_utf8_lossy(&output.stderr));
    }

    let faulted = Instant::now();
    match (fault, &relay) {
        (Fault::Kill, _) => child.kill().unwrap(),
        (Fault::Interrupt | Fault::Terminate, _) => {
            let signal = if fault == Fault::Interrupt { "-INT" } else { "-TERM" };
            assert!(Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap().success());
        }
        (Fault::Freeze, Some(relay)) => relay.mode.store(FREEZE, Ordering::SeqCst),
        (Fault::Freeze, None) => unreachable!("a frozen link goes through the relay"),
        (Fault::Cut, Some(relay)) => relay.mode.store(CUT, Ordering::SeqCst),
        (Fault::Cut, None) => {
            let sessions = world.server.session_pids();
            assert!(!sessions.is_empty(), "{name}: no SSH connection to cut");
            for pid in sessions {
                Command::new("kill").arg("-KILL").arg(pid.to_string()).status().unwrap();
            }
        }
    }
    let output = child.wait_with_output().unwrap();
    let exited_after = faulted.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "{name}: the deploy succeeded despite the fault:\n{stderr}");
    if fault == Fault::Cut {
        assert!(stderr.contains("error:"), "{name}: a cut connection must be reported:\n{stderr}");
    }
    if fault == Fault::Freeze {
        eprintln!("{name}: the deployer gave up {exited_after:?} after the link froze");
        assert!(stderr.contains("its link is down"), "{name}: the silent link must be named:\n{stderr}");
        assert!(exited_after < Duration::from_secs(15), "{name}: it took {exited_after:?} to give up:\n{stderr}");
        // The server ends the deploy by itself once it has heard nothing for 5 s.
        assert!(wait_until(Duration::from_secs(20), || !world.locked()), "{name}: the lock was left:\n{stderr}");
    }
    if let Some((signal, code)) = match fault {
        Fault::Interrupt => Some(("SIGINT", xtask_deploy::exit::INTERRUPTED)),
        Fault::Terminate => Some(("SIGTERM", xtask_deploy::exit::TERMINATED)),
        _ => None,
    } {
        eprintln!("{name}: the deployer exited {exited_after:?} after {signal}");
        assert_eq!(output.status.code(), Some(i32::from(code)), "{name}:\n{stderr}");
        assert!(exited_after < Duration::from_secs(2), "{name}: it took {exited_after:?} to stop:\n{stderr}");
        // What it says the servers are left with is what the checks below find.
        let state = match phase {
            Phase::Connecting | Phase::DaemonStart | Phase::MidPush => "no server was changed",
            Phase::Extracting | Phase::BeforeSwitch => "no server switched `current`; each server removes",
            // Exactly: the switch's own output said so (no "may have").
            Phase::AfterSwitch | Phase::HealthCheck => "went live on root@127.0.0.1",
        };
        let error = stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or_default();
        assert!(error.starts_with(&format!("error: interrupted ({signal})")), "{name}:\n{stderr}");
        assert!(error.contains(state), "{name}: not `{state}`:\n{stderr}");
    }

    // Whatever was held is still held: anything of ours left running would show. A frozen
    // link's time counts from the freeze: the server ends the deploy by itself.
    let stopped = if fault == Fault::Freeze { faulted } else { Instant::now() };
    let left = world.our_processes_after(Duration::from_secs(5));
    assert_eq!(left, vec![], "{name}: processes of the deploy still run on the server");
    let gone_after = stopped.elapsed();
    assert!(wait_until(Duration::from_secs(5), || !world.locked()), "{name}: the lock was left");
    hold.release();
    if let Some(relay) = &relay {
        relay.mode.store(PASS, Ordering::SeqCst);
    }

    // `current` points at the old, complete release: after the switch, the server went back to
    // it by itself (the deploy was never confirmed) and restarted it.
    let current = world.current().unwrap_or_else(|| panic!("{name}: current is gone"));
    let switched = matches!(phase, Phase::AfterSwitch | Phase::HealthCheck);
    assert_eq!(world.revision_of(&current), old.sha, "{name}: current is not the old release");
    world.assert_release_matches(&current, &old.sha);
    if switched {
        let releases = world.releases();
        assert_eq!(releases.len(), 2, "{name}: the old release and the one it went back from: {releases:?}");
        assert_eq!(world.bad(), vec![releases[1].clone()], "{name}: the release it went back from is marked bad");
        let restarts = fs::read_to_string(world.deploy_to.join("shared/restarts")).unwrap_or_default();
        let last = restarts.lines().last().unwrap_or_default().to_string();
        assert_eq!(last, format!("{} 1", old.release), "{name}: the restart hook did not run for the old release");
        assert!(!world.deploy_to.join(".xtask-deploy/unconfirmed").exists(), "{name}: the marker was left");
    } else {
        assert_eq!(world.releases(), vec![old.release.clone()], "{name}: an unfinished release was left");
    }
    let markers: Vec<_> = fs::read_dir(world.deploy_to.join(".xtask-deploy"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("preparing.") || name.ends_with(".pid") || name.starts_with("reuse."))
        .collect();
    assert_eq!(markers, Vec::<String>::new(), "{name}: state files were left");
    let records = |world: &World| -> Vec<String> {
        let state = fs::read_dir(world.deploy_to.join(".xtask-deploy")).unwrap().flatten();
        let names = state.map(|entry| entry.file_name().to_string_lossy().to_string());
        names
            .filter(|name| {
                name.strip_prefix("tree.").is_some_and(|release| !world.releases().iter().any(|r| r == release))
            })
            .collect()
    };
    assert_eq!(records(&world), Vec::<String>::new(), "{name}: the record of a release that is gone was left");

    // The next deploy needs no manual step.
    let next = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deploy", "--manifest-path"])
        .arg(world.app.manifest_path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let next_stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(0), "{name}: the next deploy failed:\n{next_stderr}");
    let after = world.current().unwrap();
    assert_eq!(world.revision_of(&after), new_sha, "{name}: the next deploy did not release the new commit");
    assert_eq!(world.our_processes_after(Duration::from_secs(5)), vec![], "{name}: the next deploy left processes");
    let pruned: Vec<_> = fs::read_dir(world.deploy_to.join("releases"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with(".pruned-"))
        .collect();
    assert_eq!(pruned, Vec::<String>::new(), "{name}: pruned releases were left");

    format!(
        "| {phase:?} | {}, complete | {:.1} s | released | ok |\n",
        if switched { "old release (went back, restart hook ran)" } else { "old release" },
        gone_after.as_secs_f64()
    )
}

/// Starts `cargo xtask deploy` of `world`'s app, its stderr piped.
fn spawn_deploy(world: &World) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deploy", "--manifest-path"])
        .arg(world.app.manifest_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

const PASS: u8 = 0;
const HOLD: u8 = 1;
const CUT: u8 = 2;
const FREEZE: u8 = 3;

/// A TCP relay in front of the sshd, to hold a deploy while it connects: in `HOLD` it accepts
/// a connection and waits; in `CUT` it drops it; in `PASS` it relays to the sshd.
struct Relay {
    port: u16,
    mode: Arc<AtomicU8>,
    held: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let held = Arc::new(AtomicBool::new(false));
        let (thread_mode, thread_held) = (mode.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (mode, held) = (thread_mode.clone(), thread_held.clone());
                std::thread::spawn(move || relay(client, target, &mode, &held));
            }
        });
        Relay { port, mode, held }
    }

    fn wait_held(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.held.load(Ordering::SeqCst))
    }
}

fn relay(client: TcpStream, target: u16, mode: &Arc<AtomicU8>, held: &AtomicBool) {
    while mode.load(Ordering::SeqCst) == HOLD {
        held.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
    }
    if mode.load(Ordering::SeqCst) == CUT {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
    let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up_mode = Arc::clone(mode);
    let upstream = std::thread::spawn(move || pump(&mut client_in, &mut server_out, &up_mode));
    let (mut server_in, mut client_out) = (server, client);
    pump(&mut server_in, &mut client_out, mode);
    let _ = upstream.join();
}

/// Passes bytes on; while `mode` is `FREEZE`, holds what it read (and reads no more).
fn pump(from: &mut TcpStream, to: &mut TcpStream, mode: &AtomicU8) {
    let mut buffer = [0u8; 16384];
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        while mode.load(Ordering::SeqCst) == FREEZE {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_keeper_going_back_holds_the_lock_until_it_is_done() {
    let world = World::with_config("");
    let hold = Hold::new(&world);
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    // Going back restarts the old release slowly; meanwhile another deploy must find the lock held.
    let tables = format!(
        "\n[package.metadata.deploy.hooks]\nafter_publish = [{{ remote = 'if [ -n \"${{ROLLBACK:-}}\" ]; then sleep 4; fi' }}]\n\
         [package.metadata.deploy.healthcheck]\nremote = \"{}\"\n",
        hold.fragment()
    );
    world.commit("Cargo.toml", &format!("{manifest}{tables}"));
    world.setup();
    let old = world.deploy();
    world.commit("src/main.rs", "fn main() { println!(\"held\"); }\n");
    hold.arm();
    let deploy = || spawn_deploy(&world);
    let mut first = deploy();
    assert!(hold.wait_held(Duration::from_secs(30)), "the deploy never reached its health check");
    first.kill().unwrap();
    first.wait().unwrap();
    hold.release();
    std::thread::sleep(Duration::from_millis(500));
    let second = deploy().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(6), "the lock was taken over while the keeper went back:\n{stderr}");
    assert!(wait_until(Duration::from_secs(15), || !world.locked()), "the keeper never released the lock");
    assert_eq!(world.current(), Some(old.release.clone()), "the keeper went back");
    let third = deploy().wait_with_output().unwrap();
    assert_eq!(third.status.code(), Some(0), "{}", String::from_utf8_lossy(&third.stderr));
}
