//! The scripts run by a local `sh` in a temporary `deploy_to`: no server needed.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::plan::tests::{config, release};
use crate::plan::STATE_DIR;

/// Runs `text` with `sh -c`; returns (status, stdout, stderr).
fn sh(text: &str) -> (i32, String, String) {
    let out = std::process::Command::new("sh").arg("-c").arg(text).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// A `deploy_to` with releases `a` (REVISION `sha-a`) and `b`, `current` at `b`.
fn deployed(dir: &Path) {
    for (name, sha) in [("20261129000001", "sha-a"), ("20261129000002", "sha-b")] {
        fs::create_dir_all(dir.join("releases").join(name)).unwrap();
        fs::write(dir.join("releases").join(name).join("REVISION"), format!("{sha}\n")).unwrap();
    }
    fs::create_dir_all(dir.join(STATE_DIR)).unwrap();
    std::os::unix::fs::symlink(dir.join("releases/20261129000002"), dir.join("current")).unwrap();
}

#[test]
fn going_back_switches_current_marks_the_release_bad_logs_it_then_the_old_one_restarts() {
    let dir = tempfile::tempdir().unwrap();
    deployed(dir.path());
    let marker = dir.path().join(STATE_DIR).join(UNCONFIRMED);
    fs::write(&marker, "token=t\nrelease=20261129000002\nprevious=20261129000001\n").unwrap();
    let cfg = config(dir.path().to_str().unwrap());
    let script = go_back_script(&cfg, "20261129000002", Some("20261129000001"), "alice");
    let (status, stdout, stderr) = sh(&script.text);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout, "reverted 20261129000002 20261129000001\n");
    let current = fs::read_link(dir.path().join("current")).unwrap();
    assert_eq!(current, dir.path().join("releases/20261129000001"));
    assert_eq!(fs::read_to_string(dir.path().join(STATE_DIR).join("bad")).unwrap(), "20261129000002\n");
    let log = fs::read_to_string(dir.path().join("revisions.log")).unwrap();
    assert_eq!(log, "alice rolled back to release 20261129000001\n");
    assert!(!marker.exists(), "the marker naming the release is gone");
    assert_eq!(fs::read_dir(dir.path().join("releases")).unwrap().count(), 2, "no temporary link is left");

    // Run again (the keeper after the deployer): `current` is not the release any more.
    let (status, stdout, _) = sh(&script.text);
    assert_eq!((status, stdout.as_str()), (0, "not-switched 20261129000002\n"));
    // Another deploy's marker is not this deploy's to remove.
    fs::write(&marker, "token=u\nrelease=20261129000003\n").unwrap();
    sh(&script.text);
    assert!(marker.exists(), "another deploy's marker was removed");

    let restart = r#"echo "$RELEASE $REVISION $ROLLBACK $(pwd)" > "$DEPLOY_TO/restarted""#;
    let (status, stdout, stderr) = sh(&restart_script(&cfg, "20261129000001", &[crate::plan::Restart::hook(restart), crate::plan::Restart::hook("exit 3")]).text);
    assert_eq!((status, stdout.as_str()), (0, "hook-failed 1 3\n"), "{stderr}");
    let restarted = fs::read_to_string(dir.path().join("restarted")).unwrap();
    let old = dir.path().join("releases/20261129000001");
    assert_eq!(restarted.trim(), format!("20261129000001 sha-a 1 {}", old.display()));
}

#[test]
fn without_an_earlier_release_a_server_cannot_go_back_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    deployed(dir.path());
    let cfg = config(dir.path().to_str().unwrap());
    for previous in [None, Some("20261129000009")] {
        let (status, stdout, _) = sh(&go_back_script(&cfg, "20261129000002", previous, "alice").text);
        assert_eq!((status, stdout.as_str()), (1, "cannot-revert no earlier release to go back to\n"));
        let current = fs::read_link(dir.path().join("current")).unwrap();
        assert_eq!(current, dir.path().join("releases/20261129000002"), "current stays");
    }
}

#[test]
fn the_health_check_passes_when_its_command_does_and_fails_with_its_output_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    deployed(dir.path());
    let cfg = config(dir.path().to_str().unwrap());
    let release = Release { name: "20261129000002".into(), ..release() };
    let check = |command: &str, timeout: u64| Healthcheck {
        command: command.into(),
        timeout: Duration::from_secs(timeout),
        interval: Duration::from_secs(1),
        scope: Default::default(),
    };
    // Passes on its second try: the first one leaves a file behind.
    let second_try = r#"test -e tried && test "$RELEASE" = 20261129000002 || { touch tried; exit 1; }"#;
    let (status, stdout, stderr) = sh(&health_script(&cfg, &release, &check(second_try, 10), None).text);
    assert_eq!(status, 0, "{stderr}");
    let line = stdout.lines().find(|line| line.starts_with(HEALTHY)).unwrap();
    assert_eq!(line.split(' ').nth(1), Some("2"), "two tries: {line}");

    let started = std::time::Instant::now();
    let (status, stdout, stderr) = sh(&health_script(&cfg, &release, &check("echo not yet; exit 1", 2), None).text);
    assert_eq!(status, 1);
    assert!(stdout.starts_with(UNHEALTHY), "{stdout}");
    assert!(stderr.contains("did not pass within 2s") && stderr.contains("not yet"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(6), "it gives up at its timeout");

    // A try that hangs is stopped at the timeout, with what it started, even what ignores TERM.
    let started = std::time::Instant::now();
    let (status, _, _) =
        sh(&health_script(&cfg, &release, &check("( trap '' TERM; exec sleep 30.25 ) & sleep 30.25; true", 1), None).text);
    assert_eq!(status, 1);
    assert!(started.elapsed() < Duration::from_secs(5), "the hanging try was stopped");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(crate::loopback::LoopbackServer::processes_mentioning("sleep 30.25"), vec![], "left running");
}

#[test]
fn a_health_check_stopped_with_its_step_leaves_no_try_running() {
    let dir = tempfile::tempdir().unwrap();
    deployed(dir.path());
    let cfg = config(dir.path().to_str().unwrap());
    let release = Release { name: "20261129000002".into(), ..release() };
    let check = Healthcheck {
        command: "sleep 40.75; true".into(),
        timeout: Duration::from_secs(30),
        interval: Duration::from_secs(1),
        scope: Default::default(),
    };
    // The try itself, not the shells whose scripts mention it.
    let tries = || {
        let all = crate::loopback::LoopbackServer::processes_mentioning("sleep 40.75");
        all.into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep 40.75") || cmd.starts_with("sh -c sleep 40.75"))
            .collect::<Vec<_>>()
    };
    let script = health_script(&cfg, &release, &check, None);
    let batch = crate::plan::batch_script(&[&script], "@@m");
    let (mut child, stdin) = crate::shell::spawn_here(&batch, crate::shell::Supervision::Supervised);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tries().is_empty(), "the try runs");
    // The deployer is lost: the step's stdin closes.
    drop(stdin);
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tries(), vec![], "the try was left");
}

#[test]
fn the_health_checks_tries_run_their_command_from_the_environment_as_run_exported_does() {
    assert!(HEALTH.contains(&format!("exec {}", crate::shell::RUN_EXPORTED)), "{HEALTH}");
    assert!(HEALTH.contains("XTASK_DEPLOY_RUN=$check; export XTASK_DEPLOY_RUN"), "{HEALTH}");
}
