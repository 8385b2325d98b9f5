//! `service` and `secrets` as users run them, against a real systemd (see
//! `support::service`): a secret reaches the service's environment and appears nowhere else,
//! status names the release each server runs, logs show the app's own lines, and a restart of
//! a release that exits at start goes back.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use xtask_deploy::config::ServiceScope;
use xtask_deploy::container::app::example_binary;
use xtask_deploy::container::SystemdHost;
use xtask_deploy::demo::AppRepo;
use xtask_deploy::loopback::toml_string;

use crate::support::service::{free_port, ServiceWorld};

/// `cargo xtask ARGS --manifest-path <app's manifest>`, its target directory the app's own,
/// every stream piped.
fn command(app: &AppRepo, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.args(args).arg("--manifest-path").arg(app.manifest_path());
    command.env("CARGO_TARGET_DIR", app.dir().join("target"));
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Starts `cargo xtask ARGS` for the world's app with `stdin` on its standard input.
fn start(world: &ServiceWorld, args: &[&str], stdin: &str) -> std::process::Child {
    let mut child = command(&world.app, args).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child
}

/// Runs `cargo xtask ARGS` for the world's app with `stdin` on its standard input.
fn xtask(world: &ServiceWorld, args: &[&str], stdin: &str) -> Output {
    start(world, args, stdin).wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn a_secret_reaches_the_service_and_no_command_line_journal_or_output() {
    let world = ServiceWorld::new("", "");
    assert!(xtask(&world, &["deploy-setup"], "").status.success());
    // Quotes, a dollar, a backslash and a backtick: each must arrive as it is.
    let secret = r#"s3cr3t-"quoted" $HOME \n `tick` 'single' 100%"#;
    let set = xtask(&world, &["secrets", "set", "API_TOKEN", "--json", "-vv"], &format!("{secret}\n"));
    assert!(set.status.success(), "{}", text(&set));
    let mode = std::fs::metadata(world.host.root_dir().join("home/deploy/app/shared/.secrets.env")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);

    let deploy = xtask(&world, &["deploy", "--json", "-vv"], "");
    assert!(deploy.status.success(), "{}", text(&deploy));
    let environ = world.service_environ(ServiceScope::User);
    assert!(
        environ.iter().any(|entry| *entry == format!("API_TOKEN={secret}")),
        "the service's environment: {environ:?}"
    );

    let list = xtask(&world, &["secrets", "list"], "");
    assert!(text(&list).contains("API_TOKEN"), "{}", text(&list));
    let restart = xtask(&world, &["service", "restart", "--json", "-vv"], "");
    assert!(restart.status.success(), "{}", text(&restart));
    let status = xtask(&world, &["service", "status"], "");
    let journal = world.host.root_sh("journalctl --no-pager -o verbose").unwrap();
    let every_command_line = world.host.root_sh("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").unwrap();
    for (what, seen) in [
        ("secrets set -vv --json", text(&set)),
        ("deploy -vv --json", text(&deploy)),
        ("secrets list", text(&list)),
        ("service restart -vv --json", text(&restart)),
        ("service status", text(&status)),
        ("the journal", String::from_utf8_lossy(&journal.stdout).to_string()),
        ("the command lines on the server", String::from_utf8_lossy(&every_command_line.stdout).to_string()),
    ] {
        assert!(!seen.contains("s3cr3t"), "the secret shows in {what}: {seen}");
    }

    // Two at once: both kept (one waits for the other's lock).
    let first = start(&world, &["secrets", "set", "FIRST"], "one\n");
    let second = start(&world, &["secrets", "set", "SECOND"], "two\n");
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(first.status.success() && second.status.success(), "{}{}", text(&first), text(&second));
    let names = text(&xtask(&world, &["secrets", "list"], ""));
    assert!(names.contains("FIRST") && names.contains("SECOND") && names.contains("API_TOKEN"), "{names}");

    let unset = xtask(&world, &["secrets", "unset", "API_TOKEN"], "");
    assert!(unset.status.success(), "{}", text(&unset));
    assert!(!text(&xtask(&world, &["secrets", "list"], "")).contains("API_TOKEN"));
}

#[test]
fn status_names_the_release_and_logs_show_the_apps_own_lines_from_the_server() {
    let world = ServiceWorld::new("", "");
    world.setup();
    let release = world.deploy_change(1);
    let status = xtask(&world, &["service", "status"], "");
    assert!(status.status.success(), "{}", text(&status));
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    let row = table.lines().find(|line| line.contains(" web ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("active (running)") && row.contains(&release), "{table}");
    assert!(row.contains(&world.main_pid(ServiceScope::User)), "{table}");

    let logs = xtask(&world, &["service", "logs", "-n", "50"], "");
    assert!(logs.status.success(), "{}", text(&logs));
    let printed = String::from_utf8_lossy(&logs.stdout).to_string();
    let server = format!("deploy@127.0.0.1:{} | ", world.host.port());
    let line = printed.lines().find(|line| line.contains(&format!("socket_service: serving release {release}")));
    assert!(line.is_some_and(|line| line.starts_with(&server)), "{printed}");
}

#[test]
fn a_restart_of_a_release_that_exits_at_start_goes_back_to_the_previous_one() {
    let world = ServiceWorld::new("", "");
    world.setup();
    let good = world.deploy_change(1);
    world.commit_crashing_release();
    // A deploy of it goes back at once; its release stays, marked bad.
    let err = world.try_deploy().expect_err("the new release exits at start");
    assert_eq!(err.exit_code(), 10, "{err}");
    // Made current again by hand (as a release that broke after its deploy would be), a
    // `service restart` of it goes back the same way.
    let releases = world.host.root_dir().join("home/deploy/app/releases");
    let crashing = std::fs::read_dir(&releases)
        .unwrap()
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.len() == 14 && *name != good)
        .max()
        .expect("the failed release is kept for inspection");
    let switched = world.host.user_sh(&format!(
        "cd /home/deploy/app && ln -sfn /home/deploy/app/releases/{crashing} current.tmp && mv -T current.tmp current && sed -i /{crashing}/d .xtask-deploy/bad"
    ));
    assert!(switched.unwrap().status.success());
    let started = std::time::Instant::now();
    let restart = xtask(&world, &["service", "restart"], "");
    assert_eq!(restart.status.code(), Some(10), "{}", text(&restart));
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "went back after {:?}", started.elapsed());
    assert!(text(&restart).contains("exited with status 1"), "{}", text(&restart));
    assert_eq!(world.current(), good);
    assert_eq!(world.ask().expect("the previous release serves again"), good);
}

/// Replaces the health check's command in the manifest, and commits it.
fn edit_healthcheck(world: &ServiceWorld, command: &str) {
    let path = world.app.manifest_path();
    let manifest = std::fs::read_to_string(&path).unwrap();
    let start = manifest.find("remote = ").expect("a health check in the manifest");
    let end = start + manifest[start..].find('\n').unwrap();
    let manifest = format!("{}remote = {}{}", &manifest[..start], toml_string(command), &manifest[end..]);
    std::fs::write(path, manifest).unwrap();
    world.app.commit_all(&format!("health check: {command}")).unwrap();
}

/// Polls `done` every 50 ms for up to `seconds`.
fn within(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn a_killed_deployer_and_a_rollback_both_restart_the_service_from_the_release_gone_back_to() {
    // The health check waits: the deployer is killed while the new release serves, unconfirmed.
    let world = ServiceWorld::new("", "[package.metadata.deploy.healthcheck]\nremote = \"true\"\ntimeout = 90");
    world.setup();
    let first = world.deploy_change(1);
    let second = world.deploy_change(2);
    edit_healthcheck(&world, "sleep 60");
    world.app.write("src/main.rs", "fn main() { /* 3 */ }\n").unwrap();
    world.app.commit_all("change 3").unwrap();
    let mut child = command(&world.app, &["deploy"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let third_serves = within(30, || world.ask().is_ok_and(|release| release != second && release != first));
    assert!(third_serves, "the new release never served");
    child.kill().unwrap();
    child.wait().unwrap();
    // The server's keeper sees its channel close: it goes back and restarts the service there.
    assert!(within(15, || world.ask().is_ok_and(|release| release == second)), "the service did not go back");
    assert_eq!(world.current(), second);

    // The keeper holds the lock until its restart is done (watched for a second).
    let lock = world.host.root_dir().join("home/deploy/app/.xtask-deploy/lock");
    assert!(within(15, || !lock.exists()), "the keeper did not release the lock");
    edit_healthcheck(&world, "true");
    let rollback = xtask(&world, &["rollback"], "");
    assert!(rollback.status.success(), "{}", text(&rollback));
    assert_eq!(world.current(), first);
    assert_eq!(world.ask().unwrap(), first, "rollback restarted the service from the release it went back to");
}

#[test]
fn followed_logs_show_each_new_release_as_it_starts_until_interrupted() {
    let world = ServiceWorld::new("", "");
    world.setup();
    let first = world.deploy_change(1);
    let mut child = start(&world, &["service", "logs", "-f", "-n", "5"], "");
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    assert!(wait_for(&format!("serving release {first}")), "the running release's start line");
    let second = world.deploy_change(2);
    assert!(wait_for(&format!("serving release {second}")), "a line logged after `logs -f` started");
    let interrupted = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    // Ctrl-C is how following ends: no error.
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn status_and_logs_cover_every_server_each_with_its_own_services() {
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(SystemdHost::boot);
        let b = scope.spawn(SystemdHost::boot);
        (a.join().unwrap().expect("boot a"), b.join().unwrap().expect("boot b"))
    });
    // One key and one known_hosts file for both: a's key is let in on b too.
    let key = std::fs::read_to_string(a.identity().with_extension("pub")).unwrap();
    let authorized = b.root_dir().join("home/deploy/.ssh/authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&key);
    std::fs::write(&authorized, keys).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let trusted =
        std::fs::read_to_string(a.known_hosts()).unwrap() + &std::fs::read_to_string(b.known_hosts()).unwrap();
    std::fs::write(&known_hosts, trusted).unwrap();
    let binary = example_binary().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let manifest = format!(
        "[package]\nname = \"two\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [package.metadata.deploy]\ndeploy_to = \"/home/deploy/app\"\n\
         build = [\"mkdir -p dist\", {copy}]\nartifacts = [\"dist/app\"]\n\n\
         [[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {a}\nuser = \"deploy\"\nroles = [\"a\"]\n\n\
         [[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {b}\nuser = \"deploy\"\nroles = [\"b\"]\n\n\
         [package.metadata.deploy.ssh]\nidentity = {identity}\nknown_hosts = {known_hosts}\n\n\
         [package.metadata.deploy.services.web_a]\ncommand = \"dist/app\"\nlisten = [\"127.0.0.1:{port_a}\"]\nroles = [\"a\"]\n\n\
         [package.metadata.deploy.services.web_b]\ncommand = \"dist/app\"\nlisten = [\"127.0.0.1:{port_b}\"]\nroles = [\"b\"]\n",
        copy = toml_string(&format!("cp {} dist/app", binary.display())),
        a = a.port(),
        b = b.port(),
        identity = toml_string(&a.identity().display().to_string()),
        known_hosts = toml_string(&known_hosts.display().to_string()),
    );
    let files =
        [("Cargo.toml", manifest.as_str()), (".gitignore", "/dist\n/target\n"), ("src/main.rs", "fn main() {}\n")];
    let app = AppRepo::create(&dir.path().join("app"), &files).unwrap();
    let run = |args: &[&str]| {
        let output = command(&app, args).stdin(Stdio::null()).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&["deploy-setup"]);
    run(&["deploy"]);
    let release = std::fs::read_link(a.root_dir().join("home/deploy/app/current")).unwrap();
    let release = release.file_name().unwrap().to_string_lossy().into_owned();

    let status = run(&["service", "status"]);
    for (host, service) in [(&a, "web_a"), (&b, "web_b")] {
        let server = format!("deploy@127.0.0.1:{}", host.port());
        let row = status.lines().find(|line| line.starts_with(&server)).unwrap_or_else(|| panic!("{status}"));
        assert!(row.contains(service) && row.contains("active (running)") && row.contains(&release), "{status}");
    }
    assert_eq!(status.lines().count(), 3, "a header and one row per server: each runs only its own service\n{status}");
    let logs = run(&["service", "logs"]);
    for host in [&a, &b] {
        let prefix = format!("deploy@127.0.0.1:{} | ", host.port());
        let started = format!("socket_service: serving release {release}");
        assert!(logs.lines().any(|line| line.starts_with(&prefix) && line.contains(&started)), "{logs}");
    }
    assert_eq!(xtask_deploy::container::app::ask(port_b).unwrap(), release);
}
