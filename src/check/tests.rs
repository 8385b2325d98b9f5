//! `deploy-check`'s judgement, from a script's output to rows, without a server.

use std::time::Duration;

use super::*;
use crate::config::Healthcheck;

fn config() -> Config {
    let mut config = crate::plan::tests::config("/srv/app");
    config.linked_files = vec!["config/app.toml".to_string()];
    config.linked_dirs = vec!["log".to_string()];
    config
}

fn statuses(stdout: &str) -> Vec<(&'static str, CheckStatus)> {
    let rows = judge(&config(), "deploy@web1:22", stdout, &LocalBinaries::NotConfigured);
    rows.into_iter().filter(|(check, ..)| *check != "binaries").map(|(check, status, _)| (check, status)).collect()
}

#[test]
fn a_ready_server_passes_every_check() {
    let stdout = "writable yes /srv/app\ngit git version 2.39.5\ndisk 50000000 1200\n";
    assert!(statuses(stdout).iter().all(|(_, status)| *status == CheckStatus::Ok), "{:?}", statuses(stdout));
}

#[test]
fn each_broken_state_fails_its_own_check() {
    let cases = [
        ("writable no /srv\ngit git version 2\ndisk 50000000 0\n", "deploy_to"),
        ("writable yes /srv/app\ngit\ndisk 50000000 0\n", "git"),
        ("writable yes /srv/app\ngit git version 2\nunset repo/\ndisk 50000000 0\n", "setup"),
        ("writable yes /srv/app\ngit git version 2\nmissing-file 0\ndisk 50000000 0\n", "linked files"),
        ("writable yes /srv/app\ngit git version 2\nholder user=bob\ndisk 50000000 0\n", "lock"),
        ("writable yes /srv/app\ngit git version 2\ndisk 1000 5000\n", "free disk"),
    ];
    for (stdout, broken) in cases {
        for (check, status) in statuses(stdout) {
            let expected = if check == broken { CheckStatus::Fail } else { CheckStatus::Ok };
            assert_eq!(status, expected, "{check} for {stdout:?}");
        }
    }
}

#[test]
fn with_no_linked_paths_configured_the_row_says_so() {
    let config = Config { linked_files: Vec::new(), linked_dirs: Vec::new(), ..config() };
    let rows = judge(&config, "deploy@web1:22", "writable yes /srv/app\ngit v\n", &LocalBinaries::NotConfigured);
    let linked = rows.iter().find(|row| row.0 == "linked files").unwrap();
    assert_eq!((linked.1, linked.2.as_str()), (CheckStatus::Skipped, "no `linked_files` or `linked_dirs` configured"));
}

#[test]
fn missing_linked_paths_are_named_and_a_stale_lock_only_warns() {
    let stdout = "writable yes /srv/app\ngit v\nmissing-file 0\nmissing-dir 0\nstale user=bob\n";
    let rows = judge(&config(), "deploy@web1:22", stdout, &LocalBinaries::NotConfigured);
    let linked = rows.iter().find(|row| row.0 == "linked files").unwrap();
    assert_eq!(linked.1, CheckStatus::Fail, "a missing file");
    assert!(linked.2.contains("shared/config/app.toml missing in /srv/app: create them on the server"), "{}", linked.2);
    assert!(linked.2.contains("shared/log/ missing in /srv/app: run `cargo xtask deploy-setup` again"), "{}", linked.2);
    assert_eq!(rows.iter().find(|row| row.0 == "lock").unwrap().1, CheckStatus::Warn);
    let only_dirs = judge(
        &config(),
        "deploy@web1:22",
        "unset shared/
missing-dir 0
",
        &LocalBinaries::NotConfigured,
    );
    let linked = only_dirs.iter().find(|row| row.0 == "linked files").unwrap();
    assert_eq!(linked.1, CheckStatus::Warn, "setup makes it, and a deploy would not fail for it");
    assert_eq!(linked.2, "shared/log/ missing in /srv/app: `cargo xtask deploy-setup` creates them");
}

#[test]
fn the_health_row_checks_the_current_release_where_the_health_check_applies() {
    let ready = "current /srv/app/releases/20261125041638\nrelease 20261125041638 abcd\n";
    let target = |config: &Config, stdout: &str| {
        health_target(config, 0, &plan::parse_state(stdout)).map(|(_, release)| (release.name, release.sha))
    };
    assert_eq!(target(&config(), ready), Err("no `healthcheck` configured".to_string()));
    let mut config = config_with_check();
    assert_eq!(target(&config, ready), Ok(("20261125041638".to_string(), "abcd".to_string())));
    assert_eq!(target(&config, "writable yes /srv/app\n"), Err("no current release to check".to_string()));
    let locked = format!("{ready}holder user=bob\n");
    assert!(target(&config, &locked).unwrap_err().starts_with("a deploy holds the lock"), "a deploy's release");
    config.healthcheck.as_mut().unwrap().scope.roles = vec!["web".into()];
    assert_eq!(target(&config, ready), Err("the health check's `roles` leave this server out".to_string()));

    let release = health_target(&config_with_check(), 0, &plan::parse_state(ready)).unwrap().1;
    let passed = judge_health(&release, Ok((2, Duration::from_millis(1500))));
    assert_eq!(passed, (CheckStatus::Ok, "passed in the current release 20261125041638 (2 tries, 1500 ms)".into()));
    let (status, detail) = judge_health(&release, Err("did not pass\nits last output:\n502 Bad Gateway\n"));
    assert_eq!(status, CheckStatus::Warn);
    assert!(detail.contains("20261125041638: did not pass its last output: 502 Bad Gateway ("), "{detail}");
    let (_, long) = judge_health(&release, Err(&format!("start {}end", "x".repeat(1000))));
    assert!(long.contains(": ...xxx") && long.contains("xend (") && long.len() < 500, "{long}");
}

fn config_with_check() -> Config {
    let mut config = config();
    config.healthcheck = Some(Healthcheck {
        command: "true".into(),
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        scope: Default::default(),
    });
    config
}

#[test]
fn the_binaries_row_judges_what_was_built_here_against_the_servers_platform() {
    let needs = binaries::Needs {
        path: "target/release/hello".into(),
        architecture: binaries::Architecture::X86_64,
        bits: 64,
        interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
        glibc: Some((2, 34)),
    };
    let ready = "writable yes /srv/app\ngit v\ndisk 50000000 0\n";
    let server = |glibc: &str| {
        format!("{ready}platform machine x86_64\nplatform glibc {glibc}\nplatform interp /lib64/ld-linux-x86-64.so.2\n")
    };
    let row = |stdout: &str, local: &LocalBinaries| {
        let rows = judge(&config(), "deploy@web1:22", stdout, local);
        rows.into_iter().find(|(check, ..)| *check == "binaries").unwrap()
    };
    let found = LocalBinaries::Found(vec![needs]);
    let fits = row(&server("2.36"), &found);
    assert_eq!((fits.1, fits.2.as_str()), (CheckStatus::Ok, "1 ELF file(s) fit x86_64, glibc 2.36"));
    let old = row(&server("2.31"), &found);
    assert_eq!(old.1, CheckStatus::Fail);
    assert!(old.2.contains("needs glibc 2.34 but `deploy@web1:22` has glibc 2.31"), "{}", old.2);
    assert_eq!(row(ready, &LocalBinaries::NotBuilt).1, CheckStatus::Skipped);
    assert_eq!(row(ready, &LocalBinaries::NotConfigured).1, CheckStatus::Skipped);
    assert_eq!(row(ready, &found).1, CheckStatus::Fail, "a server that did not report its platform");
}
