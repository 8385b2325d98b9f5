//! The generated scripts for one fixed deploy, as files beside this one: a change to a script
//! shows as a diff of its snapshot in review, with no server needed. After a deliberate change,
//! `UPDATE_EXPECT=1 cargo test --lib snapshots` rewrites them.

use expect_test::expect_file;

use super::super::*;
use crate::plan::tests::{config, lock, release};
use crate::plan::{Release, SubmoduleRelease};

/// A deploy with a linked file and directory, build output and a submodule.
fn deploy() -> (crate::config::Config, Release, Vec<SubmoduleRelease>) {
    let mut cfg = config("/srv/app");
    cfg.linked_files = vec!["config/database.yml".into()];
    cfg.linked_dirs = vec!["log".into()];
    cfg.artifacts = vec!["target/release/app".into()];
    let release = Release { release_commit: Some("fedcba9876543210fedcba9876543210fedcba98".into()), ..release() };
    let submodule = SubmoduleRelease {
        path: "vendor/lib".into(),
        repo: "repo/modules/lib".into(),
        commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
    };
    (cfg, release, vec![submodule])
}

#[test]
fn preflight() {
    let (cfg, _, _) = deploy();
    let daemon = KeeperDaemon { ports: vec![40000, 40001], max_seconds: 600, submodule_repos: vec!["repo/modules/lib".into()] };
    let script = keeper_script(&cfg, &lock(), &[crate::plan::Restart::hook("systemctl restart app")], Some(&daemon), Some(&crate::plan::Watch { silence: 20, deadline: 630, grace: 5 }));
    expect_file!["snapshots/preflight.sh"].assert_eq(&script.text);
}

#[test]
fn prepare() {
    let (cfg, release, submodules) = deploy();
    let script = prepare_script(&cfg, &release, &submodules);
    expect_file!["snapshots/prepare.sh"].assert_eq(&script.text);
}

/// Without submodules, the release reuses the previous one's unchanged files.
#[test]
fn prepare_reusing() {
    let (cfg, release, _) = deploy();
    let script = prepare_script(&cfg, &release, &[]);
    expect_file!["snapshots/prepare_reusing.sh"].assert_eq(&script.text);
}

#[test]
fn publish() {
    let (cfg, release, _) = deploy();
    let script = publish_script(&cfg, &release, "t0k3n");
    expect_file!["snapshots/publish.sh"].assert_eq(&script.text);
}

/// The lines of every script a deploy sends, as it sends them: the file the servers keep
/// (`src/shell/kept.sh`, see `shell::kept`). A script left out of it still works, whole.
#[test]
fn kept() {
    use crate::shell::{body, RemoteScript, Supervision};
    let (cfg, release, submodules) = deploy();
    let daemon = KeeperDaemon { ports: vec![40000], max_seconds: 600, submodule_repos: vec![] };
    let watch = crate::plan::Watch { silence: 20, deadline: 630, grace: 5 };
    let restart = [crate::plan::Restart::hook("systemctl restart app")];
    let lock = lock();
    // Run on channels of their own, reading the rest of stdin.
    let own = [
        keeper_script(&cfg, &lock, &restart, Some(&daemon), Some(&watch)),
        keeper_script(&cfg, &lock, &[], Some(&daemon), None),
        keeper_script(&cfg, &lock, &[], None, None),
        receive_pack_script(&cfg, "repo", false),
        bases_script(&cfg, &release.sha, std::slice::from_ref(&release.sha), &["target/release/app"]),
    ];
    let prepare = prepare_script(&cfg, &release, &[]);
    let hook = hook_script(&cfg, &release, "after_update", "make");
    let publish = publish_script(&cfg, &release, "t0k3n");
    let updates = [("ref".to_string(), release.sha.clone(), "refs/heads/main".to_string())];
    let healthcheck = crate::config::Healthcheck {
        command: "curl -fsS localhost:8080/health".into(),
        timeout: std::time::Duration::from_secs(30),
        interval: std::time::Duration::from_secs(1),
        scope: Default::default(),
    };
    // Run under the supervisor, or by the lock keeper as they are.
    let steps = [
        batch_script(&[&prepare_script(&cfg, &release, &submodules)], "@@m"),
        batch_script(&[&prepare, &hook], "@@m"),
        batch_script(&[&await_push_script(&cfg, &updates)], "@@m"),
        batch_script(&[&publish], "@@m"),
        batch_script(&[&hook], "@@m"),
        setup_script(&cfg),
        confirm_script(&cfg, "t0k3n"),
        inspect_script(&cfg),
        check_script(&cfg),
        unlock_script(&cfg, Some("t0k3n"), false),
        discard_script(&cfg, &release),
        crate::plan::confirm::go_back_script(&cfg, &release.name, Some("20261125041000"), "alice"),
        crate::plan::confirm::restart_script(&cfg, &release.name, &restart),
        crate::plan::confirm::health_script(&cfg, &release, &healthcheck, Some("t0k3n")),
        crate::plan::rollback::rollback_script(&cfg, crate::plan::rollback::RollbackTo::Previous, "alice", &restart, "@@m"),
        crate::plan::rollback::marks_script(&cfg, None),
        crate::plan::dry_run::dry_run_script(&cfg),
    ];
    // A deploy of a service (see `plan::service`).
    let metadata = serde_json::json!({ "deploy": {
        "deploy_to": "/srv/app",
        "servers": [{ "host": "h", "user": "u" }],
        "services": { "app": { "command": "target/release/app", "listen": ["127.0.0.1:8080"] } },
    }});
    let defaults = crate::config::Defaults { package_name: Some("app".into()), ..crate::config::Defaults::from_env(None, None) };
    let with_service =
        crate::config::Config::from_metadata(&metadata, "package.metadata", std::path::Path::new("/app/Cargo.toml"), &defaults)
            .unwrap();
    use crate::plan::service::{restart_script, status_script, units_script, UnitsMode};
    let service_steps = [
        units_script(&with_service, 0, UnitsMode::Verify),
        units_script(&with_service, 0, UnitsMode::Setup),
        units_script(&with_service, 0, UnitsMode::Check),
        restart_script(&with_service, 0).expect("a restart"),
        status_script(&with_service, 0),
    ];
    let steps = steps.iter().chain(&service_steps);
    let bodies = own.iter().map(|script| body(script, Supervision::None)).chain(steps.flat_map(|script: &RemoteScript| {
        [body(script, Supervision::Supervised), body(script, Supervision::None)]
    }));
    // Each body adds only the lines the file cannot copy yet, in runs as they stand in it.
    let mut lines: Vec<String> = Vec::new();
    for body in bodies {
        let file = crate::shell::kept::Kept::new(Box::leak(lines.join("\n").into_boxed_str()));
        let mut ops = file.encode(&body).lines().map(str::to_string).collect::<Vec<_>>().into_iter();
        while let Some(op) = ops.next() {
            if let Some(count) = op.strip_prefix("0 ") {
                lines.extend(ops.by_ref().take(count.parse().unwrap()));
            }
        }
    }
    // The server reads it with `$(cat ...)`, which drops newlines at the end.
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    expect_file!["../../../shell/kept.sh"].assert_eq(&lines.join("\n"));
}
