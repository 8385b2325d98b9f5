//! The harness's dropbear flavour of the loopback server, reached with the system `ssh` client
//! and not the deploy tool's SSH code: given a dropbear serving one local user, when a client
//! logs in, then it is that user's login shell that runs the command, forwarding is allowed or
//! refused as asked, and dropping the server ends its sessions.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use xtask_deploy::check::CheckStatus;
use xtask_deploy::loopback::user::RecordingShell;
use xtask_deploy::loopback::{Dropbear, LoopbackServer, Place, Software};
use xtask_deploy::report::{Collect, Event, Quiet};
use xtask_deploy::DeployOptions;

use crate::support::users::LocalUser;
use crate::support::{wait_until, World};

/// A dropbear server and the one local user it lets in, whose login shell records the length
/// of the commands it is given. Fields drop in order: the server, then the user.
struct Served {
    server: LoopbackServer,
    user: LocalUser,
    shell: RecordingShell,
}

impl Served {
    fn start(dropbear: Dropbear) -> Served {
        let place = Place { software: Software::Dropbear(dropbear), ..Place::default() };
        let mut server = LoopbackServer::start_with(&place).expect("start loopback dropbear");
        let shell = RecordingShell::create(&server.dir().join("shell")).expect("write the recording shell");
        let user = LocalUser::create(&server.dir().join("home"), shell.path.to_str().unwrap()).expect("create a user");
        server.admit_user(&user).expect("let the user into dropbear");
        Served { server, user, shell }
    }

    /// The system `ssh` client at this server as its user, trusting only its known_hosts.
    fn ssh(&self, args: &[&str]) -> Command {
        let server = &self.server;
        let mut command = Command::new("timeout");
        command
            .args(["30", "ssh", "-F", "/dev/null", "-i"])
            .arg(server.identity())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", server.known_hosts().display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])
            .args(["-p", &server.port().to_string(), "-l", server.user(), server.listen()])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ssh(args).output().expect("run `ssh`")
    }
}

#[test]
fn a_command_reaches_the_users_login_shell_which_records_its_length() {
    let served = Served::start(Dropbear { forwarding: true });
    assert_eq!(served.server.user(), served.user.name);
    let command = "echo hi; echo $PATH";
    let output = served.run(&[command]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "ssh: {}\n{}", String::from_utf8_lossy(&output.stderr), served.server.log());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"hi"), "{stdout}");
    // Dropbear gives every session its own fixed PATH: not the server's bin/ (see
    // `xtask_deploy::loopback::dropbear`).
    let path = lines.get(1).expect("a PATH line");
    assert!(path.split(':').any(|dir| dir == "/usr/bin"), "{path}");
    assert!(!path.contains(served.server.bin_dir().to_str().unwrap()), "{path}");
    assert_eq!(served.shell.lengths().unwrap(), [command.len()]);
    assert!(served.server.log().contains(&format!("Pubkey auth succeeded for '{}'", served.user.name)));
}

#[test]
fn without_forwarding_both_directions_are_refused_and_with_it_both_work() {
    let to_itself = |served: &Served| format!("127.0.0.1:{}", served.server.port());
    let refused = Served::start(Dropbear { forwarding: false });
    let local = refused.run(&["-W", &to_itself(&refused)]);
    assert!(!local.status.success(), "a local forward through `-j`: {local:?}");
    let remote = refused.run(&["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:1", "true"]);
    assert!(!remote.status.success(), "a remote forward through `-k`: {remote:?}");
    assert!(String::from_utf8_lossy(&remote.stderr).contains("remote port forwarding failed"), "{remote:?}");

    let allowed = Served::start(Dropbear { forwarding: true });
    // Stdio forwarding to the server's own port: its banner comes back through the session.
    let local = allowed.run(&["-W", &to_itself(&allowed)]);
    assert!(local.stdout.starts_with(b"SSH-2.0-dropbear"), "{local:?}\n{}", allowed.server.log());
    let remote = allowed.run(&["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:1", "true"]);
    assert!(remote.status.success(), "{remote:?}\n{}", allowed.server.log());
}

#[test]
fn dropping_the_server_ends_its_sessions() {
    let served = Served::start(Dropbear { forwarding: true });
    let mut client =
        served.ssh(&["echo started; exec sleep 60"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut started = String::new();
    BufReader::new(client.stdout.take().unwrap()).read_line(&mut started).unwrap();
    assert_eq!(started, "started\n", "{}", served.server.log());
    let sessions = served.server.session_pids();
    assert!(!sessions.is_empty(), "the session's dropbear process is the listener's child");
    let Served { server, user, shell: _shell } = served;
    drop(server);
    let gone = |pid: &u32| !Path::new(&format!("/proc/{pid}")).exists();
    assert!(wait_until(Duration::from_secs(10), || sessions.iter().all(gone)), "left: {sessions:?}");
    // The client sees its connection cut.
    assert!(wait_until(Duration::from_secs(10), || client.try_wait().unwrap().is_some()));
    drop(user);
}

#[test]
fn deploy_setup_works_against_dropbear() {
    let world = World::on_dropbear(Path::new("/bin/sh"), "", Dropbear { forwarding: true });
    world.setup();
    assert!(world.deploy_to.join("releases").is_dir(), "{}", world.server.log());
}

/// The rows of `deploy-check` on `world`, each as `(check, status, detail)`.
fn check_rows(world: &World) -> Vec<(&'static str, CheckStatus, String)> {
    let report = xtask_deploy::run_checks(&world.config(), &mut Quiet);
    report.checks.into_iter().map(|check| (check.name, check.status, check.detail)).collect()
}

/// The row named `name`.
fn row<'a>(rows: &'a [(&'static str, CheckStatus, String)], name: &str) -> &'a (&'static str, CheckStatus, String) {
    rows.iter().find(|(check, _, _)| *check == name).unwrap_or_else(|| panic!("no `{name}` row: {rows:?}"))
}

/// The warnings of a deploy, reported as it ran.
fn deploy_warnings(world: &World) -> (xtask_deploy::DeployReport, Vec<String>) {
    let mut events = Collect::default();
    let report = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events)
        .unwrap_or_else(|err| panic!("deploy: {err}\n{}", world.server.log()));
    let warnings = events
        .0
        .into_iter()
        .filter_map(|event| match event {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    (report, warnings)
}

/// Issue 31: every command, with either transport, against dropbear as a non-root user whose
/// login shell records the length of each command line it is given. `deploy-check` passes where
/// the deploy then works (before, it passed and every deploy failed: the keeper's script, tens
/// of KB, was the exec request's command line, and dropbear refuses one over 9,000 bytes).
#[test]
fn every_command_works_on_dropbear_with_either_transport_and_no_command_line_is_over_1_kb() {
    for transport in ["daemon", "exec"] {
        let shells = tempfile::tempdir().unwrap();
        let shell = RecordingShell::create(&shells.path().join("shell")).expect("write the recording shell");
        let world =
            World::on_dropbear(&shell.path, &format!("transport = \"{transport}\""), Dropbear { forwarding: true });
        world.setup();
        let rows = check_rows(&world);
        assert!(rows.iter().all(|(_, status, _)| *status != CheckStatus::Fail), "{transport}: {rows:?}");
        let (_, status, detail) = row(&rows, "transport");
        if transport == "daemon" {
            // Dropbear opens a tunnel's connection as root: the daemon could not tell ours apart.
            assert_eq!(*status, CheckStatus::Warn, "{detail}");
            assert!(detail.contains("dropbear") && detail.contains("git receive-pack"), "{detail}");
        } else {
            assert_eq!(*status, CheckStatus::Ok, "{detail}");
        }

        let (first, warnings) = deploy_warnings(&world);
        let server = world.config().servers[0].display_name();
        if transport == "daemon" {
            assert!(
                warnings.iter().any(|w| w.starts_with(&format!("{server}: ")) && w.contains("receive-pack")),
                "the fallback is said, naming the server: {warnings:?}"
            );
        }
        world.assert_release_matches(&first.release, &first.sha);
        let sha = world.commit("src/main.rs", "fn main() { println!(\"dropbear\"); }\n");
        let second = world.deploy();
        assert_eq!(second.sha, sha);
        assert_eq!(world.current().as_deref(), Some(second.release.as_str()), "{transport}");
        let listed = xtask_deploy::manage::releases(&world.config()).expect("releases");
        let names: Vec<&str> = listed[0].state.releases.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, [first.release.as_str(), second.release.as_str()], "{transport}");
        world.rollback(None).expect("rollback");
        assert_eq!(world.current().as_deref(), Some(first.release.as_str()), "{transport}");
        xtask_deploy::manage::unlock(&world.config(), false, &mut Quiet).expect("unlock");
        assert!(!world.locked(), "{transport}");
        assert_eq!(world.our_processes_after(Duration::from_secs(5)), vec![], "{transport}");

        let lengths = shell.lengths().unwrap();
        assert!(lengths.len() >= 6, "{transport}: every command went through the login shell: {lengths:?}");
        let longest = lengths.iter().max().copied().unwrap_or_default();
        assert!(longest < 1024, "{transport}: a command line of {longest} bytes: {lengths:?}");
    }
}

/// Dropbear started with `-j -k` (no port forwarding): `deploy-check` names the missing
/// forwarding, and a deploy with the daemon transport pushes through `git receive-pack` instead,
/// saying so and naming the server.
#[test]
fn without_port_forwarding_the_daemon_transport_falls_back_to_exec_and_the_check_says_why() {
    let world = World::on_dropbear(Path::new("/bin/sh"), "transport = \"daemon\"", Dropbear { forwarding: false });
    world.setup();
    let rows = check_rows(&world);
    let (_, status, detail) = row(&rows, "transport");
    assert_eq!(*status, CheckStatus::Warn, "{detail}");
    assert!(detail.contains("refuses port forwarding") && detail.contains("dropbear's `-j`"), "{detail}");
    assert!(rows.iter().all(|(_, status, _)| *status != CheckStatus::Fail), "{rows:?}");
    let (report, warnings) = deploy_warnings(&world);
    let server = world.config().servers[0].display_name();
    assert!(
        warnings.iter().any(|w| w.starts_with(&format!("{server}: ")) && w.contains("receive-pack")),
        "{warnings:?}"
    );
    assert_eq!(world.current().as_deref(), Some(report.release.as_str()));
    world.assert_release_matches(&report.release, &report.sha);
}

/// An SSH-level refusal (here OpenSSH's `MaxSessions 0`: no session channel at all) is reported
/// with what was asked and the server's software, by `deploy-check` and by a deploy.
#[test]
fn a_refused_channel_names_what_was_asked_and_the_servers_software() {
    let world = World::new();
    world.setup();
    world.server.reconfigure("MaxSessions 0").expect("reconfigure sshd");
    let rows = check_rows(&world);
    let (_, status, detail) = row(&rows, "deploy_to");
    assert_eq!(*status, CheckStatus::Fail, "{rows:?}");
    assert!(detail.contains("refused a session channel") && detail.contains("OpenSSH"), "{detail}");
    let err = world.try_deploy().expect_err("no session, no deploy");
    let message = err.to_string();
    assert!(message.contains("refused a session channel") && message.contains("SSH-2.0-OpenSSH"), "{message}");
    assert!(message.contains("`MaxSessions`"), "the known fix is named: {message}");
}

/// Dropbear refuses a user whose login shell is not in `/etc/shells`, and its client hears only
/// that no key was accepted: the error says what else dropbear checks.
#[test]
fn a_user_dropbear_refuses_for_its_shell_is_told_why_it_may_be() {
    // `/usr/bin/true` is in no `/etc/shells`.
    let world = World::on_dropbear(Path::new("/usr/bin/true"), "", Dropbear { forwarding: true });
    let err = xtask_deploy::setup(&world.config(), &mut Quiet).expect_err("dropbear refuses the user");
    let message = err.to_string();
    assert!(world.server.log().contains("has invalid shell"), "{}", world.server.log());
    assert!(message.contains("the server refused key") && message.contains("`/etc/shells`"), "{message}");
}
