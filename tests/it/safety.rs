//! Nobody let in, nothing left waiting: the exec transport, the daemon's door, host-key
//! policies, time limits and hostile values, each against the loopback sshd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::users::LocalUser;
use crate::support::{self, git, Hold, World};
use xtask_deploy::report::{Collect, Event, Quiet};
use xtask_deploy::{DeployOptions, Error};

fn executable(path: &std::path::Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A pre-receive hook in the server's `repo/` that appends to `<deploy_to>/../seen` the git
/// daemons serving this repository while a push is received (this world's only).
fn record_daemons_during_push(world: &World) {
    executable(
        &world.deploy_to.join("repo/hooks/pre-receive"),
        "#!/bin/sh\ncat >/dev/null\nfor f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done \
         | grep 'git-daemon' | grep -cF \"$PWD\" >> ../../seen\nexit 0\n",
    );
}

#[test]
fn the_exec_transport_deploys_with_no_daemon_and_sends_only_the_change() {
    let world = World::with_config("transport = \"exec\"");
    world.setup();
    record_daemons_during_push(&world);
    let mut events = Collect::default();
    let first = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events).unwrap();
    world.assert_release_matches(&first.release, &first.sha);
    let sha = world.commit("src/main.rs", "fn main() { println!(\"exec\"); }\n");
    let second = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events).unwrap();
    assert_eq!(second.sha, sha);
    world.assert_release_matches(&second.release, &sha);
    assert!(second.servers[0].bytes_sent < 2_000, "only the change travels: {} bytes", second.servers[0].bytes_sent);
    assert!(!events.0.iter().any(|event| matches!(event, Event::DaemonReady { .. })), "a daemon was started");
    let seen = fs::read_to_string(world.server.dir().join("srv/seen")).unwrap();
    assert_eq!(seen, "0\n0\n", "a git daemon ran during an exec push");
    let state: Vec<String> = fs::read_dir(world.deploy_to.join(".xtask-deploy"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .collect();
    assert!(!state.iter().any(|name| name.ends_with(".pid")), "pid files left: {state:?}");
}

#[test]
fn the_daemon_transport_really_runs_a_daemon_during_the_push() {
    // The counterpart of the test above, so that its "0" means something.
    let world = World::new();
    world.setup();
    record_daemons_during_push(&world);
    world.deploy();
    let seen = fs::read_to_string(world.server.dir().join("srv/seen")).unwrap();
    assert!(seen.trim().parse::<u32>().unwrap() > 0, "no daemon seen: {seen}");
}

#[test]
fn a_push_refused_by_the_server_names_its_reason_with_either_transport() {
    for transport in ["daemon", "exec"] {
        let world = World::with_config(&format!("transport = \"{transport}\""));
        world.setup();
        let before = world.deploy();
        world.commit("src/main.rs", "fn main() {}\n");
        executable(
            &world.deploy_to.join("repo/hooks/pre-receive"),
            "#!/bin/sh\necho 'frozen: no deploys on Fridays' >&2\nexit 1\n",
        );
        let err = world.try_deploy().expect_err("the hook refuses");
        let text = err.to_string();
        assert!(matches!(err, Error::Push { .. }), "{transport}: {text}");
        assert!(text.contains("rejected") || text.contains("pre-receive"), "{transport}: {text}");
        // What the hook printed reaches the user through either transport (the side band).
        assert!(text.contains("frozen: no deploys on Fridays"), "{transport}: {text}");
        assert_eq!(world.current(), Some(before.release.clone()), "{transport}");
        assert_eq!(world.releases(), vec![before.release], "{transport}");
        assert!(!world.locked(), "{transport}");
    }
}

/// Puts an `awk` first on the server's `PATH` that lingers a second whenever the daemon's
/// access hook runs it (to look the connection up), so that a scan of `/proc` cannot miss the
/// hook's command line. It changes nothing the hook shows or does.
fn linger_in_access_hooks(world: &World) {
    let found = std::process::Command::new("sh").args(["-c", "command -v awk"]).output().unwrap();
    let awk = String::from_utf8(found.stdout).unwrap();
    executable(
        &world.server.bin_dir().join("awk"),
        &format!(
            "#!/bin/sh\ncase \"${{2:-}}\" in from=*) sleep 1 ;; esac\nexec {} \"$@\"\n",
            support::quote_path(std::path::Path::new(awk.trim()))
        ),
    );
}

/// Issue 18, finding 4: the daemon's one-time token was in the access hook's command line,
/// which any local user's /proc scanner saw, git daemon looked it up as a host name (a DNS
/// query off the machine), and `.xtask-deploy/daemon.N.used.<token>` named it. And the door
/// itself: another local user at the daemon's port, during our push, gets nothing in.
#[test]
fn another_local_user_at_the_daemons_port_is_let_in_for_nothing_and_sees_no_secret() {
    let world = World::as_user(std::path::Path::new("/bin/sh"), "");
    let mallory = LocalUser::create(&world.server.dir().join("home"), "/bin/sh").expect("create a local user");
    world.setup();
    world.deploy();
    // Mallory has a commit of her own to push.
    let made = mallory
        .sh("git init -q own && cd own && echo evil > EVIL && git add EVIL && \
         git -c user.name=mallory -c user.email=m@localhost commit -q -m evil && git rev-parse HEAD")
        .expect("run `runuser`");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mallory_head = String::from_utf8(made.stdout).unwrap().trim().to_string();
    // Our next push is held in pre-receive; meanwhile mallory scans /proc, as any local user can.
    linger_in_access_hooks(&world);
    let hold = hold_for_user(&world);
    executable(
        &world.deploy_to.join("repo/hooks/pre-receive"),
        &format!("#!/bin/sh\ncat >/dev/null\n{}\n", hold.fragment()),
    );
    let mut scanner = mallory
        .command(
            "while [ ! -e stop ]; do for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done; \
             done > seen",
        )
        .spawn()
        .unwrap();
    let sha = world.commit("src/main.rs", "fn main() { println!(\"ours\"); }\n");
    hold.arm();
    let config = world.config();
    let deploy = std::thread::spawn(move || xtask_deploy::deploy(&config, &DeployOptions::default(), &mut Quiet));
    assert!(hold.wait_held(Duration::from_secs(30)), "our push never reached pre-receive");
    // The access hook has let our push in: what mallory saw of it is in `seen`.
    fs::write(mallory.home.join("stop"), "").unwrap();
    scanner.wait().unwrap();

    // Our push has been let in and is being received: what the deploy keeps on the server now.
    let state: Vec<String> = fs::read_dir(world.deploy_to.join(".xtask-deploy"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .collect();
    let pidfile = state.iter().find(|name| name.starts_with("daemon.") && name.ends_with(".pid")).unwrap().clone();
    let port: u16 = pidfile["daemon.".len()..pidfile.len() - ".pid".len()].parse().unwrap();
    // She tries everything at the daemon's port.
    let repo = world.deploy_to.join("repo").display().to_string();
    let url = format!("git://127.0.0.1:{port}{repo}");
    let attempts = [
        ("push", format!("git -C own push {url} HEAD:refs/heads/evil")),
        ("push-master", format!("git -C own push {url} HEAD:refs/heads/master")),
        ("fetch", format!("git ls-remote {url}")),
        ("escape", format!("git ls-remote git://127.0.0.1:{port}{repo}/../../../{}/own", mallory.name)),
        ("other", format!("git ls-remote git://127.0.0.1:{port}/etc")),
    ];
    let outcomes: Vec<(&str, bool, String)> = attempts
        .iter()
        .map(|(what, script)| {
            let out = mallory.sh(script).expect("run `runuser`");
            (*what, out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
        })
        .collect();
    hold.release();
    let report = deploy.join().unwrap().unwrap_or_else(|err| panic!("{err}\n{}", world.server.log()));

    for (what, succeeded, stderr) in &outcomes {
        assert!(!succeeded, "mallory's `{what}` succeeded:\n{stderr}");
    }
    assert!(outcomes[0].2.contains("not a connection of this deploy"), "{}", outcomes[0].2);
    let fetch = &outcomes[2].2;
    assert!(fetch.contains("service not enabled") || fetch.contains("this daemon only receives"), "{fetch}");
    // What she saw during our push: the access hook ran, and its command line carries nothing
    // from our request but the repository's path: no host for git daemon to look up, no secret.
    let seen = fs::read_to_string(mallory.home.join("seen")).unwrap();
    let hooks: Vec<&str> = seen.lines().filter(|line| line.contains(&format!(" receive-pack {repo}"))).collect();
    assert!(!hooks.is_empty(), "the scan never caught the access hook, so this test shows nothing");
    for line in &hooks {
        let after = line.split(&format!(" receive-pack {repo}")).nth(1).unwrap();
        assert_eq!(after.trim(), "", "the access hook's command line carries more than the path: {line}");
    }
    // Nothing under `.xtask-deploy` but the lock, the daemon's pid file, the trees of the
    // releases and our scripts, during the push.
    let others = state
        .iter()
        .filter(|name| *name != "lock" && **name != pidfile && !name.starts_with("tree.") && *name != "scripts");
    assert_eq!(others.count(), 0, "{state:?}");
    // Nothing of hers is in the repository, and what was released is exactly our commit.
    let git = |args: &[&str]| {
        xtask_deploy::local::git().args(["-c", "safe.directory=*", "--git-dir", &repo]).args(args).output().unwrap()
    };
    assert!(!git(&["rev-parse", "--verify", "-q", "refs/heads/evil"]).status.success(), "her branch was stored");
    assert!(!git(&["cat-file", "-e", &mallory_head]).status.success(), "her commit was stored");
    assert_eq!(world.current(), Some(report.release.clone()));
    world.assert_release_matches(&report.release, &sha);
    // Once the push is over, the port is closed.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the daemon's port is still open");
}

#[test]
fn a_ref_moved_on_the_server_after_the_push_does_not_change_what_is_released() {
    let world = World::new();
    world.setup();
    world.deploy();
    // Whoever gets at `repo/` right after our push points every branch at a commit of theirs.
    executable(
        &world.deploy_to.join("repo/hooks/post-receive"),
        "#!/bin/sh\ncat >/dev/null\nblob=$(echo evil | git hash-object -w --stdin)\n\
         tree=$(printf '100644 blob %s\\tEVIL\\n' \"$blob\" | git mktree)\n\
         evil=$(echo evil | GIT_AUTHOR_NAME=m GIT_AUTHOR_EMAIL=m@x GIT_COMMITTER_NAME=m GIT_COMMITTER_EMAIL=m@x git commit-tree \"$tree\")\n\
         git for-each-ref --format='%(refname)' refs/heads | while read -r ref; do git update-ref \"$ref\" \"$evil\"; done\n",
    );
    let sha = world.commit("src/main.rs", "fn main() { println!(\"ours\"); }\n");
    let report = world.deploy();
    let repo = git2::Repository::open_bare(world.deploy_to.join("repo")).unwrap();
    let moved = repo.references().unwrap().flatten().filter(|r| r.target().is_some_and(|t| t.to_string() != sha));
    assert!(moved.count() > 0, "the hook did not move the branch, so this test shows nothing");
    assert_eq!(report.sha, sha);
    world.assert_release_matches(&report.release, &sha);
}

/// Rewrites the app's manifest with `edit` and commits it.
fn edit_manifest(world: &World, edit: impl FnOnce(String) -> String) {
    let text = fs::read_to_string(world.app.manifest_path()).unwrap();
    world.commit("Cargo.toml", &edit(text));
}

fn with_ssh_setting(world: &World, line: &str) {
    edit_manifest(world, |text| {
        text.replacen("[package.metadata.deploy.ssh]\n", &format!("[package.metadata.deploy.ssh]\n{line}\n"), 1)
    });
}

#[test]
fn accept_new_records_an_unknown_key_once_and_a_changed_key_is_still_refused() {
    let world = World::new();
    with_ssh_setting(&world, "host_key_policy = \"accept-new\"");
    let known_hosts = world.server.known_hosts();
    let trusted = fs::read_to_string(&known_hosts).unwrap();
    fs::remove_file(&known_hosts).unwrap();

    let mut events = Collect::default();
    xtask_deploy::setup(&world.config(), &mut events).unwrap();
    let recorded = fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");
    let entry = format!("[127.0.0.1]:{} ", world.server.port());
    assert!(recorded.starts_with(&entry), "{recorded}");
    assert_eq!(fs::metadata(&known_hosts).unwrap().permissions().mode() & 0o777, 0o600);
    let said = events.0.iter().any(|event| {
        matches!(event, Event::Warning { message } if message.contains("recorded the host key") && message.contains("SHA256:"))
    });
    assert!(said, "recording a key must be reported: {:?}", events.0);
    // The recorded key is the server's (one of its two) and is used from now on: no new line.
    let public_keys = [
        fs::read_to_string(world.server.dir().join("host_ed25519.pub")).unwrap(),
        fs::read_to_string(world.server.dir().join("host_ecdsa.pub")).unwrap(),
    ];
    let recorded_key: Vec<&str> = recorded.split_whitespace().skip(1).take(2).collect();
    assert!(public_keys.iter().any(|key| key.starts_with(&recorded_key.join(" "))), "{recorded}");
    world.deploy();
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), recorded);

    // Another key for the same host: refused, with both fingerprints, accept-new or not.
    let other = world.server.dir().join("other_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_key = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    fs::write(&known_hosts, format!("{entry}{}\n", other_key.join(" "))).unwrap();
    let err = world.try_deploy().expect_err("a changed key must be refused");
    let text = err.to_string();
    assert!(matches!(err, Error::HostKey { .. }), "{text}");
    assert!(text.contains("differs") && text.matches("SHA256:").count() >= 2, "{text}");
    assert_eq!(fs::read_to_string(&known_hosts).unwrap().lines().count(), 1, "the changed key was recorded");
    drop(trusted);
}

#[test]
fn strict_is_the_default_and_refuses_an_unknown_key() {
    let world = World::new();
    fs::write(world.server.known_hosts(), "").unwrap();
    let err = xtask_deploy::setup(&world.config(), &mut Collect::default()).expect_err("unknown key");
    assert!(matches!(err, Error::HostKey { .. }), "{err}");
    assert!(err.to_string().contains("is not in"), "{err}");
    assert_eq!(fs::read_to_string(world.server.known_hosts()).unwrap(), "", "strict must not record keys");
}

/// The server's host key as known_hosts writes it after the hosts: `<type> <base64>`.
fn server_key(world: &World) -> String {
    let trusted = fs::read_to_string(world.server.known_hosts()).unwrap();
    trusted.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ")
}

/// Asserts that `err` refuses the server's key as revoked, naming its fingerprint.
fn assert_revoked(err: &Error) {
    let text = err.to_string();
    assert!(matches!(err, Error::HostKey { .. }), "{text}");
    assert!(text.contains("is revoked") && text.contains("@revoked") && text.contains("SHA256:"), "{text}");
}

#[test]
fn a_revoked_host_key_is_refused_under_either_policy_even_when_another_line_trusts_it() {
    // Issue 18, finding 3: with `@revoked * <key>` beside the usual line, the deploy connected.
    for policy in ["strict", "accept-new"] {
        let world = World::new();
        with_ssh_setting(&world, &format!("host_key_policy = \"{policy}\""));
        let known_hosts = world.server.known_hosts();
        let trusted = fs::read_to_string(&known_hosts).unwrap();
        let text = format!("@revoked * {}\n{trusted}", server_key(&world));
        fs::write(&known_hosts, &text).unwrap();
        let err = xtask_deploy::setup(&world.config(), &mut Collect::default()).expect_err(policy);
        assert_revoked(&err);
        assert!(err.to_string().contains("line 1 of"), "{policy}: {err}");
        assert_eq!(fs::read_to_string(&known_hosts).unwrap(), text, "{policy}: known_hosts changed");
        assert!(!world.deploy_to.exists(), "{policy}: setup reached the server");
    }
}

#[test]
fn accept_new_never_records_a_revoked_key() {
    // Issue 18, finding 3: with only an `@revoked` line, accept-new appended a line trusting the key.
    let world = World::new();
    with_ssh_setting(&world, "host_key_policy = \"accept-new\"");
    let known_hosts = world.server.known_hosts();
    let text = format!("# revoked after the breach\n@revoked [127.0.0.1]:*,example.org {}\n", server_key(&world));
    fs::write(&known_hosts, &text).unwrap();
    let mut events = Collect::default();
    let err = xtask_deploy::setup(&world.config(), &mut events).expect_err("the key is revoked");
    assert_revoked(&err);
    assert_eq!(fs::read_to_string(&known_hosts).unwrap(), text, "known_hosts changed");
    assert!(!events.0.iter().any(|event| matches!(event, Event::Warning { .. })), "{:?}", events.0);
}

#[test]
fn a_cert_authority_line_is_not_a_host_line() {
    // A CA line naming the host, with the host's own key, trusts certificates signed by that key,
    // not the key itself: the host is unknown.
    let world = World::new();
    let line = format!("@cert-authority [127.0.0.1]:{} {}\n", world.server.port(), server_key(&world));
    fs::write(world.server.known_hosts(), &line).unwrap();
    let err = xtask_deploy::setup(&world.config(), &mut Collect::default()).expect_err("no host line");
    assert!(matches!(err, Error::HostKey { unknown: true, .. }) && err.to_string().contains("is not in"), "{err}");
}

#[test]
fn a_server_that_accepts_but_never_speaks_fails_within_the_connect_timeout() {
    let world = World::with_config("[package.metadata.deploy.timeouts]\nconnect = 2");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let keep = std::thread::spawn(move || {
        let connection = silent.accept();
        std::thread::sleep(Duration::from_secs(15));
        drop(connection);
    });
    let sshd_port = world.server.port();
    edit_manifest(&world, |text| text.replace(&format!("port = {sshd_port}"), &format!("port = {port}")));
    let started = Instant::now();
    let err = world.try_deploy().expect_err("nobody answers");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("timeouts.connect"), "{err}");
    drop(keep);
}

#[test]
fn a_step_over_its_time_limit_is_stopped_on_the_server_and_named() {
    let world = World::with_config(
        "[package.metadata.deploy.timeouts]\nstep = 2\n[package.metadata.deploy.hooks]\n\
         after_update = [{ remote = \"sleep 41.9 && touch ../../late\" }]",
    );
    world.setup();
    let started = Instant::now();
    let err = world.try_deploy().expect_err("the hook outlives its limit");
    assert_stopped_at_the_step_limit(&world, &err, started);
    assert!(!world.deploy_to.join("late").exists());
}

/// A deploy whose `after_update` hook ran past `timeouts.step`: it stopped in time, said why,
/// and left nothing behind.
fn assert_stopped_at_the_step_limit(world: &World, err: &Error, started: Instant) {
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.contains("after_update") && text.contains("timeouts.step"), "{text}");
    assert_eq!(world.our_processes_after(Duration::from_secs(3)), vec![], "the hook still runs");
    assert!(world.releases().is_empty(), "the unfinished release was left");
    assert!(!world.locked());
}

#[test]
fn a_step_printing_step_done_markers_still_ends_at_its_time_limit() {
    // Issue 18, finding 6: a hook printing the step-done marker once a second ran past
    // `step = 3` until it was killed. Each batch marks its steps with a nonce of its own now:
    // another batch's markers, for every step, on both streams (after the empty line the batch
    // prints before its own), and the old marker, start no step.
    let forged = "for i in 0 1 2 3; do printf '\\n%s %s\\n' @@xtask-deploy-step-0123456789abcdef $i; done";
    let hook = format!("while :; do {forged}; {forged} >&2; echo @@xtask-deploy-step-done 1; sleep 1; done");
    let world = World::with_config(&format!(
        "[package.metadata.deploy.timeouts]\nstep = 3\n[package.metadata.deploy.hooks]\n\
         after_update = [{{ remote = {} }}]",
        toml_string(&hook)
    ));
    world.setup();
    let config = world.config();
    let (sender, receiver) = std::sync::mpsc::channel();
    let started = Instant::now();
    // On a thread, so that a deploy that does not stop fails this test instead of hanging it.
    std::thread::spawn(move || {
        let _ = sender.send(xtask_deploy::deploy(&config, &DeployOptions::default(), &mut Collect::default()));
    });
    let result = receiver.recv_timeout(Duration::from_secs(20));
    let err = result.unwrap_or_else(|_| panic!("the deploy still runs after 20 s")).expect_err("stopped");
    assert_stopped_at_the_step_limit(&world, &err, started);
}

#[test]
fn a_push_over_its_time_limit_fails_and_leaves_nothing_running() {
    for transport in ["daemon", "exec"] {
        let world =
            World::with_config(&format!("transport = \"{transport}\"\n[package.metadata.deploy.timeouts]\npush = 2"));
        world.setup();
        executable(&world.deploy_to.join("repo/hooks/pre-receive"), "#!/bin/sh\nsleep 41.8\n");
        let started = Instant::now();
        let err = world.try_deploy().expect_err("the push outlives its limit");
        assert!(started.elapsed() < Duration::from_secs(10), "{transport}: took {:?}", started.elapsed());
        assert!(matches!(err, Error::Push { .. }) && err.to_string().contains("timeouts.push"), "{transport}: {err}");
        assert_eq!(world.our_processes_after(Duration::from_secs(3)), vec![], "{transport}: the push still runs");
        assert!(world.current().is_none() && world.releases().is_empty(), "{transport}");
        assert!(!world.locked(), "{transport}");
    }
}

/// A TOML string holding `value` exactly.
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// Every path under `root` whose file name is `name`.
fn named(root: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name() == name {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn hostile_values_stay_data_everywhere_they_go() {
    let evil = "it's $(touch PWNED) `touch PWNED` \"q\" ; touch PWNED \\ -x";
    let linked_file = format!("config/{evil}.yml");
    let linked_dir = "-x $(touch PWNED)";
    let hook = "printf '%s|' \"$DEPLOY_TO\" \"$RELEASE\" 'x y' > hook-out";
    let world = World::with_deploy_dir(
        &format!(
            "linked_files = [{}]\nlinked_dirs = [{}]\n[package.metadata.deploy.hooks]\nafter_update = [{{ remote = {} }}]",
            toml_string(&linked_file),
            toml_string(linked_dir),
            toml_string(hook)
        ),
        evil,
    );
    world.setup();
    assert!(world.deploy_to.join("shared").join(linked_dir).is_dir(), "setup made the linked dir");
    fs::write(world.deploy_to.join("shared").join(&linked_file), "db: x\n").unwrap();
    let branch = "x$(touch${IFS}PWNED)`touch${IFS}PWNED`";
    git(world.app.dir(), &["branch", branch]);
    let mut options = DeployOptions::default();
    options.revision = Some(branch.to_string());
    options.message = Some("line one\ntoken=forged $(touch PWNED)".to_string());
    let report = world.deploy_with(&options).unwrap_or_else(|err| panic!("{err}\n{}", world.server.log()));

    let release = world.deploy_to.join("releases").join(&report.release);
    world.assert_release_matches_except(&report.release, &report.sha, &[&linked_file, "hook-out"]);
    assert_eq!(fs::read_link(release.join(&linked_file)).unwrap(), world.deploy_to.join("shared").join(&linked_file));
    assert_eq!(
        fs::read_to_string(release.join("hook-out")).unwrap(),
        format!("{}|{}|x y|", world.deploy_to.display(), report.release)
    );
    let log = world.revisions_log();
    assert!(log.last().unwrap().starts_with(&format!("Branch {branch} (at {})", report.sha)), "{log:?}");
    // Nothing was run: no `PWNED` anywhere the shells could have been.
    let found = named(world.server.dir(), "PWNED");
    assert_eq!(found, Vec::<std::path::PathBuf>::new(), "a value was run as code");
    // A login shell starts in the home directory.
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap());
    assert!(!home.join("PWNED").exists() && !std::env::current_dir().unwrap().join("PWNED").exists());
    // Names that would leave `releases/` are refused before any script names them.
    for to in ["../../etc", "20261125041638/..", "-rf", ""] {
        let err = world.rollback(Some(to)).expect_err(to);
        assert!(err.to_string().contains("is not a release name"), "{to}: {err}");
    }
    assert_eq!(world.current(), Some(report.release));
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A deploy of `world`'s app held in an `after_update` hook (the lock taken, the release being
/// made): returns the deploy's thread once it is held. `hold` must be writable by the deploy
/// user.
fn deploy_held_in_after_update(
    world: &World,
    hold: &Hold,
) -> std::thread::JoinHandle<Result<xtask_deploy::DeployReport, Error>> {
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let hooks = format!(
        "\n[package.metadata.deploy.hooks]\nafter_update = [{{ remote = {} }}]\n",
        toml_string(&hold.fragment())
    );
    world.commit("Cargo.toml", &format!("{manifest}{hooks}"));
    hold.arm();
    let config = world.config();
    let deploy = std::thread::spawn(move || xtask_deploy::deploy(&config, &DeployOptions::default(), &mut Quiet));
    assert!(hold.wait_held(Duration::from_secs(30)), "the deploy never reached its hook");
    deploy
}

/// A [`Hold`] whose files the deploy user (not root) can make and remove.
fn hold_for_user(world: &World) -> Hold {
    let hold = Hold::new(world);
    let user = world.deploy_user.as_ref().unwrap();
    std::os::unix::fs::chown(&hold.dir, Some(user.uid), None).unwrap();
    hold
}

/// Issue 18, finding 8: `repo/`, `shared/` and `.xtask-deploy/` were 0755 (the login umask), so
/// any local user could `git log --all` the whole history and read who holds the lock.
#[test]
fn another_local_user_can_read_neither_the_history_nor_the_lock() {
    let world = World::as_user(std::path::Path::new("/bin/sh"), "");
    let user = world.deploy_user.as_ref().unwrap();
    let mallory = LocalUser::create(&world.server.dir().join("home"), "/bin/sh").expect("create a local user");
    // Whatever the system's HOME_MODE, every local user can reach `deploy_to`, as on a server
    // whose apps live in /srv or /var/www.
    fs::set_permissions(&user.home, fs::Permissions::from_mode(0o755)).unwrap();
    world.setup();
    let d = &world.deploy_to;
    assert_eq!((mode(&d.join("repo")), mode(&d.join(".xtask-deploy"))), (0o700, 0o700), "after deploy-setup");
    // A server set up by an older version: both readable by every local user.
    for dir in ["repo", ".xtask-deploy"] {
        fs::set_permissions(d.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let hold = hold_for_user(&world);
    let deploy = deploy_held_in_after_update(&world, &hold);

    // While the deploy holds the lock, mallory tries to read what any local user could.
    let q = |path: &str| support::quote_path(&d.join(path));
    let attempts = [
        ("list repo/", format!("ls {}", q("repo"))),
        ("git log --all", format!("git --git-dir={} log --all --oneline", q("repo"))),
        ("read the lock's holder", format!("cat {}", q(".xtask-deploy/lock/info"))),
        ("list .xtask-deploy/", format!("ls {}", q(".xtask-deploy"))),
    ];
    let mut got_in = Vec::new();
    for (what, script) in &attempts {
        let out = mallory.sh(script).expect("run `runuser`");
        if out.status.success() {
            got_in.push(format!("{what}: {}", String::from_utf8_lossy(&out.stdout)));
        }
    }
    let reachable = mallory.sh(&format!("ls {}", q("releases"))).expect("run `runuser`").status.success();
    let modes = (mode(&d.join("repo")), mode(&d.join(".xtask-deploy")), mode(&d.join(".xtask-deploy/lock/info")));
    hold.release();
    let report = deploy.join().unwrap().unwrap_or_else(|err| panic!("{err}\n{}", world.server.log()));
    assert!(reachable, "mallory cannot even reach deploy_to: this test shows nothing");
    assert_eq!(got_in, Vec::<String>::new(), "another local user read what only the deploy user may");
    assert_eq!(modes, (0o700, 0o700, 0o600), "the preflight tightens a server set up before");
    // The release itself keeps the deploy user's umask: an app running as another user reads it.
    let release =
        mallory.sh(&format!("cat {}", q(&format!("releases/{}/src/main.rs", report.release)))).expect("run `runuser`");
    assert!(release.status.success(), "{}", String::from_utf8_lossy(&release.stderr));
}

/// Issue 18, finding 5: any local user could block every deploy of the default transport by
/// listening on all of 127.0.0.1:10000-31999 ("no free port after 8 tries"). Here the daemon's
/// ports are narrowed to one, and another local user listens on it first.
#[test]
fn a_deploy_whose_daemon_port_is_taken_pushes_through_exec_and_says_so() {
    let world = World::new();
    world.server.open_to_local_users().unwrap();
    let mallory = LocalUser::create(&world.server.dir().join("home"), "/bin/sh").expect("create a local user");
    world.setup();
    record_daemons_during_push(&world);
    // She takes the port with what any local user has: a git daemon of her own.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut squatter = mallory
        .command(&format!("exec git daemon --verbose --listen=127.0.0.1 --port={port} --base-path=."))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(squatter.stderr.take().unwrap());
    support::read_until(&mut stderr, "Ready to rumble");
    // What her daemon logs from now on (a thread: her daemon outlives `squatter`, a `runuser`).
    let logged = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    std::thread::spawn({
        let logged = std::sync::Arc::clone(&logged);
        move || {
            for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
                logged.lock().unwrap().push_str(&format!("{line}\n"));
            }
        }
    });

    let mut options = DeployOptions::default();
    options.daemon_ports = Some(port..=port);
    let mut events = Collect::default();
    let report = xtask_deploy::deploy(&world.config(), &options, &mut events)
        .unwrap_or_else(|err| panic!("the deploy failed: {err}\n{}", world.server.log()));
    world.assert_release_matches(&report.release, &report.sha);
    let server = report.servers[0].server.clone();
    let warnings: Vec<&String> = events
        .0
        .iter()
        .filter_map(|event| match event {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        warnings.iter().any(|message| message.starts_with(&format!("{server}: no free port for the git daemon"))
            && message.contains(&port.to_string())
            && message.contains("git receive-pack")),
        "no warning names the server and why: {warnings:?}"
    );
    assert!(!events.0.iter().any(|event| matches!(event, Event::DaemonReady { .. })), "a daemon was started");
    let seen = fs::read_to_string(world.server.dir().join("srv/seen")).unwrap();
    assert_eq!(seen, "0\n", "a git daemon of the deploy ran during the push");
    // The deployer opens a tunnel only to the port the keeper says its own daemon listens on:
    // nothing of the deploy reached hers (git daemon logs every connection it accepts).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let logged = logged.lock().unwrap().clone();
    assert!(!logged.contains("Connection from"), "the deploy connected to the squatter's daemon:\n{logged}");
    let _ = squatter.kill();
    let _ = squatter.wait();
}

#[test]
fn what_the_server_sends_while_the_deployer_writes_is_not_lost() {
    // receive-pack answers as soon as it refuses an object, often before the deployer has
    // written (and flushed) its last bytes. ssh2's own `flush` discarded such unread bytes, and
    // the push's report was lost now and then (one CI run in a few, under load).
    use std::io::{Read, Write};
    let world = World::new();
    let config = world.config();
    let connection = xtask_deploy::ssh::Connection::open(&config, &config.servers[0]).unwrap();
    let script = xtask_deploy::shell::RemoteScript {
        name: "echo",
        text: "printf 'ready\\n'; IFS= read -r line; printf 'got %s\\n' \"$line\"".into(),
    };
    let mut channel = connection.exec_stream(&script, Instant::now() + Duration::from_secs(30)).unwrap();
    // "ready" is on its way back; the write below takes it in, before the flush.
    std::thread::sleep(Duration::from_millis(300));
    channel.write_all(b"x\n").unwrap();
    channel.flush().unwrap();
    let mut text = String::new();
    channel.read_to_string(&mut text).unwrap();
    assert_eq!(text, "ready\ngot x\n");
}

/// Puts a `git` first on the server's `PATH` (its `bin/`) that appends its arguments to `log`,
/// then runs git.
fn log_git_calls(world: &World, log: &std::path::Path) {
    let real = git(world.server.dir(), &["--exec-path"]);
    executable(
        &world.server.bin_dir().join("git"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec {}/git \"$@\"\n",
            support::quote_path(log),
            support::quote_path(std::path::Path::new(real.trim()))
        ),
    );
}

#[test]
fn a_batch_awaiting_a_slow_push_waits_without_starting_processes() {
    for transport in ["daemon", "exec"] {
        let world = World::with_config(&format!("transport = \"{transport}\""));
        world.setup();
        world.deploy();
        // Every git the server's sessions start is logged.
        let log = world.server.dir().join("git-calls");
        log_git_calls(&world, &log);
        // A push the server takes a second and a half to receive, as a large one would.
        executable(&world.deploy_to.join("repo/hooks/pre-receive"), "#!/bin/sh\ncat >/dev/null\nsleep 1.5\n");
        let sha = world.commit("src/main.rs", "fn main() { println!(\"slow\"); }\n");
        let report = world.deploy();
        world.assert_release_matches(&report.release, &sha);
        let calls = fs::read_to_string(&log).unwrap();
        // The batch sent ahead of the push looks at the refs when a connection to the daemon ends
        // or the deployer says the push is over: a few times, not a hundred times a second.
        let looks = calls.lines().filter(|line| line.contains("rev-parse") && line.contains("^{commit}")).count();
        assert!((1..=3).contains(&looks), "{transport}: the refs were looked at {looks} times:\n{calls}");
    }
}

/// A pre-receive hook that, during our push, sends three requests of about 64 KB to the
/// daemon's port, each line after line of what git daemon logs when a connection ends (a
/// request's text is logged before the access hook runs: anyone on 127.0.0.1 can do this), and
/// notes in `<deploy_to>/../flooded` that it did.
const FLOOD: &str = r#"#!/bin/bash
cat >/dev/null
for f in ../.xtask-deploy/daemon.*.pid; do port=${f##*/daemon.}; port=${port%.pid}; done
forged=$(for i in $(seq 3800); do echo '[1] Disconnected'; done)
payload="x
$forged"
for i in 1 2 3; do
  printf '%04x%s' $(( ${#payload} + 4 )) "$payload" > "/dev/tcp/127.0.0.1/$port" || exit 0
done
echo sent > ../../flooded
# Long enough for the daemon to log it all: the push ending stops the daemon.
sleep 3
"#;

/// Review finding: forged "Disconnected" lines in the daemon's log filled the FIFO that wakes
/// the batch awaiting the push, and the keeper blocked writing its own line there for good.
#[test]
fn forged_lines_in_the_daemons_log_do_not_wedge_the_lock_keeper() {
    let world = World::new();
    world.setup();
    world.deploy();
    executable(&world.deploy_to.join("repo/hooks/pre-receive"), FLOOD);
    // Every git the server's sessions start is logged.
    let log = world.server.dir().join("git-calls");
    log_git_calls(&world, &log);
    let sha = world.commit("src/main.rs", "fn main() { println!(\"flooded\"); }\n");
    let report = world.deploy();
    // Each wake-up costs a look at the refs: a few, not one per forged line.
    let calls = fs::read_to_string(&log).unwrap();
    let looks = calls.lines().filter(|line| line.contains("rev-parse")).count();
    assert!(looks <= 20, "the refs were looked at {looks} times");
    world.assert_release_matches(&report.release, &sha);
    let flooded = world.deploy_to.parent().unwrap().join("flooded");
    assert!(flooded.exists(), "the hook sent nothing, so this test shows nothing");
    assert!(!world.locked());
    let left = world.our_processes_after(Duration::from_secs(5));
    assert!(left.is_empty(), "left on the server: {left:?}");
    // And the next deploy finds the server as usual.
    fs::remove_file(world.deploy_to.join("repo/hooks/pre-receive")).unwrap();
    let sha = world.commit("src/main.rs", "fn main() { println!(\"after\"); }\n");
    world.assert_release_matches(&world.deploy().release, &sha);
}

/// Issue 27, item 1: every remote script was a command line (`sh -c "<script>"`), so any local
/// user read the lock (its message and token), every hook and the health check's command in
/// `/proc/<pid>/cmdline` of the deploy user's processes. Here another local user scans every
/// process's command line and environment, as fast as `cat` goes, for the whole of a deploy whose
/// message, hooks and health check each hold a marker, and sees none of them, nor any lock token.
#[test]
fn another_local_user_scanning_proc_sees_no_lock_hook_or_health_command() {
    let extra = r#"[package.metadata.deploy.hooks]
before_publish = [{ remote = "sleep 0.4; : hook-secret-before" }]
after_publish = [{ remote = "sleep 0.4; : hook-secret-after" }]
[package.metadata.deploy.healthcheck]
remote = "sleep 0.4; : health-secret-check"
"#;
    let world = World::as_user(std::path::Path::new("/bin/sh"), extra);
    let user = world.deploy_user.as_ref().unwrap();
    fs::set_permissions(&user.home, fs::Permissions::from_mode(0o755)).unwrap();
    let mallory = LocalUser::create(&world.server.dir().join("home"), "/bin/sh").expect("create a local user");
    world.setup();
    world.deploy();
    world.commit("src/main.rs", "fn main() { println!(\"scanned\"); }\n");

    let seen = mallory.home.join("seen");
    let stop = mallory.home.join("stop");
    // `[t]`: the scan's own command lines hold the pattern, which does not match itself.
    let pattern = "msg-secre[t]-[a-z]+|hook-secre[t]-[a-z]+|health-secre[t]-[a-z]+|toke[n]=[0-9a-f]+";
    let mut scanner = mallory
        .command(&format!(
            "while [ ! -e {stop} ]; do cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' \
             | grep -a -o -E '{pattern}'; echo scan; done > {seen}",
            stop = support::quote_path(&stop),
            seen = support::quote_path(&seen),
        ))
        .spawn()
        .expect("start the scan");
    // It scans before the deploy starts, and on until it is over.
    assert!(
        support::wait_until(Duration::from_secs(10), || fs::read_to_string(&seen).is_ok_and(|s| s.contains("scan")))
    );
    let mut options = DeployOptions::default();
    options.message = Some("msg-secret-lock".into());
    let report = world.deploy_with(&options);
    fs::write(&stop, "").unwrap();
    scanner.wait().unwrap();
    let report = report.unwrap_or_else(|err| panic!("{err}\n{}", world.server.log()));
    assert_eq!(world.current().as_deref(), Some(report.release.as_str()));
    let scanned = fs::read_to_string(&seen).unwrap();
    let scans = scanned.lines().filter(|line| *line == "scan").count();
    let leaks: std::collections::BTreeSet<&str> = scanned.lines().filter(|line| *line != "scan").collect();
    assert!(scans > 20, "only {scans} scans during the deploy: this test shows little");
    assert_eq!(leaks, Default::default(), "another local user read these in /proc ({scans} scans)");
}
