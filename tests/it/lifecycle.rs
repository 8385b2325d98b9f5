//! The release lifecycle against a real loopback sshd: rollback, the lock, shared files,
//! hooks and artifacts, nothing half-done, and taking over servers Capistrano deployed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, current_in, releases_by_hand, World};
use xtask_deploy::plan::RollbackTo;
use xtask_deploy::relay::Relay;
use xtask_deploy::report::Collect;
use xtask_deploy::{DeployOptions, Error, Event};

#[test]
fn rollback_twice_in_a_row_skips_the_release_marked_bad() {
    let world = World::new();
    world.setup();
    let r: Vec<String> = releases_by_hand(&world.deploy_to, 3).into_iter().map(|(name, _)| name).collect();
    let user = xtask_deploy::local::user_name().unwrap();

    world.rollback(None).unwrap();
    assert_eq!(world.current(), Some(r[1].clone()));
    assert_eq!(world.bad(), vec![r[2].clone()]);
    // Forward again, explicitly, to the bad release, marking the one left (r[1]): the mark of
    // r[2] is cleared, r[1] is now bad.
    rollback(&world, RollbackTo::Release { name: &r[2], mark_left: true }).unwrap();
    assert_eq!(world.current(), Some(r[2].clone()));
    assert_eq!(world.bad(), vec![r[1].clone()]);
    // The previous release r[1] is bad, so this rollback skips it.
    world.rollback(None).unwrap();
    assert_eq!(world.current(), Some(r[0].clone()));
    let log = world.revisions_log();
    assert_eq!(
        log[3..],
        [
            format!("{user} rolled back to release {}", r[1]),
            format!("{user} rolled back to release {}", r[2]),
            format!("{user} rolled back to release {}", r[0]),
        ]
    );
    let err = world.rollback(None).expect_err("nothing older");
    assert!(err.to_string().contains("no earlier release that is not marked bad"), "{err}");
    assert_eq!(world.current(), Some(r[0].clone()));
    assert!(!world.locked());
}

/// `rollback` with `to`, keeping its events.
fn rollback(world: &World, to: RollbackTo) -> Result<Vec<Event>, Error> {
    let mut events = Collect::default();
    xtask_deploy::manage::rollback(&world.config(), to, &mut events).map(|()| events.0)
}

/// The `(event, release)` of each bad mark set or cleared, in order.
fn marks(events: &[Event]) -> Vec<(&'static str, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Marked { release, .. } => Some(("marked", release.clone())),
            Event::Unmarked { release, .. } => Some(("unmarked", release.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn rollback_to_a_release_marked_bad_clears_its_mark_and_marks_the_one_left_only_when_asked() {
    let world = World::new();
    world.setup();
    let r: Vec<String> = releases_by_hand(&world.deploy_to, 3).into_iter().map(|(name, _)| name).collect();
    // A mark of a release that is gone, and a mark written twice: both dropped by a rollback.
    fs::write(world.deploy_to.join(".xtask-deploy/bad"), format!("20000101000000\n{}\n{}\n", r[0], r[0])).unwrap();

    let events = rollback(&world, RollbackTo::Previous).unwrap();
    assert_eq!(world.current(), Some(r[1].clone()));
    assert_eq!(world.bad(), vec![r[0].clone(), r[2].clone()], "the plain rollback marks r[2]; r[0]'s mark once");
    assert_eq!(marks(&events), [("marked", r[2].clone())]);

    // Back to r[2], which is marked bad: its mark is cleared, and r[1], left, is not marked.
    let events = rollback(&world, RollbackTo::Release { name: &r[2], mark_left: false }).unwrap();
    assert_eq!(world.current(), Some(r[2].clone()));
    assert_eq!(world.bad(), vec![r[0].clone()]);
    assert_eq!(marks(&events), [("unmarked", r[2].clone())]);

    // To r[0] with `--mark`: r[2], left, is marked, and r[0]'s own mark is cleared.
    let events = rollback(&world, RollbackTo::Release { name: &r[0], mark_left: true }).unwrap();
    assert_eq!(world.current(), Some(r[0].clone()));
    assert_eq!(world.bad(), vec![r[2].clone()]);
    assert_eq!(marks(&events), [("marked", r[2].clone()), ("unmarked", r[0].clone())]);
    assert!(!world.locked());
}

#[test]
fn rollback_restarts_the_restored_release_on_every_server() {
    let world = World::with_config(
        r#"[package.metadata.deploy.hooks]
after_publish = [{ remote = "printf '%s %s %s\n' \"$RELEASE\" \"$ROLLBACK\" \"$REVISION\" >> \"$DEPLOY_TO/shared/restarted\"" }]"#,
    );
    let others = support::add_servers(&world, 2);
    world.setup();
    let deploy_tos: Vec<&Path> =
        std::iter::once(world.deploy_to.as_path()).chain(others.iter().map(|(_, d)| d.as_path())).collect();
    let releases: Vec<Vec<(String, String)>> = deploy_tos.iter().map(|d| releases_by_hand(d, 3)).collect();

    let events = rollback(&world, RollbackTo::Previous).unwrap();
    let rolled_back = events.iter().filter(|event| matches!(event, Event::RolledBack { .. })).count();
    assert_eq!(rolled_back, 3, "{events:?}");
    for (deploy_to, releases) in deploy_tos.iter().zip(&releases) {
        let (restored, sha) = &releases[1];
        assert_eq!(current_in(deploy_to).as_ref(), Some(restored), "{}", deploy_to.display());
        let restarted = fs::read_to_string(deploy_to.join("shared/restarted")).unwrap_or_default();
        assert_eq!(
            restarted,
            format!("{restored} 1 {sha}\n"),
            "{}: the hook ran once, for the restored release",
            deploy_to.display()
        );
    }
}

#[test]
fn rollback_refuses_what_it_cannot_do_clearly() {
    let world = World::new();
    world.setup();
    let err = world.rollback(None).expect_err("no current");
    assert!(err.to_string().contains("nothing to roll back"), "{err}");
    let only = world.deploy().release;
    let err = world.rollback(None).expect_err("one release");
    assert!(err.to_string().contains("no earlier release"), "{err}");
    for bad in ["../../etc", "2026", "20261125041638/../x"] {
        let err = world.rollback(Some(bad)).expect_err("not a release name");
        assert!(err.to_string().contains("is not a release name"), "{err}");
    }
    let err = world.rollback(Some("20000101000000")).expect_err("no such release");
    assert_eq!(err.exit_code(), xtask_deploy::exit::USAGE, "{err}");
    assert!(err.to_string().contains("there is no release `20000101000000` (`--to`) on `"), "{err}");
    assert!(err.to_string().contains(&format!("the releases there are `{only}` on `")), "{err}");
    assert_eq!(world.current(), Some(only));
    assert!(fs::read_link(world.deploy_to.join("current")).unwrap().exists(), "current must never dangle");
}

#[test]
fn linked_files_must_exist_and_are_linked_into_each_release() {
    let world = World::with_config("linked_files = [\"config/database.yml\"]\nlinked_dirs = [\"log\", \"tmp/pids\"]");
    world.setup();
    for dir in ["shared/log", "shared/tmp/pids", "shared/config"] {
        assert!(world.deploy_to.join(dir).is_dir(), "setup did not create {dir}");
    }
    let err = world.try_deploy().expect_err("the linked file is missing");
    let text = err.to_string();
    assert!(text.contains("linked file(s) missing") && text.contains("config/database.yml"), "{text}");
    assert_eq!(world.current(), None);
    assert_eq!(world.releases(), Vec::<String>::new(), "the unfinished release was left");
    assert!(!world.locked());

    fs::write(world.deploy_to.join("shared/config/database.yml"), "secret: 1\n").unwrap();
    let report = world.deploy();
    let release = world.deploy_to.join("releases").join(&report.release);
    for path in ["config/database.yml", "log", "tmp/pids"] {
        assert_eq!(fs::read_link(release.join(path)).unwrap(), world.deploy_to.join("shared").join(path), "{path}");
    }
    assert_eq!(fs::read_to_string(release.join("config/database.yml")).unwrap(), "secret: 1\n");
}

#[test]
fn hooks_run_at_their_phases_and_artifacts_are_uploaded() {
    let world = World::with_config(
        r#"build = ["mkdir -p target/release", "cp src/main.rs target/release/hello", "chmod 755 target/release/hello"]
artifacts = ["target/release/hello"]
[package.metadata.deploy.hooks]
before_update = [{ local = "touch target/before-update" }]
after_update = [{ remote = "printf '%s' \"$REVISION\" > after-update && test ! -L \"$DEPLOY_TO/current\" || test \"$(readlink \"$DEPLOY_TO/current\")\" != \"$RELEASE_PATH\"" }]
after_publish = [{ remote = "readlink \"$DEPLOY_TO/current\" > \"$DEPLOY_TO/shared/after-publish\"" }]"#,
    );
    world.setup();
    let report = world.deploy();
    let release = world.deploy_to.join("releases").join(&report.release);
    assert!(world.app.dir().join("target/before-update").exists(), "local before_update hook did not run");
    assert_eq!(
        fs::read_to_string(release.join("after-update")).unwrap(),
        report.sha,
        "after_update ran in the release"
    );
    let published = fs::read_to_string(world.deploy_to.join("shared/after-publish")).unwrap();
    assert_eq!(published.trim(), release.display().to_string(), "after_publish ran after the switch");
    let artifact = release.join("target/release/hello");
    assert_eq!(fs::read(&artifact).unwrap(), fs::read(world.app.dir().join("src/main.rs")).unwrap());
    // git keeps one bit of a mode, the exec bit; the server's umask decides the rest, as for
    // every file of the release.
    assert_eq!(fs::metadata(&artifact).unwrap().permissions().mode() & 0o111, 0o111);
}

#[test]
fn a_failing_hook_leaves_current_removes_the_release_and_releases_the_lock() {
    let world = World::with_config(
        r#"[package.metadata.deploy.hooks]
after_update = [{ remote = "test ! -e \"$DEPLOY_TO/shared/fail\"" }]
on_failure = [{ local = "touch target/on-failure" }, { remote = "touch \"$DEPLOY_TO/shared/on-failure\"" }]"#,
    );
    world.setup();
    fs::create_dir_all(world.app.dir().join("target")).unwrap();
    let first = world.deploy();
    fs::write(world.deploy_to.join("shared/fail"), "").unwrap();
    world.commit("src/main.rs", "fn main() {}\n");
    let err = world.try_deploy().expect_err("the hook exits 1");
    assert!(matches!(err, Error::Remote { ref step, status: 1, .. } if step == "after_update"), "{err}");
    assert_eq!(world.current(), Some(first.release.clone()));
    assert_eq!(world.releases(), vec![first.release.clone()], "the unfinished release is gone");
    assert!(!world.locked(), "the lock was not released");
    assert!(world.app.dir().join("target/on-failure").exists(), "local on_failure hook did not run");
    assert!(world.deploy_to.join("shared/on-failure").exists(), "remote on_failure hook did not run");
    assert!(world.daemons().is_empty());
}

#[test]
fn deploying_the_current_commit_does_nothing_unless_forced() {
    let world = World::new();
    world.setup();
    let first = world.deploy();
    let again = world.deploy();
    assert!(again.up_to_date());
    assert_eq!(world.releases(), vec![first.release.clone()]);
    assert_eq!(world.revisions_log().len(), 1);
    assert!(!world.locked());
    let mut forced = DeployOptions::default();
    forced.force = true;
    let forced = world.deploy_with(&forced).unwrap();
    assert!(!forced.up_to_date());
    assert_eq!(world.releases(), vec![first.release, forced.release.clone()]);
    assert_eq!(world.current(), Some(forced.release));
}

#[test]
fn a_deploy_to_with_spaces_quotes_and_shell_syntax_works_end_to_end() {
    let world = World::with_deploy_dir(
        "linked_dirs = [\"it's $(touch pwned) `x`\"]\n[package.metadata.deploy.hooks]\nafter_update = [{ remote = \"pwd > where\" }]",
        "it's \"quoted\" $(touch pwned) `touch pwned2` -dash",
    );
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    world.assert_release_matches_except(&second.release, &second.sha, &["where", "it's $(touch pwned) `x`"]);
    let release = world.deploy_to.join("releases").join(&second.release);
    assert_eq!(fs::read_to_string(release.join("where")).unwrap().trim(), release.display().to_string());
    world.rollback(None).unwrap();
    assert_eq!(world.current(), Some(first.release));
    for dir in [world.server.dir(), world.deploy_to.as_path(), Path::new("/root"), Path::new("/")] {
        assert!(
            !dir.join("pwned").exists() && !dir.join("pwned2").exists(),
            "a value ran as code in {}",
            dir.display()
        );
    }
}

/// Writes a release directory as Capistrano leaves it.
fn capistrano_release(deploy_to: &Path, name: &str, sha: &str, body: &str) {
    let release = deploy_to.join("releases").join(name);
    fs::create_dir_all(&release).unwrap();
    fs::write(release.join("REVISION"), format!("{sha}\n")).unwrap();
    fs::write(release.join("index.txt"), body).unwrap();
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).current_dir(dir).status().unwrap();
    assert!(status.success(), "{args:?}");
}

#[test]
fn a_server_capistrano_3_deployed_is_taken_over_and_its_releases_stay_usable() {
    let world = World::new();
    let d = &world.deploy_to;
    fs::create_dir_all(d.join("shared")).unwrap();
    // Capistrano 3's repo/ is a mirror of the git host: bare, with an origin we must not use.
    run(world.server.dir(), &["git", "init", "-q", "--bare", d.join("repo").to_str().unwrap()]);
    run(&d.join("repo"), &["git", "remote", "add", "origin", "https://git.invalid/hello.git"]);
    capistrano_release(d, "20250101000000", &"a".repeat(40), "capistrano release\n");
    std::os::unix::fs::symlink(d.join("releases/20250101000000"), d.join("current")).unwrap();
    fs::write(
        d.join("revisions.log"),
        format!("Branch main (at {}) deployed as release 20250101000000 by carol\n", "a".repeat(40)),
    )
    .unwrap();

    world.setup();
    let report = world.deploy();
    world.assert_release_matches(&report.release, &report.sha);
    let listed = xtask_deploy::manage::releases(&world.config()).unwrap();
    let entries = listed[0].entries();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0].name.as_str(), entries[0].deployed_by.as_str()), ("20250101000000", "carol"));
    assert!(entries[1].current && entries[1].sha == report.sha);
    world.rollback(None).unwrap();
    assert_eq!(world.current().as_deref(), Some("20250101000000"));
}

#[test]
fn a_capistrano_2_cached_copy_server_is_taken_over() {
    let world = World::with_config("cache = \"cached-copy\"");
    let d = &world.deploy_to;
    // Capistrano 2's remote cache: a working copy of the app whose origin is the git host.
    let cached = d.join("shared/cached-copy");
    fs::create_dir_all(d.join("shared")).unwrap();
    run(world.server.dir(), &["git", "clone", "-q", world.app.dir().to_str().unwrap(), cached.to_str().unwrap()]);
    run(&cached, &["git", "remote", "set-url", "origin", "https://git.invalid/hello.git"]);
    capistrano_release(d, "20250101000000", &"b".repeat(40), "capistrano 2 release\n");
    std::os::unix::fs::symlink(d.join("releases/20250101000000"), d.join("current")).unwrap();

    world.setup();
    world.commit("src/main.rs", "fn main() { println!(\"v2\"); }\n");
    let report = world.deploy();
    world.assert_release_matches(&report.release, &report.sha);
    let head = xtask_deploy::local::git().args(["-C", cached.to_str().unwrap(), "rev-parse", "HEAD"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), report.sha, "the cached copy was updated");
    // Its history is as private as `repo/`'s (issue 18, finding 8), Capistrano's 0755 or not.
    let mode = fs::metadata(&cached).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "shared/cached-copy is readable by other local users");
    let origin = xtask_deploy::local::git()
        .args(["-C", cached.to_str().unwrap(), "remote", "get-url", "origin"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&origin.stdout).trim(), "https://git.invalid/hello.git");
    world.rollback(None).unwrap();
    assert_eq!(world.current().as_deref(), Some("20250101000000"));
}

#[test]
fn a_rust_binary_travels_as_a_delta_against_the_one_on_the_server() {
    let world = World::with_config(
        r#"build = ["mkdir -p target/release", "rustc -O src/main.rs -o target/release/hello"]
artifacts = ["target/release/hello", "target/release/data.bin"]"#,
    );
    // Every byte between deployer and server, SSH included, counted outside the tool.
    let relay = Relay::start(world.server.port(), Duration::ZERO).unwrap();
    world.route_through(relay.port());
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(1));
    let data = world.app.dir().join("target/release/data.bin");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::write(&data, support::incompressible(1 << 20, 7)).unwrap();
    world.setup();
    let first = world.deploy();
    let built = |release: &str| world.deploy_to.join("releases").join(release).join("target/release/hello");
    let old_binary = fs::read(built(&first.release)).unwrap();
    assert!(old_binary.len() > 1_000_000, "a real binary: {} bytes", old_binary.len());

    world.commit("src/main.rs", &xtask_deploy::demo::service_source(2));
    relay.reset();
    let second = world.deploy();
    let sent = relay.bytes_to_target();

    let local = fs::read(world.app.dir().join("target/release/hello")).unwrap();
    assert_eq!(fs::read(built(&second.release)).unwrap(), local, "the binary on the server is the local build");
    assert_ne!(local, old_binary);
    let output = Command::new(built(&second.release)).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("version 2 "), "{output:?}");
    let release = world.deploy_to.join("releases").join(&second.release);
    assert_eq!(fs::read(release.join("target/release/data.bin")).unwrap(), fs::read(&data).unwrap());
    world.assert_release_matches_except(
        &second.release,
        &second.sha,
        &["target/release/hello", "target/release/data.bin"],
    );
    assert!(world.revisions_log().last().unwrap().contains(&second.sha), "revisions.log names the source commit");

    let delta = xtask_deploy::demo::git_thin_delta(&old_binary, &local).unwrap();
    let build_bytes = second.servers[0].build_bytes.expect("the build output's bytes are counted");
    eprintln!(
        "one-line change: {sent} bytes from deployer to server over SSH, {build_bytes} of the pack for the build \
         output; git's thin-pack delta of the binaries {delta} bytes; the binary {} bytes",
        local.len()
    );
    // Besides the pack: the SSH handshake and the lines of our scripts that hold this deploy's
    // values (the server keeps the rest, see `shell::kept`), about 9 KB in all: the binary
    // (4 MB) sent whole would be 400 times that.
    assert!(sent <= 2 * delta + 16 * 1024, "sent {sent} bytes, git's delta is {delta}");
    assert!(build_bytes > 0 && build_bytes <= 2 * delta + 1024, "build output {build_bytes} bytes, delta {delta}");
}

#[test]
fn a_directory_artifact_arrives_whole_with_its_links_and_modes() {
    for cache in ["archive", "cached-copy"] {
        let world = World::with_config(&format!(
            "cache = \"{cache}\"\n{}",
            r#"build = ["mkdir -p target/dist/bin target/dist/share", "cp src/main.rs target/dist/bin/tool", "chmod 755 target/dist/bin/tool", "cp assets/data.txt target/dist/share/data.txt", "ln -sf share/data.txt target/dist/data"]
artifacts = ["target/dist"]"#
        ));
        // The tree's attributes would drop the build output from `git archive` and rewrite its
        // line endings; they apply to the source, not to the build output.
        world.commit(".gitattributes", "/target export-ignore\n*.txt text eol=crlf\n");
        world.setup();
        let report = world.deploy();
        let dist = world.deploy_to.join("releases").join(&report.release).join("target/dist");
        let tool = dist.join("bin/tool");
        assert_eq!(fs::read(&tool).unwrap(), fs::read(world.app.dir().join("src/main.rs")).unwrap(), "{cache}");
        assert_eq!(fs::metadata(&tool).unwrap().permissions().mode() & 0o111, 0o111, "{cache}: the exec bit is kept");
        let data = dist.join("share/data.txt");
        assert_eq!(fs::read(&data).unwrap(), fs::read(world.app.dir().join("assets/data.txt")).unwrap(), "{cache}");
        assert_eq!(fs::metadata(&data).unwrap().permissions().mode() & 0o111, 0, "{cache}: a plain file stays plain");
        let link = fs::read_link(dist.join("data")).unwrap();
        assert_eq!(link, Path::new("share/data.txt"), "{cache}: a link stays a link");
        world.assert_release_matches_except(
            &report.release,
            &report.sha,
            &["target/dist/bin/tool", "target/dist/share/data.txt", "target/dist/data"],
        );
        let source_text = world.deploy_to.join("releases").join(&report.release).join("assets/data.txt");
        assert!(fs::read(source_text).unwrap().ends_with(b"\r\n"), "{cache}: the source's own attributes hold");
        // The release commit is on no branch; its parent is the deployed commit. (A first deploy
        // sends the tree without the history, and git updates one ref of such a push: the
        // release commit's. So does every later one, as the server's `repo/` is shallow: the
        // deployed commit is sent as a shallow root too, and no branch is moved.)
        let git = |args: &[&str]| {
            let output =
                xtask_deploy::local::git().arg("--git-dir").arg(world.deploy_to.join("repo")).args(args).output();
            String::from_utf8(output.unwrap().stdout).unwrap().trim().to_string()
        };
        assert_eq!(git(&["rev-parse", "refs/xtask-deploy/release^"]), report.sha, "{cache}: its parent");
        world.commit("src/main.rs", "fn main() { println!(\"next\"); }\n");
        let next = world.deploy();
        assert_eq!(git(&["for-each-ref", "--format=%(objectname)", "refs/heads/"]), "", "{cache}");
        assert_eq!(git(&["rev-parse", "refs/xtask-deploy/release^"]), next.sha, "{cache}: its parent");
    }
}

/// Issue 27, item 3: `ln -sf /etc/shadow target/release/app` in the build put the file's content
/// into the release, readable by every user of the server. Given a build whose artifact is a
/// link, lies below one, or is a directory holding a link that leaves it, when I deploy, then
/// the deploy is refused before any server is changed, naming the link and where it points, and
/// the target's content is nowhere: not on the server, not in the local repository.
#[test]
fn a_build_artifact_that_is_or_holds_a_link_out_is_refused_before_any_server_is_reached() {
    // The build's links point at a file only its owner reads, outside the app.
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("shadow");
    let (dir, file) = (support::quote_path(secrets.path()), support::quote_path(&secret));
    let cases = [
        (
            "a file artifact that is a link",
            format!("mkdir -p target/release && ln -s {file} target/release/app"),
            "target/release/app",
            vec!["artifact `target/release/app` at", "is a symbolic link to", "shadow`"],
        ),
        (
            "a link inside a directory artifact",
            format!("mkdir -p target/dist && cp src/main.rs target/dist/tool && ln -s {file} target/dist/app"),
            "target/dist",
            vec!["holds `target/dist/app`", "a symbolic link to", "shadow`, outside `target/dist`"],
        ),
        (
            "a relative link climbing out of a directory artifact",
            "mkdir -p target/dist/bin && ln -s ../../../../etc/shadow target/dist/bin/app".to_string(),
            "target/dist",
            vec!["holds `target/dist/bin/app`", "a symbolic link to `../../../../etc/shadow`"],
        ),
        (
            "an artifact below a link",
            format!("ln -s {dir} dist"),
            "dist/shadow",
            vec!["artifact `dist/shadow` lies below", "a symbolic link to"],
        ),
    ];
    for (what, script, artifact, expected) in cases {
        let content = format!("root:$6$not-for-the-release:{what}\n");
        fs::write(&secret, &content).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let build = format!("sh -c {}", shlex::try_quote(&script).unwrap());
        let world = World::with_config(&format!(
            "build = [{}]\nartifacts = [{}]",
            xtask_deploy::loopback::toml_string(&build),
            xtask_deploy::loopback::toml_string(artifact)
        ));
        world.setup();
        let before = support::snapshot(&world.deploy_to);

        let err = world.try_deploy().expect_err(what);
        let message = err.to_string();
        assert!(matches!(err, Error::Local { .. }), "{what}: {message}");
        for needle in expected.iter().chain(&["`cp -L`", "no server was changed"]) {
            assert!(message.contains(needle), "{what}: no {needle:?} in: {message}");
        }
        assert_eq!(support::snapshot(&world.deploy_to), before, "{what}: the server was touched: {message}");
        assert_eq!(world.releases(), Vec::<String>::new(), "{what}");
        let blob = git2::Oid::hash_object(git2::ObjectType::Blob, content.as_bytes()).unwrap();
        assert!(!world.app.repo().odb().unwrap().exists(blob), "{what}: the secret is in the repository");
    }
}

/// A minimal ELF header of an aarch64 executable: enough for any reader to tell what it is for.
fn aarch64_elf() -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2; // 64-bit
    header[5] = 1; // little-endian
    header[6] = 1; // ELF version 1
    header[16] = 2; // an executable
    header[18] = 183; // EM_AARCH64
    header[20] = 1;
    header[52] = 64; // the header's own size
    header[54] = 56; // program header entry size
    header[58] = 64; // section header entry size
    header
}

#[test]
fn a_binary_that_cannot_run_on_the_server_is_refused_before_anything_is_sent() {
    for transport in ["daemon", "exec"] {
        let world = World::with_config(&format!(
            "transport = \"{transport}\"\nbuild = [\"mkdir -p target/release\", \"cp target/ship target/release/app\"]\n\
             artifacts = [\"target/release/app\"]"
        ));
        let ship = world.app.dir().join("target/ship");
        fs::create_dir_all(ship.parent().unwrap()).unwrap();
        // A binary of this machine runs on the loopback server, which is this machine.
        fs::copy("/bin/true", &ship).unwrap();
        world.setup();
        let first = world.deploy();
        let refused = |what: &str, expected: &[&str]| {
            let sha = world.commit("src/main.rs", &format!("// {what}\nfn main() {{}}\n"));
            let err = world.try_deploy().expect_err(what);
            let message = err.to_string();
            assert!(matches!(err, Error::Local { .. }), "{transport}, {what}: {message}");
            for needle in expected.iter().chain(&["`target/release/app`", "nothing was sent to any server"]) {
                assert!(message.contains(needle), "{transport}, {what}: no {needle:?} in: {message}");
            }
            assert_eq!(world.current(), Some(first.release.clone()), "{transport}, {what}");
            assert_eq!(world.releases(), vec![first.release.clone()], "{transport}, {what}");
            assert!(!world.locked(), "{transport}, {what}: the lock was released");
            let on_server = xtask_deploy::local::git()
                .arg("--git-dir")
                .arg(world.deploy_to.join("repo"))
                .args(["cat-file", "-e", &sha])
                .status()
                .unwrap();
            assert!(!on_server.success(), "{transport}, {what}: the commit reached the server");
        };

        // A server of an older distribution: its glibc is older than the one the binary needs.
        let getconf = world.server.bin_dir().join("getconf");
        fs::write(&getconf, "#!/bin/sh\necho 'glibc 2.17'\n").unwrap();
        fs::set_permissions(&getconf, fs::Permissions::from_mode(0o755)).unwrap();
        refused("an older glibc", &["glibc 2.17", "zigbuild"]);
        fs::remove_file(&getconf).unwrap();

        // A binary for another CPU.
        fs::write(&ship, aarch64_elf()).unwrap();
        refused("another CPU", &["aarch64", std::env::consts::ARCH]);
    }
}

#[test]
fn a_release_a_deploy_went_back_from_keeps_its_mark_until_it_is_pruned_and_warns_when_deployed_again() {
    let world = World::with_config(
        "keep_releases = 2\n[package.metadata.deploy.healthcheck]\nremote = 'test ! -e \"$DEPLOY_TO/shared/unhealthy\"'\n\
         timeout = 1\n",
    );
    world.setup();
    let first = world.deploy();
    fs::write(world.deploy_to.join("shared/unhealthy"), "").unwrap();
    let broken_sha = world.commit("src/main.rs", "fn main() { println!(\"broken\"); }\n");
    let err = world.try_deploy().expect_err("the health check fails");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    assert_eq!(world.current(), Some(first.release.clone()));
    let broken = world.releases().last().unwrap().clone();
    assert_eq!(world.bad(), vec![broken.clone()]);
    fs::remove_file(world.deploy_to.join("shared/unhealthy")).unwrap();

    // Deploying the commit of the release marked bad again: it goes, with a warning.
    let mut events = Collect::default();
    let mut options = DeployOptions::default();
    options.revision = Some(broken_sha.clone());
    xtask_deploy::deploy(&world.config(), &options, &mut events).unwrap();
    let warned = events.0.iter().any(|event| {
        matches!(event, Event::Warning { message } if message.contains(&broken) && message.contains("marked bad"))
    });
    assert!(warned, "{:?}", events.0);
    // keep_releases = 2: the release marked bad goes first, not the good one a rollback needs;
    // its mark goes with it.
    assert_eq!(world.releases(), vec![first.release.clone(), world.current().unwrap()]);
    assert_eq!(world.bad(), Vec::<String>::new(), "the mark of a pruned release is dropped");
    world.rollback(None).unwrap();
    assert_eq!(world.current(), Some(first.release.clone()), "the good release was kept for this");
}

#[test]
fn a_publish_that_fails_after_its_switch_still_sends_the_server_back() {
    let world = World::new();
    world.setup();
    let first = world.deploy();
    // Appending to `revisions.log` fails after `current` moved: the switch happened all the same.
    fs::remove_file(world.deploy_to.join("revisions.log")).unwrap();
    fs::create_dir(world.deploy_to.join("revisions.log")).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"two\"); }\n");
    let err = world.try_deploy().expect_err("publish fails");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    assert_eq!(world.current(), Some(first.release.clone()), "back on the release it had: {err}");
    assert!(!world.locked());
}

#[test]
fn a_release_left_unconfirmed_by_a_keeper_that_died_is_gone_back_from_by_the_next_deploy() {
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nafter_publish = [{ remote = 'echo \"$RELEASE ${ROLLBACK:-0}\" >> \"$DEPLOY_TO/shared/restarts\"' }]\n",
    );
    world.setup();
    let releases = releases_by_hand(&world.deploy_to, 2);
    let (old, never_confirmed) = (&releases[0].0, &releases[1].0);
    // What a keeper that died with its server (a reboot) leaves: the marker, and `current` on the
    // release nobody checked.
    fs::create_dir_all(world.deploy_to.join(".xtask-deploy")).unwrap();
    fs::write(
        world.deploy_to.join(".xtask-deploy/unconfirmed"),
        format!("token=gone\nrelease={never_confirmed}\nprevious={old}\n"),
    )
    .unwrap();
    let mut events = Collect::default();
    let report = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events).unwrap();
    let warned = events.0.iter().any(|event| {
        matches!(event, Event::Warning { message } if message.contains(&format!("went back from release {never_confirmed} to {old}")))
    });
    assert!(warned, "{:?}", events.0);
    assert!(world.bad().contains(never_confirmed), "{:?}", world.bad());
    let restarts = fs::read_to_string(world.deploy_to.join("shared/restarts")).unwrap();
    assert_eq!(restarts.lines().next(), Some(format!("{old} 1").as_str()), "restarted the release it went back to");
    assert_eq!(world.current(), Some(report.release));
}

/// A world whose `after_publish` hook runs `on_rollback` when it restarts a release gone back
/// to (`ROLLBACK` set), deployed once and then again with a health check that fails: returns
/// the world, the first release, the second deploy's error and its events.
fn unhealthy_deploy_going_back(extra: &str, on_rollback: &str) -> (World, String, Error, Collect) {
    let world = World::with_config(&format!(
        "{extra}[package.metadata.deploy.hooks]\n\
         after_publish = [{{ remote = 'if [ -n \"${{ROLLBACK:-}}\" ]; then {on_rollback}; fi' }}]\n\
         [package.metadata.deploy.healthcheck]\nremote = 'test ! -e \"$DEPLOY_TO/shared/unhealthy\"'\ntimeout = 1\n",
    ));
    world.setup();
    let first = world.deploy();
    fs::write(world.deploy_to.join("shared/unhealthy"), "").unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"two\"); }\n");
    let mut events = Collect::default();
    let err = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events).expect_err("unhealthy");
    (world, first.release, err, events)
}

#[test]
fn a_restart_hook_that_fails_while_going_back_is_named_with_what_it_printed() {
    let (world, first, err, events) = unhealthy_deploy_going_back("", "echo restart-broke >&2; exit 1");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    assert_eq!(world.current(), Some(first));
    let warning = events.0.iter().find_map(|event| match event {
        Event::Warning { message } if message.contains("restarting release") => Some(message.clone()),
        _ => None,
    });
    let warning = warning.unwrap_or_else(|| panic!("no restart warning: {:?}", events.0));
    assert!(warning.contains("exit 1; fi` (exit status 1)") && warning.contains("restart-broke"), "{warning}");
}

#[test]
fn restart_hooks_that_hang_while_going_back_do_not_hide_that_the_server_went_back() {
    let (world, first, err, events) =
        unhealthy_deploy_going_back("[package.metadata.deploy.timeouts]\nstep = 3\n", "sleep 30");
    let message = err.to_string();
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{message}");
    assert!(message.contains("the restart hooks failed on"), "{message}\n{:?}", events.0);
    assert_eq!(world.current(), Some(first));
    assert_eq!(world.our_processes_after(Duration::from_secs(5)), vec![], "the hanging restart was stopped");
}

#[test]
fn a_first_deploy_that_fails_its_health_check_is_marked_bad_and_is_deployed_again_without_force() {
    let world = World::with_config(
        "[package.metadata.deploy.healthcheck]\nremote = 'test ! -e \"$DEPLOY_TO/shared/unhealthy\"'\ntimeout = 1\n",
    );
    world.setup();
    fs::write(world.deploy_to.join("shared/unhealthy"), "").unwrap();
    let err = world.try_deploy().expect_err("the health check fails");
    let message = err.to_string();
    assert_eq!(err.exit_code(), xtask_deploy::exit::PARTIAL, "{message}");
    assert!(
        message.contains("(no earlier release to go back to)") && message.contains("deploy a fixed commit"),
        "{message}"
    );
    let failed = world.current().expect("it stays live: there is nothing to go back to");
    assert_eq!(world.bad(), vec![failed.clone()], "but marked bad");
    // Fixed on the server: the same commit deploys again, not "already current".
    fs::remove_file(world.deploy_to.join("shared/unhealthy")).unwrap();
    let again = world.try_deploy().unwrap_or_else(|err| panic!("deploy again: {err}"));
    assert_ne!(again.release, failed);
    assert_eq!(world.current(), Some(again.release));
}
