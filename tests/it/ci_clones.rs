//! Deploys from a fresh CI clone, which holds none of the servers' build output: the binaries
//! still travel as deltas, against the server's own release commit, fetched once per deploy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xtask_deploy::relay::Relay;
use xtask_deploy::report::Collect;
use xtask_deploy::{Config, DeployOptions, DeployReport};

use crate::support::{self, World};

/// A service built by rustc (a few MB, as cargo's release builds are) with a data file beside it.
const BUILT: &str = r#"build = ["mkdir -p target/release", "rustc -O src/main.rs -o target/release/hello"]
artifacts = ["target/release/hello", "target/release/data.bin"]"#;

/// The data file every checkout has (made by the build in a real app; the same bytes each time).
fn write_data(dir: &Path) {
    let data = dir.join("target/release/data.bin");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::write(&data, support::incompressible(1 << 20, 7)).unwrap();
}

/// A world whose app is the service, at version 1, deployed from the app's own repository (a
/// laptop that keeps its release commits).
fn deployed_service(servers: usize) -> (World, Vec<(xtask_deploy::loopback::LoopbackServer, PathBuf)>, Relay) {
    let world = World::with_config(BUILT);
    let relay = Relay::start(world.server.port(), Duration::ZERO).unwrap();
    world.route_through(relay.port());
    let others = support::add_servers(&world, servers - 1);
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(1));
    write_data(world.app.dir());
    world.setup();
    world.deploy();
    (world, others, relay)
}

/// What CI checks out: a depth-1 clone of the app as it is now, with its data file.
fn ci_clone(world: &World, name: &str) -> (PathBuf, Config) {
    let clone = world.server.dir().join(name);
    let url = format!("file://{}", world.app.dir().display());
    let cloned = xtask_deploy::local::git().args(["clone", "-q", "--depth", "1", &url]).arg(&clone).status();
    assert!(cloned.unwrap().success());
    write_data(&clone);
    let config = Config::load(Some(&clone.join("Cargo.toml"))).unwrap();
    (clone, config)
}

fn deploy(config: &Config) -> DeployReport {
    xtask_deploy::deploy(config, &DeployOptions::default(), &mut Collect::default())
        .unwrap_or_else(|err| panic!("a deploy from a fresh clone: {err}"))
}

/// The binary of `release` on the server at `deploy_to`.
fn binary(deploy_to: &Path, release: &str) -> Vec<u8> {
    fs::read(deploy_to.join("releases").join(release).join("target/release/hello")).unwrap()
}

/// Every object the repository at `dir` has, as `git cat-file` lists them.
fn objects(dir: &Path) -> Vec<String> {
    let listed = support::git(dir, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"]);
    listed.lines().map(str::to_string).collect()
}

/// Checks what a deploy from a clone with none of the server's build output did: the release
/// holds the clone's binary, which runs; the binary travelled as a delta against the server's
/// (`sent`: the push's bytes to one server); the server's binary came down once, compressed; the
/// clone's repository was left without the server's release commit `tip`. Returns the size of
/// the old binary packed alone.
fn assert_sent_as_delta(world: &World, report: &DeployReport, old: &[u8], clone: &Path, sent: u64, tip: &str) -> u64 {
    let (delta, whole) = assert_sent_as_delta_to(world, report, old, clone, tip, 2);
    assert!(sent <= 2 * delta + 32 * 1024, "pushed {sent} bytes; git's delta is {delta}");
    whole
}

/// [`assert_sent_as_delta`], but with the binary of `version`, and without a bound on the whole
/// push (only on each server's build output). Returns git's own thin delta of the two binaries
/// and the size of the old one packed alone.
fn assert_sent_as_delta_to(
    world: &World,
    report: &DeployReport,
    old: &[u8],
    clone: &Path,
    tip: &str,
    version: u32,
) -> (u64, u64) {
    let new = fs::read(clone.join("target/release/hello")).unwrap();
    assert_ne!(new, old, "the change changed the binary");
    let released = binary(&world.deploy_to, &report.release);
    assert_eq!(released, new, "the server has the binary the clone built");
    let ran = Command::new(world.deploy_to.join("releases").join(&report.release).join("target/release/hello"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with(&format!("version {version} ")), "{ran:?}");
    world.assert_release_matches_except(
        &report.release,
        &report.sha,
        &["target/release/hello", "target/release/data.bin"],
    );
    let delta = xtask_deploy::demo::git_thin_delta(old, &new).unwrap();
    let whole = xtask_deploy::demo::git_packed_size(old).unwrap();
    let received: u64 = report.servers.iter().map(|server| server.bytes_received).sum();
    let fetched_from = report.servers.iter().filter(|server| server.bytes_received > 0).count();
    eprintln!(
        "without the server's build output: pushed {:?} bytes; git's thin delta {delta}; {received} bytes of \
         delta bases came down; the old binary packed alone is {whole} bytes",
        report.servers.iter().map(|server| server.bytes_sent).collect::<Vec<_>>()
    );
    assert_eq!(fetched_from, 1, "the bases came from one server: {:?}", report.servers);
    // The binary, the commit and the trees of a small app; the data file is the clone's already.
    assert!(received <= whole + 4096, "{received} bytes came down; the binary packed is {whole}");
    for server in &report.servers {
        let build = server.build_bytes.expect("counted apart");
        assert!(build <= 2 * delta + 1024, "{} bytes of build output; git's delta is {delta}", build);
    }
    assert!(
        !objects(clone).contains(&tip.to_string()),
        "the fetched release commit stays out of the clone's repository"
    );
    (delta, whole)
}

/// The server's newest release commit (its `refs/xtask-deploy/release`).
fn server_tip(deploy_to: &Path) -> String {
    support::git(&deploy_to.join("repo"), &["rev-parse", "refs/xtask-deploy/release"])
}

#[test]
fn a_fresh_depth_1_clone_sends_the_binary_as_a_delta_against_the_one_on_the_server() {
    let (world, _, relay) = deployed_service(1);
    // A laptop deploy first, for what a deploy sends besides its pack (SSH, our scripts).
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(3));
    relay.reset();
    let laptop = world.deploy();
    let laptop_rest = relay.bytes_to_target() - laptop.servers[0].bytes_sent;
    let first = binary(&world.deploy_to, &laptop.release);

    world.commit("src/main.rs", &xtask_deploy::demo::service_source(2));
    let (clone, config) = ci_clone(&world, "ci-clone");
    let tip = server_tip(&world.deploy_to);
    relay.reset();
    let report = deploy(&config);
    let (up, down) = (relay.bytes_to_target(), relay.bytes_from_target());
    let pushed = report.servers[0].bytes_sent;
    eprintln!(
        "over the whole SSH connection: {up} bytes up ({pushed} of them the push; a laptop's deploy sends \
         {laptop_rest} besides its push), {down} bytes down"
    );
    let whole = assert_sent_as_delta(&world, &report, &first, &clone, pushed, &tip);
    // Besides its push, what a laptop's deploy sends too (SSH, our scripts) and the request
    // for the bases.
    assert!(up - pushed <= laptop_rest + 4096, "{} bytes besides the push; a laptop's {laptop_rest}", up - pushed);
    // Coming down besides the bases: the SSH handshake and what the scripts print.
    assert!(down <= whole + 32 * 1024, "{down} bytes came down; the binary packed is {whole}");
}

#[test]
fn small_build_output_from_a_fresh_clone_is_sent_whole_without_fetching_anything() {
    let world = World::with_config("artifacts = [\"target/release/small.bin\"]");
    let write = |dir: &Path, round: u64| {
        let path = dir.join("target/release/small.bin");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, support::incompressible(16 * 1024, round)).unwrap();
    };
    write(world.app.dir(), 1);
    world.setup();
    world.deploy();
    world.commit("src/main.rs", "fn main() { println!(\"2\"); }\n");
    let (clone, config) = ci_clone(&world, "ci-clone");
    write(&clone, 2);
    let report = deploy(&config);
    // 16 KiB to one server: fetching the server's copy would cost as much as sending it whole.
    assert_eq!(report.servers[0].bytes_received, 0, "{:?}", report.servers[0]);
    let sent = fs::read(world.deploy_to.join("current/target/release/small.bin")).unwrap();
    assert_eq!(sent, fs::read(clone.join("target/release/small.bin")).unwrap());
}

#[test]
fn with_four_servers_the_bases_come_down_once_and_each_server_gets_the_delta() {
    let (world, others, _relay) = deployed_service(4);
    let first = binary(&world.deploy_to, &world.current().unwrap());
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(2));
    let (clone, config) = ci_clone(&world, "ci-clone");
    let tip = server_tip(&world.deploy_to);
    let report = deploy(&config);
    assert_eq!(report.servers.len(), 4);
    let sent: u64 = report.servers.iter().map(|server| server.bytes_sent).sum();
    let most = report.servers.iter().map(|server| server.bytes_sent).max().unwrap();
    eprintln!("four servers: pushed {sent} bytes in all, {most} at most to one");
    // Each server within one server's bound; the bases came down once (checked here too).
    assert_sent_as_delta(&world, &report, &first, &clone, most, &tip);
    for (_, deploy_to) in &others {
        assert_eq!(binary(deploy_to, &report.release), binary(&world.deploy_to, &report.release));
    }
}

#[test]
fn a_laptop_deploy_after_a_ci_deploy_and_an_unchanged_binary_send_no_binary_whole() {
    let (world, _, _relay) = deployed_service(1);
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(2));
    let (_, config) = ci_clone(&world, "ci-clone");
    let from_ci = deploy(&config);
    let built_by_ci = binary(&world.deploy_to, &from_ci.release);

    // The laptop lacks the release commit CI made: its binary (version 3) goes against CI's.
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(3));
    let tip = server_tip(&world.deploy_to);
    let from_laptop = world.deploy();
    assert_sent_as_delta_to(&world, &from_laptop, &built_by_ci, world.app.dir(), &tip, 3);

    // A change that leaves the binary as it is, from a fresh clone: its build output is the
    // server's already, and nothing of it travels or comes down.
    world.commit("README.md", "docs only\n");
    let (_, config) = ci_clone(&world, "ci-clone-2");
    let same = deploy(&config);
    let server = &same.servers[0];
    // The release commit and the trees that lead to the build output, no blob (1 MB each).
    assert!(server.build_bytes.is_some_and(|bytes| bytes < 1024), "{server:?}");
    assert!(server.bytes_received < 4096, "only the commit and its trees came down: {server:?}");
    assert_eq!(binary(&world.deploy_to, &same.release), binary(&world.deploy_to, &from_laptop.release));
}

#[test]
fn a_fetch_of_the_bases_that_fails_is_named_and_the_binary_travels_whole() {
    let (world, _, _relay) = deployed_service(1);
    // The server's git cannot make a pack (what the fetch asks of it); it receives as before.
    let real = Command::new("sh").arg("-c").arg("command -v git").output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    let shim = world.server.bin_dir().join("git");
    fs::create_dir_all(shim.parent().unwrap()).unwrap();
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\n[ \"$1\" = pack-objects ] && {{ echo 'no packs today' >&2; exit 1; }}\nexec '{real}' \"$@\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    world.commit("src/main.rs", &xtask_deploy::demo::service_source(2));
    let (clone, config) = ci_clone(&world, "ci-clone");
    let mut events = Collect::default();
    let report = xtask_deploy::deploy(&config, &DeployOptions::default(), &mut events).expect("deployed all the same");
    let warned = events.0.iter().any(|event| match event {
        xtask_deploy::report::Event::Warning { message } => {
            message.contains("could not fetch its release commit")
                && message.contains("the server said: no packs today")
                && message.contains("travels whole")
        }
        _ => false,
    });
    assert!(warned, "no warning names the failed fetch: {:?}", events.0);
    assert_eq!(report.servers[0].bytes_received, 0);
    let new = fs::read(clone.join("target/release/hello")).unwrap();
    assert_eq!(binary(&world.deploy_to, &report.release), new, "the server has the binary the clone built");
    let whole = xtask_deploy::demo::git_packed_size(&new).unwrap();
    assert!(report.servers[0].build_bytes.unwrap() >= whole / 2, "{:?}", report.servers[0]);
}
