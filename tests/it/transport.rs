//! The receive-pack client against a real `git receive-pack` on a local bare repository: no
//! server needed, as git2-rs tests its pushes.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};

use crate::support;
use xtask_deploy::build_output::{self, Artifact};
use xtask_deploy::demo::AppRepo;
use xtask_deploy::transport::receive_pack;

/// A `git receive-pack` process as a byte stream.
struct ReceivePack(Child);

impl ReceivePack {
    fn start(bare: &std::path::Path) -> ReceivePack {
        ReceivePack(
            // As the deploy runs it on the server.
            xtask_deploy::local::git()
                .args(["-c", "receive.fsckObjects=true", "-c", "receive.shallowUpdate=true", "receive-pack"])
                .arg(bare)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Read for ReceivePack {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.stdout.as_mut().unwrap().read(buf)
    }
}

impl Write for ReceivePack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.stdin.as_mut().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.stdin.as_mut().unwrap().flush()
    }
}

impl Drop for ReceivePack {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Counts what is written through it (into a `Cell`, readable while the stream is in use).
struct Counting<'a>(&'a mut ReceivePack, &'a std::cell::Cell<u64>);

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.set(self.1.get() + n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn push(app: &AppRepo, bare: &std::path::Path, sha: &str) -> (Result<u64, String>, u64) {
    push_shared(app.repo(), bare, sha, None)
}

fn push_shared(
    repo: &git2::Repository,
    bare: &std::path::Path,
    sha: &str,
    shared: Option<&receive_pack::SharedPacks>,
) -> (Result<u64, String>, u64) {
    push_observed(repo, bare, sha, shared, &mut |_, _| {})
}

/// Like [`push_shared`], telling `pack` what the push told of its pack, with the bytes written
/// by then.
fn push_observed(
    repo: &git2::Repository,
    bare: &std::path::Path,
    sha: &str,
    shared: Option<&receive_pack::SharedPacks>,
    pack: &mut dyn FnMut(receive_pack::PackProgress, u64),
) -> (Result<u64, String>, u64) {
    let mut server = ReceivePack::start(bare);
    let written = std::cell::Cell::new(0);
    let mut stream = Counting(&mut server, &written);
    let source = receive_pack::Update { sha, refname: "refs/heads/main" };
    let packing = xtask_deploy::transport::Packing { method: Default::default(), shared, known: None, bases: None };
    let result =
        receive_pack::push_observed(repo, &mut stream, source, None, packing, &mut |told| pack(told, written.get()));
    (result.map(|sent| sent.objects).map_err(|err| err.to_string()), written.get())
}

fn ref_of(bare: &std::path::Path) -> String {
    let repo = git2::Repository::open_bare(bare).unwrap();
    repo.refname_to_id("refs/heads/main").unwrap().to_string()
}

#[test]
fn pushes_create_then_move_the_ref_with_only_a_thin_delta() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo");
    git2::Repository::init_bare(&bare).unwrap();
    let big: String = (0..2000).map(|n| format!("line {n}: {}\n", support::incompressible(16, n))).collect();
    let app = AppRepo::create(&dir.path().join("app"), &[("data.txt", &big)]).unwrap();
    let first = app.repo().head().unwrap().target().unwrap().to_string();

    let (result, first_bytes) = push(&app, &bare, &first);
    assert_eq!(result.unwrap(), 3, "a commit, its tree and the file");
    assert_eq!(ref_of(&bare), first);
    assert!(first_bytes > 20_000, "the first push carries the file: {first_bytes}");

    app.write("data.txt", &big.replacen("line 1000:", "line one thousand:", 1)).unwrap();
    let second = app.commit_all("change one line").unwrap();
    let (result, second_bytes) = push(&app, &bare, &second);
    assert_eq!(result.unwrap(), 3, "a commit, its tree and the file's delta");
    assert_eq!(ref_of(&bare), second);
    // A whole new copy of the 50 KB file would be tens of KB even compressed; a thin delta is tiny.
    assert!(second_bytes < 1_000, "only a delta travels: {second_bytes} bytes");

    // The ref can go back (a deploy of an older commit), and a push of what is there sends nothing.
    let (result, _) = push(&app, &bare, &first);
    result.unwrap();
    assert_eq!(ref_of(&bare), first);
    let (result, same_bytes) = push(&app, &bare, &first);
    assert_eq!(result.unwrap(), 0, "no pack");
    assert_eq!(same_bytes, 4, "only a flush packet");
}

#[test]
fn a_push_tells_what_its_pack_holds_as_it_starts_and_when_it_is_all_sent() {
    let dir = tempfile::tempdir().unwrap();
    let app = AppRepo::create(&dir.path().join("app"), &[("data.txt", &support::incompressible(100_000, 3))]).unwrap();
    let sha = app.repo().head().unwrap().target().unwrap().to_string();
    let shared = receive_pack::SharedPacks::default();
    // Streamed from `git pack-objects`, a pack has no size until it is all sent; made once for
    // several servers, it has one from the start: what is written from there, to the byte.
    for (name, shared) in [("streamed", None), ("shared", Some(&shared))] {
        let bare = dir.path().join(name);
        git2::Repository::init_bare(&bare).unwrap();
        let mut told = Vec::new();
        let (objects, written) = push_observed(app.repo(), &bare, &sha, shared, &mut |pack, at| told.push((pack, at)));
        assert_eq!(objects.unwrap(), 3);
        let [(receive_pack::PackProgress::Starts { objects: 3, bytes }, started), (receive_pack::PackProgress::Sent, sent)] =
            told[..]
        else {
            panic!("{name}: {told:?}");
        };
        assert_eq!(sent, written, "{name}: nothing is written after the pack");
        match shared {
            None => assert_eq!(bytes, None, "{name}"),
            Some(_) => assert_eq!(bytes, Some(written - started), "{name}: the pack's size"),
        }
    }
}

#[test]
fn an_object_refused_before_the_pack_ends_is_named_in_gits_words() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo");
    git2::Repository::init_bare(&bare).unwrap();
    for (key, value) in [("receive.fsckObjects", "true"), ("receive.unpackLimit", "1")] {
        let status = xtask_deploy::local::git().arg("--git-dir").arg(&bare).args(["config", key, value]).status();
        assert!(status.unwrap().success());
    }
    // A root tree with `x` twice, and a blob far larger than a pipe's buffer after it: the
    // server refuses the tree and stops reading while the blob is still being sent.
    let app = AppRepo::create(&dir.path().join("app"), &[("big.bin", &support::incompressible(4_000_000, 5))]).unwrap();
    let git = |args: &[&str], input: &str| {
        let mut child = xtask_deploy::local::git()
            .arg("-C")
            .arg(app.dir())
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let listing = git(&["ls-tree", "HEAD"], "");
    let tree = git(&["mktree"], &format!("{listing}\n{listing}\n").replace("\tbig.bin\n", "\tx\n"));
    let sha = git(&["commit-tree", &tree, "-m", "x twice"], "");
    let (result, _) = push(&app, &bare, &sha);
    let err = result.expect_err("the server refuses the tree");
    assert!(err.contains("duplicateEntries") && err.contains("git fsck --strict"), "{err}");
}

#[test]
fn a_declined_push_is_an_error_naming_the_ref() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo");
    git2::Repository::init_bare(&bare).unwrap();
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = AppRepo::create(&dir.path().join("app"), &[("a.txt", "a\n")]).unwrap();
    let sha = app.repo().head().unwrap().target().unwrap().to_string();
    let (result, _) = push(&app, &bare, &sha);
    let err = result.unwrap_err();
    assert!(err.contains("rejected `refs/heads/main`"), "{err}");
    assert!(git2::Repository::open_bare(&bare).unwrap().refname_to_id("refs/heads/main").is_err());
}

#[test]
fn servers_in_the_same_state_get_one_shared_pack_and_others_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let big: String = (0..2000).map(|n| format!("line {n}: {}\n", support::incompressible(16, n))).collect();
    let app = AppRepo::create(&dir.path().join("app"), &[("data.txt", &big)]).unwrap();
    let first = app.repo().head().unwrap().target().unwrap().to_string();
    let bares: Vec<std::path::PathBuf> = (0..4).map(|n| dir.path().join(format!("server{n}"))).collect();
    for bare in &bares {
        git2::Repository::init_bare(bare).unwrap();
    }
    // Servers 2 and 3 have the first commit already.
    for bare in &bares[2..] {
        push(&app, bare, &first).0.unwrap();
    }
    app.write("data.txt", &big.replacen("line 7:", "line seven:", 1)).unwrap();
    let second = app.commit_all("change one line").unwrap();

    let shared = receive_pack::SharedPacks::default();
    let git_dir = app.repo().path().to_path_buf();
    // Each in a thread of its own, as a deploy pushes to its servers.
    let pushed: Vec<(u64, u64)> = std::thread::scope(|scope| {
        let pushes: Vec<_> = bares
            .iter()
            .map(|bare| {
                let (git_dir, second, shared) = (&git_dir, &second, &shared);
                scope.spawn(move || push_shared(&git2::Repository::open(git_dir).unwrap(), bare, second, Some(shared)))
            })
            .collect();
        pushes.into_iter().map(|push| push.join().unwrap()).map(|(result, bytes)| (result.unwrap(), bytes)).collect()
    });
    for bare in &bares {
        assert_eq!(ref_of(bare), second);
    }
    assert_eq!(shared.made(), 2, "one pack for the empty servers, one for those with the first commit");
    // The empty servers got the deployed tree only (no history); the others only the new
    // commit, as a thin delta.
    assert_eq!(pushed[0], pushed[1]);
    assert_eq!(pushed[2], pushed[3]);
    assert_eq!(pushed[0].0, 3, "the commit, its tree and the file, not the first commit");
    assert_eq!(pushed[2].0, 3);
    assert!(pushed[2].1 < 1_000, "only a delta travels to a server that has the first commit: {:?}", pushed[2]);
}

#[test]
fn a_release_commit_travels_in_the_same_pack_its_binary_as_a_delta_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo");
    git2::Repository::init_bare(&bare).unwrap();
    let app = AppRepo::create(&dir.path().join("app"), &[("src/main.rs", "fn main() {}\n")]).unwrap();
    let binary = dir.path().join("app.bin");
    let mut build = support::incompressible(200_000, 9).into_bytes();
    let deploy = |round: u32, build: &[u8]| {
        std::fs::write(&binary, build).unwrap();
        let sha = app.commit_all(&format!("round {round}")).unwrap_or_else(|_| {
            app.write("round.txt", &round.to_string()).unwrap();
            app.commit_all(&format!("round {round}")).unwrap()
        });
        let artifacts = [Artifact { local: binary.clone(), path: "target/release/app".into() }];
        let release = build_output::make(app.repo(), &sha, &artifacts, &[]).unwrap();
        build_output::keep(app.repo(), &format!("2026112910000{round}"), &release.sha, 5).unwrap();
        let mut server = ReceivePack::start(&bare);
        let written = std::cell::Cell::new(0);
        let mut stream = Counting(&mut server, &written);
        let source = receive_pack::Update { sha: &sha, refname: "refs/heads/main" };
        let built = receive_pack::Update { sha: &release.sha, refname: build_output::REMOTE_REF };
        let sent = receive_pack::push(app.repo(), &mut stream, source, Some(built), None).unwrap();
        (sha, release.sha, sent, written.get())
    };
    let (sha, release, first, _) = deploy(1, &build);
    let server = git2::Repository::open_bare(&bare).unwrap();
    // A first push sends the tree, not the history, and so only the release commit's ref (git
    // updates one ref of a push with shallow roots); it carries the deployed commit.
    assert_eq!(server.refname_to_id(build_output::REMOTE_REF).unwrap().to_string(), release);
    let parent = server.find_commit(git2::Oid::from_str(&release).unwrap()).unwrap().parent_id(0).unwrap();
    assert_eq!(parent.to_string(), sha);
    assert!(first.build_bytes > 150_000, "the first binary travels whole: {first:?}");

    // A one-line change: a few bytes of the binary differ.
    app.write("src/main.rs", "fn main() { println!(); }\n").unwrap();
    build[100_000..100_010].copy_from_slice(b"0123456789");
    let (sha, release, second, bytes) = deploy(2, &build);
    // The server is shallow: this push sends its commit as a shallow root too, and so moves
    // only the release commit's ref, which carries the deployed commit.
    assert!(server.refname_to_id("refs/heads/main").is_err(), "a push with shallow roots moves one ref");
    assert_eq!(server.refname_to_id(build_output::REMOTE_REF).unwrap().to_string(), release);
    let parent = server.find_commit(git2::Oid::from_str(&release).unwrap()).unwrap().parent_id(0).unwrap();
    assert_eq!(parent.to_string(), sha);
    let blob = server.revparse_single(&format!("{release}:target/release/app")).unwrap();
    assert_eq!(blob.as_blob().unwrap().content(), build.as_slice(), "the server has the new binary");
    assert!(second.build_bytes < 1_000, "the binary travels as a delta: {second:?}");
    assert!(second.build_bytes < bytes, "counted apart from the rest: {second:?} of {bytes}");
    // commit, root tree, src/ and main.rs; release commit, root, target/, release/ and the binary.
    assert_eq!(second.objects, 4 + 5, "{second:?}");
    let fsck = xtask_deploy::local::git().arg("--git-dir").arg(&bare).args(["fsck", "--strict"]).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
}

#[test]
fn an_artifact_equal_to_an_object_of_the_history_is_not_sent_twice() {
    // A receiving end that checks objects refuses a pack holding an object twice.
    for (unpack_limit, fsck) in [("1", "true"), ("100", "true")] {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repo");
        git2::Repository::init_bare(&bare).unwrap();
        let config = |key: &str, value: &str| {
            let status = xtask_deploy::local::git().arg("--git-dir").arg(&bare).args(["config", key, value]).status();
            assert!(status.unwrap().success());
        };
        config("receive.unpackLimit", unpack_limit);
        config("receive.fsckObjects", fsck);
        // The server has the first commit; `old.txt`, in the history pushed now but not in the
        // deployed tree, equals the build output.
        let app = AppRepo::create(&dir.path().join("app"), &[("a.txt", "a\n")]).unwrap();
        let first = app.repo().head().unwrap().target().unwrap().to_string();
        push(&app, &bare, &first).0.unwrap();
        app.write("old.txt", "vendored v1\n").unwrap();
        app.commit_all("add old.txt").unwrap();
        std::fs::remove_file(app.dir().join("old.txt")).unwrap();
        let sha = app.commit_all("remove old.txt").unwrap();
        let local = dir.path().join("lib.js");
        std::fs::write(&local, "vendored v1\n").unwrap();
        let artifacts = [Artifact { local, path: "public/lib.js".into() }];
        let release = build_output::make(app.repo(), &sha, &artifacts, &[]).unwrap();
        let mut server = ReceivePack::start(&bare);
        let source = receive_pack::Update { sha: &sha, refname: "refs/heads/main" };
        let built = receive_pack::Update { sha: &release.sha, refname: build_output::REMOTE_REF };
        let sent = receive_pack::push(app.repo(), &mut server, source, Some(built), None);
        let sent = sent.unwrap_or_else(|err| panic!("unpackLimit {unpack_limit}: {err}"));
        // The server's `repo/` is shallow (the first push sent the tree): the deployed commit
        // is sent as a shallow root, without the history that had `old.txt`. So: the commit
        // (its tree is the first one's); the release commit, its root, public/ and the blob,
        // once, in the build output's part.
        assert_eq!(sent.objects, 1 + 4, "unpackLimit {unpack_limit}: {sent:?}");
        let server = git2::Repository::open_bare(&bare).unwrap();
        let blob = server.revparse_single(&format!("{}:public/lib.js", release.sha)).unwrap();
        assert_eq!(blob.as_blob().unwrap().content(), b"vendored v1\n");
    }
}

/// Issue 27, item 12: every deploy left `connect_to 127.0.0.1 port <daemon port>: failed` in the
/// server's sshd log (a tunnel opened before the daemon listened): noise that alarms whoever
/// reads the logs, and intrusion detectors. The log of a first and an incremental deploy through
/// the daemon holds no failed connect.
#[test]
fn a_deploy_leaves_no_failed_connect_in_the_sshd_log() {
    let world = support::World::with_config("transport = \"daemon\"");
    world.setup();
    world.deploy();
    world.commit("src/main.rs", "fn main() { println!(\"quiet\"); }\n");
    world.deploy();
    let log = world.server.log();
    assert!(log.contains("Accepted publickey"), "the log is sshd's: {log}");
    let failed: Vec<&str> = log.lines().filter(|line| line.contains("connect_to")).collect();
    assert_eq!(failed, Vec::<&str>::new(), "{log}");
}
