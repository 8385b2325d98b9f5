//! Services under a real systemd (see `support::service`): given the example app listening
//! through systemd's socket, when I deploy it again and again while a client connects a hundred
//! times a second, then no connection fails and every release serves in turn; a release that
//! exits at start goes back at once; secrets reach the service and nothing else.

use std::thread;
use std::time::{Duration, Instant};

use xtask_deploy::container::app::Prober;

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
    assert!(service.contains("ExecStart=/home/deploy/app/current/dist/app"), "{service}");
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
    world.app.write("crash-at-start", "").unwrap();
    world.app.commit_all("a release that exits at start").unwrap();
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
    assert!(err.to_string().contains(&rule), "{err}");
    assert!(!world.host.root_dir().join("home/deploy/app/current").exists(), "nothing switched");

    // Root runs what setup printed, once; then the deploy user deploys without a password.
    let output = world.host.root_sh(&format!("set -e\n{steps}")).unwrap();
    assert!(output.status.success(), "the root steps: {}", String::from_utf8_lossy(&output.stderr));
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let row = checks.checks.iter().find(|check| check.name == "services").unwrap();
    assert_eq!(row.status, xtask_deploy::report::CheckStatus::Ok, "{row:?}");
    ten_deploys_refuse_nothing(&world);
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
}
