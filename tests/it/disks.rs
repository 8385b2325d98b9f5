//! Disks stay bounded: after a confirmed deploy the server's `repo/` is tidied (`git gc` of
//! what no kept release reaches), off the deploy's path and never beside a deploy: the next
//! deploy stops a tidying still under way, without harm. Locally only the newest release
//! commits keep a ref.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, wait_until, World};

const ARTIFACT: &str = "target/release/app.bin";

/// A build output of `len` bytes that changes a little each `round`, as a binary does.
fn build_output(world: &World, len: usize, round: usize) {
    let mut bytes = support::incompressible(len, 11).into_bytes();
    let at = (round * 7919) % (len - 4096);
    bytes[at..at + 4096].copy_from_slice(support::incompressible(4096, round as u64 + 100).as_bytes());
    let path = world.app.dir().join(ARTIFACT);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// The bytes of every file under `dir`.
fn size_of(dir: &Path) -> u64 {
    support::files_under(dir).values().map(|bytes| bytes.len() as u64).sum()
}

/// The git processes tidying the repository at `repo` (`git gc` and what it starts there).
fn tidying(repo: &Path) -> Vec<u32> {
    let needle = format!("--git-dir={}", repo.display());
    xtask_deploy::loopback::LoopbackServer::processes_mentioning(&needle)
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(" gc "))
        .map(|(pid, _)| pid)
        .collect()
}

fn fsck(repo: &Path) {
    support::git(repo, &["fsck", "--no-progress"]);
}

#[test]
fn thirty_deploys_of_a_changing_binary_leave_repo_bounded_and_every_kept_release_usable() {
    let len = 5 << 20;
    let world = World::with_config(&format!("keep_releases = 3\nartifacts = [\"{ARTIFACT}\"]"));
    world.setup();
    let repo = world.deploy_to.join("repo");
    let mut binaries = Vec::new();
    for round in 0..30 {
        build_output(&world, len, round);
        world.commit("src/main.rs", &format!("fn main() {{ println!(\"{round}\"); }}\n"));
        let report = world.deploy();
        binaries.push((report.release, fs::read(world.app.dir().join(ARTIFACT)).unwrap()));
    }
    // The last deploy's tidying, at its own pace: its keeper ends once it is done.
    assert_eq!(world.our_processes_after(Duration::from_secs(60)), vec![], "still tidying");
    assert!(!world.locked());
    let whole = xtask_deploy::demo::git_packed_size(&binaries[29].1).unwrap();
    let source = Command::new("git")
        .arg("-C")
        .arg(world.app.dir())
        .args(["pack-objects", "--revs", "--stdout", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"HEAD\n")?;
            child.wait_with_output()
        })
        .unwrap()
        .stdout
        .len() as u64;
    let on_server = size_of(&repo.join("objects"));
    eprintln!(
        "after 30 deploys of a {len}-byte binary (packed alone: {whole} bytes), keep_releases = 3: the server's \
         repo/objects is {on_server} bytes; the source's history packs into {source}"
    );
    let refs = support::git(&repo, &["for-each-ref"]);
    let counted = support::git(&repo, &["count-objects", "-v"]);
    let logs = fs::read_dir(repo.join("objects/pack")).unwrap().flatten().map(|e| e.file_name()).collect::<Vec<_>>();
    assert!(
        on_server <= 5 * whole + source,
        "repo/objects is {on_server} bytes; the binary packed is {whole}\n{refs}\n{counted}\npacks: {logs:?}"
    );
    fsck(&repo);
    // deploy-check says how much room repo/ takes.
    let checks = xtask_deploy::run_checks(&world.config(), &mut xtask_deploy::report::Quiet);
    let disk = checks.checks.iter().find(|check| check.name == "free disk").unwrap();
    let mib = size_of(&repo) as f64 / (1024.0 * 1024.0);
    let said = disk.detail.split("repo/ takes ").nth(1).and_then(|rest| rest.strip_suffix(" MiB"));
    let said: f64 = said.and_then(|number| number.parse().ok()).unwrap_or_else(|| panic!("{}", disk.detail));
    assert!(said >= mib * 0.9 && said <= mib * 1.5, "{}; its files hold {mib:.1} MiB", disk.detail);

    // Every kept release is whole, and going back to the oldest works.
    let releases = world.releases();
    assert_eq!(releases.len(), 3, "{releases:?}");
    let oldest = &releases[0];
    world.rollback(Some(oldest)).unwrap();
    assert_eq!(world.current().as_ref(), Some(oldest));
    let (_, built) = binaries.iter().find(|(release, _)| release == oldest).unwrap();
    assert_eq!(&fs::read(world.deploy_to.join("current").join(ARTIFACT)).unwrap(), built);

    // Locally only the newest release commits keep a ref; git's own gc takes the rest.
    let kept = support::git(world.app.dir(), &["for-each-ref", "refs/xtask-deploy/releases/"]);
    assert_eq!(kept.lines().count(), 3, "{kept}");
    support::git(world.app.dir(), &["gc", "--quiet", "--prune=now"]);
    let local = size_of(&world.app.dir().join(".git/objects"));
    eprintln!("the local .git/objects after git gc --prune=now: {local} bytes");
    assert!(local <= 5 * whole + source, "the local .git/objects is {local} bytes; the binary packed is {whole}");

    // And the next deploy, after all that, works.
    build_output(&world, len, 30);
    world.commit("src/main.rs", "fn main() { println!(\"after\"); }\n");
    world.deploy();
    fsck(&repo);
}

#[test]
fn a_deploy_stops_the_tidying_an_earlier_one_left_running_and_the_repository_stays_whole() {
    let len = 24 << 20;
    let world = World::with_config(&format!("keep_releases = 2\nartifacts = [\"{ARTIFACT}\"]"));
    world.setup();
    let repo = world.deploy_to.join("repo");
    let mut caught = false;
    for round in 0..4 {
        build_output(&world, len, round);
        world.commit("src/main.rs", &format!("fn main() {{ println!(\"{round}\"); }}\n"));
        world.deploy();
        // The next deploy comes while git gc runs: it is stopped wherever it is.
        build_output(&world, len, round + 10);
        world.commit("src/main.rs", &format!("fn main() {{ println!(\"next {round}\"); }}\n"));
        if !wait_until(Duration::from_secs(10), || !tidying(&repo).is_empty()) {
            continue;
        }
        let running = tidying(&repo);
        // It holds a directory of its own, not the lock: nothing reports the server as locked.
        assert!(!world.locked(), "the tidying holds the deploy lock");
        world.deploy();
        let alive: Vec<&u32> = running.iter().filter(|pid| Path::new(&format!("/proc/{pid}")).exists()).collect();
        assert_eq!(alive, Vec::<&u32>::new(), "the tidying of the earlier deploy still runs");
        caught |= !running.is_empty();
        fsck(&repo);
    }
    assert!(caught, "no deploy found a tidying under way");
    let release = world.current().unwrap();
    world.assert_release_matches_except(&release, &world.revision_of(&release), &[ARTIFACT]);
    assert_eq!(world.our_processes_after(Duration::from_secs(60)), vec![], "still tidying");
    fsck(&repo);
}
