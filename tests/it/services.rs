//! Services under a real systemd (see `support::service`): given the example app listening
//! through systemd's socket, when I deploy it again and again while a client connects a hundred
//! times a second, then no connection fails and every release serves in turn; a release that
//! exits at start goes back at once; secrets reach the service and nothing else.

use std::thread;
use std::time::{Duration, Instant};

use xtask_deploy::config::ServiceScope;
use xtask_deploy::container::app::Prober;
use xtask_deploy::report::Quiet;

use crate::support::service::ServiceWorld;

/// Ten deploys under a client: no failed connection, every release served in turn.
fn ten_deploys_refuse_nothing(world: &ServiceWorld) {
    let first = world.deploy_change(0);
    assert_eq!(world.ask().expect("the service answers after the first deploy"), first);
    let client = Prober::start(world.port);
    let started = Instant::now();
    let mut releases = vec![first];
    for n in 1..=10 {
        releases.push(world.deploy_change(n));
    }
    thread::sleep(Duration::from_millis(200));
    let elapsed = started.elapsed();
    let seen = client.stop();
    let failed: Vec<&String> = seen.iter().filter_map(|got| got.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} connections failed: {failed:?}", failed.len(), seen.len());
    let rate = seen.len() as f64 / elapsed.as_secs_f64();
    assert!(rate >= 100.0, "the client connected {rate:.0} times a second, fewer than 100");
    // Which release answered, in order, each once: every release served in turn.
    let mut served: Vec<String> = Vec::new();
    for release in seen.iter().flatten() {
        if served.last() != Some(release) {
            served.push(release.clone());
        }
    }
    assert_eq!(served, releases, "the releases the service answered from, in order");
    assert_eq!(world.current(), *releases.last().unwrap());
}

#[test]
fn a_user_service_behind_its_socket_refuses_no_connection_over_ten_deploys() {
    let world = ServiceWorld::new("", "");
    let warnings = world.setup();
    assert!(warnings.is_empty(), "setup warned: {warnings:?}");
    let units = world.host.root_dir().join("home/deploy/.config/systemd/user");
    let service = std::fs::read_to_string(units.join("web.service")).unwrap();
    assert!(
        service.contains("ExecStart=/bin/sh -c ") && service.contains(" /home/deploy/app/current/dist/app\n"),
        "{service}"
    );
    let socket = std::fs::read_to_string(units.join("web.socket")).unwrap();
    assert!(socket.contains(&format!("ListenStream=127.0.0.1:{}", world.port)), "{socket}");
    assert!(world.setup().is_empty(), "setup again changes nothing and warns of nothing");
    ten_deploys_refuse_nothing(&world);
}

#[test]
fn a_release_that_exits_at_start_goes_back_at_once() {
    let world = ServiceWorld::new("", "[package.metadata.deploy.healthcheck]\nremote = \"true\"\ntimeout = 60");
    world.setup();
    let good = world.deploy_change(0);
    world.commit_crashing_release();
    let started = Instant::now();
    let err = world.try_deploy().expect_err("the service exits at start");
    let took = started.elapsed();
    assert_eq!(err.exit_code(), 10, "{err}");
    assert!(err.to_string().contains("exited with status 1"), "{err}");
    // The restart is watched for a second, and going back restarts the old release (watched too):
    // seconds, where waiting out the health check would take its 60.
    assert!(took < Duration::from_secs(5), "the deploy went back after {took:?}, as if it waited out the health check");
    assert_eq!(world.current(), good);
    assert_eq!(world.ask().expect("the old release serves again"), good);
}

/// The root steps a system-scope setup printed: the lines after its "as root run" line.
fn root_steps(warnings: &[String]) -> String {
    let warning = warnings.iter().find(|warning| warning.contains("as root run the lines below:"));
    let warning = warning.unwrap_or_else(|| panic!("setup printed no root steps: {warnings:?}"));
    warning
        .lines()
        .skip_while(|line| !line.ends_with("as root run the lines below:"))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_system_service_is_restarted_through_the_printed_sudo_rule_and_refuses_nothing() {
    let world = ServiceWorld::new("scope = \"system\"", "");
    let steps = root_steps(&world.setup());
    let rule = "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart web.service".to_string();
    assert!(steps.contains(&rule), "the exact sudo rule, with the server's systemctl: {steps}");
    assert!(steps.contains("cat > /etc/systemd/system/web.socket <<'XTASK_DEPLOY_UNIT'"), "{steps}");
    assert!(steps.contains("\nUser=deploy\n"), "the unit's text is in the command itself: {steps}");

    // Before root did its part: deploy-check fails naming the rule, and a deploy stops before
    // the switch.
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").expect("a services row");
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Fail, "{row:?}");
    assert!(row.detail.contains(&rule), "{}", row.detail);
    let err = world.try_deploy().expect_err("no unit, no sudo rule");
    let said = err.to_string();
    assert!(said.contains("/usr/bin/systemctl restart web.service") && said.contains("deploy-setup"), "{said}");
    assert!(!world.host.root_dir().join("home/deploy/app/current").exists(), "nothing switched");

    // Root runs what setup printed, once; then the deploy user deploys without a password.
    let output = world.host.root_sh(&format!("set -e\n{steps}")).unwrap();
    assert!(output.status.success(), "the root steps: {}", String::from_utf8_lossy(&output.stderr));
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").unwrap();
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Ok, "{row:?}");
    ten_deploys_refuse_nothing(&world);

    // The secrets file is read by the service's own shell, as the deploy user: pointed at a file
    // only root may read, it gives the service nothing of it.
    let planted = world.host.root_sh(
        "umask 077; echo 'ROOT_ONLY=\"r00t-only\"' > /root/secret.env; \
         ln -sf /root/secret.env /home/deploy/app/shared/.secrets.env",
    );
    assert!(planted.unwrap().status.success());
    world.deploy_change(11);
    let environ = world.service_environ(ServiceScope::System);
    assert!(
        !environ.iter().any(|entry| entry.contains("r00t-only")),
        "a root-only file reached the service: {environ:?}"
    );
}

#[test]
fn without_linger_setup_says_the_one_root_command_and_deploy_check_fails_until_it_ran() {
    let world = ServiceWorld::new("", "");
    let off = world.host.root_sh("loginctl disable-linger deploy").unwrap();
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));
    // A user may not turn its own linger on here (no polkit rule grants it), as on most servers.
    let warnings = world.setup();
    assert!(
        warnings.iter().any(|warning| warning.contains("as root run `loginctl enable-linger deploy`")),
        "{warnings:?}"
    );
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").unwrap();
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Fail, "{row:?}");
    assert!(row.detail.contains("loginctl enable-linger deploy"), "{}", row.detail);

    let on = world.host.root_sh("loginctl enable-linger deploy").unwrap();
    assert!(on.status.success(), "{}", String::from_utf8_lossy(&on.stderr));
    assert!(world.setup().is_empty(), "with linger on, setup warns of nothing");
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").unwrap();
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Ok, "{row:?}");

    // A unit of the same name that is not this app's is never overwritten: named instead.
    let foreign = world.host.root_dir().join("home/deploy/.config/systemd/user/web.socket");
    std::fs::write(&foreign, "[Socket]\nListenStream=127.0.0.1:1\n").unwrap();
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").unwrap();
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Fail, "{row:?}");
    assert!(row.detail.contains("a unit `web.socket` is there and is not one of `web`'s"), "{}", row.detail);
    let warnings = world.setup();
    assert!(warnings.iter().any(|warning| warning.contains("is not one of")), "{warnings:?}");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "[Socket]\nListenStream=127.0.0.1:1\n", "left as it was");
}

/// Rewrites the `web` service's `command` and `listen` lines (`listen` none: no line) and
/// commits the manifest.
fn edit_service(world: &ServiceWorld, command: &str, listen: Option<u16>) {
    let path = world.app.manifest_path();
    let manifest = std::fs::read_to_string(&path).unwrap();
    let start = manifest.find("[package.metadata.deploy.services.web]\n").unwrap();
    let end = start + manifest[start..].find("\n\n").unwrap();
    let mut table = format!("[package.metadata.deploy.services.web]\ncommand = \"{command}\"");
    if let Some(port) = listen {
        table.push_str(&format!("\nlisten = [\"127.0.0.1:{port}\"]"));
    }
    std::fs::write(&path, format!("{}{table}{}", &manifest[..start], &manifest[end..])).unwrap();
    world.app.commit_all(&format!("service: {command} {listen:?}")).unwrap();
}

/// Whether the service's process got its listener from systemd.
fn socket_activated(world: &ServiceWorld) -> bool {
    world.service_environ(ServiceScope::User).iter().any(|entry| entry == "LISTEN_FDS=1")
}

#[test]
fn listen_added_changed_or_removed_keeps_the_socket_true_and_going_back_restores_the_units() {
    let world = ServiceWorld::new("", "");
    let other = crate::support::service::free_port();
    let socket_unit = world.host.root_dir().join("home/deploy/.config/systemd/user/web.socket");
    edit_service(&world, &format!("dist/app --listen 127.0.0.1:{}", world.port), None);
    world.setup();
    world.deploy_change(1);
    assert!(!socket_unit.exists() && !socket_activated(&world), "without listen, the app binds its port");
    assert!(world.ask().is_ok());

    // Added: the socket starts, with its service.
    edit_service(&world, "dist/app", Some(world.port));
    let second = world.deploy_change(2);
    assert!(socket_unit.exists() && socket_activated(&world), "with listen, systemd's socket");
    assert_eq!(world.ask().unwrap(), second);

    // Changed: the new address, still through systemd's socket; nothing on the old one. The dry
    // run says the units would be rewritten.
    edit_service(&world, "dist/app", Some(other));
    let dry = xtask_deploy::dry_run(&world.config(), &xtask_deploy::DeployOptions::default(), &mut Quiet).unwrap();
    let warnings = dry.servers[0].warnings.join("\n");
    assert!(warnings.contains("the deploy would rewrite the units web.socket"), "{warnings}");
    let third = world.deploy_change(3);
    assert!(socket_activated(&world), "a changed listen keeps socket activation");
    assert_eq!(xtask_deploy::container::app::ask(other).unwrap(), third);
    assert!(world.ask().is_err(), "the old address is closed");

    // A broken command: the deploy goes back, and so do the units: the old release serves again.
    edit_service(&world, "/bin/false", Some(other));
    let err = world.try_deploy().expect_err("/bin/false does not stay up");
    assert_eq!(err.exit_code(), 10, "{err}");
    let unit =
        std::fs::read_to_string(world.host.root_dir().join("home/deploy/.config/systemd/user/web.service")).unwrap();
    assert!(!unit.contains("/bin/false"), "the unit went back with its release: {unit}");
    assert_eq!(xtask_deploy::container::app::ask(other).unwrap(), third);

    // Removed: the socket unit goes, and the app binds its port itself.
    edit_service(&world, &format!("dist/app --listen 127.0.0.1:{other}"), None);
    let fifth = world.deploy_change(5);
    assert!(!socket_unit.exists(), "the socket unit the config no longer has is removed");
    assert!(!socket_activated(&world));
    assert_eq!(xtask_deploy::container::app::ask(other).unwrap(), fifth);
}
