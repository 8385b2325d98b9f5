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
    let release = Release { build: Some("fedcba9876543210fedcba9876543210fedcba98".into()), ..release() };
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
    let script = preflight_script(&cfg, &lock(), &[crate::plan::Restart::hook("systemctl restart app")], Some(&daemon), Some(&crate::plan::Watch { silence: 20, deadline: 630, grace: 5 }));
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
