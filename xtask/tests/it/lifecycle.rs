//! The lifecycle commands as users run them: concurrent deploys and the lock, `--dry-run`,
//! `unlock`, `releases`, `rollback`.

use std::fs;
use std::io::BufReader;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::cli_support::{self, bad_in, stderr_of};
use crate::support::{self, current_in, read_until, releases_by_hand, World};

fn xtask(world: &World, args: &[&str]) -> Command {
    world.command(env!("CARGO_BIN_EXE_xtask"), args)
}

fn run(world: &World, args: &[&str]) -> Output {
    xtask(world, args).output().unwrap()
}

/// Takes the deploy lock of `deploy_to` as `user` on `host`, held by a live process (this test),
/// as a deploy running elsewhere would hold it; returns the lock's directory.
pub(crate) fn hold_lock(deploy_to: &std::path::Path, user: &str, host: &str) -> std::path::PathBuf {
    let lock = deploy_to.join(".xtask-deploy/lock");
    fs::create_dir_all(&lock).unwrap();
    let pid = std::process::id();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat.rsplit(") ").next().unwrap().split_whitespace().nth(19).unwrap().to_string();
    fs::write(
        lock.join("info"),
        format!(
            "user={user}\nhost={host}\nsince=2026-11-25T05:00:00Z\nsha=abc\nmessage=\ntoken=x\nconnection={pid} {start}\n"
        ),
    )
    .unwrap();
    lock
}

#[test]
fn two_deploys_at_once_one_gets_the_lock_the_other_names_the_holder() {
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nbefore_update = [{ local = \"sh -c 'while [ ! -e target/go ]; do sleep 0.1; done'\" }]",
    );
    fs::create_dir_all(world.app.dir().join("target")).unwrap();
    world.setup();
    let mut first = xtask(&world, &["deploy", "--message", "hotfix for #42"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_err = BufReader::new(first.stderr.take().unwrap());
    read_until(&mut first_err, "before_update");

    // The first deploy holds the lock and waits in its hook: a second one is refused at once.
    let second = run(&world, &["deploy"]);
    let text = stderr_of(&second);
    assert!(!second.status.success());
    let user = xtask_deploy::local::user_name().unwrap();
    let host = xtask_deploy::local::host_name();
    assert!(text.contains(&format!("is locked by {user} on {host}")), "{text}");
    assert!(text.contains("hotfix for #42") && text.contains("--lock-wait"), "{text}");
    assert!(world.locked(), "the refused deploy removed a lock it did not take");

    // With --lock-wait it waits for the first to finish, then finds the commit already current.
    let waiting = xtask(&world, &["deploy", "--lock-wait", "60"]).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    fs::write(world.app.dir().join("target/go"), "").unwrap();
    assert!(first.wait().unwrap().success());
    let waited = waiting.wait_with_output().unwrap();
    let text = stderr_of(&waited);
    assert_eq!(waited.status.code(), Some(3), "nothing to deploy: {text}");
    assert!(text.contains("Waiting") && text.contains("already current"), "{text}");
    assert!(!world.locked());
    assert_eq!(world.releases().len(), 1);
}

/// The `plan` events of a `--dry-run --json`, after checking that nothing else but the closing
/// `exit` (code 0) was printed.
fn plan_events(output: &Output) -> Vec<serde_json::Value> {
    let events: Vec<serde_json::Value> = output
        .stdout
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let (exit, plans) = events.split_last().expect("events");
    assert_eq!((exit["event"].as_str(), exit["exit_code"].as_u64()), (Some("exit"), Some(0)), "{}", stderr_of(output));
    assert!(plans.iter().all(|event| event["event"] == "plan"), "only plan events: {events:?}");
    plans.to_vec()
}

/// Runs `deploy --dry-run` and returns what it printed, once it exited 0 (a plan printed, whatever
/// it says) and left the server as it was: no entry, size or modification time changed under
/// `deploy_to`, no process left.
fn dry_run_changing_nothing(world: &World) -> String {
    let before = cli_support::listing(&world.deploy_to);
    let output = run(world, &["deploy", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let changed = cli_support::changes(&before, &cli_support::listing(&world.deploy_to));
    assert_eq!(changed, Vec::<String>::new(), "the dry run changed the server");
    assert_eq!(support::processes_left_on(&world.server, std::time::Duration::from_secs(5)), vec![]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How many SSH logins the server has seen.
fn logins(world: &World) -> usize {
    world.server.log().matches("Accepted publickey").count()
}

#[test]
fn the_build_runs_before_any_server_is_locked_so_the_lock_is_free_meanwhile() {
    // Issue 17: the lock was held for the whole build (1 min 47 s in a CI clone).
    let world = World::with_config(
        "build = [\"sh -c 'touch target/building; while [ ! -e target/go ]; do sleep 0.05; done'\"]",
    );
    fs::create_dir_all(world.app.dir().join("target")).unwrap();
    world.setup();
    let before = logins(&world);
    let deploy = xtask(&world, &["deploy"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let building = world.app.dir().join("target/building");
    assert!(support::wait_until(Duration::from_secs(30), || building.exists()), "the build never started");

    // While it builds: no lock, and another command finds the server free. The deploy may have
    // logged in once, to read the server while the build runs (`run/probe.rs`).
    assert!(logins(&world) <= before + 1, "the deploy logged in more than once during its build");
    assert!(!world.locked(), "the lock is held during the build");
    let releases = run(&world, &["releases"]);
    assert!(releases.status.success(), "{}", stderr_of(&releases));
    assert!(!String::from_utf8_lossy(&releases.stdout).contains("locked by"), "{releases:?}");

    fs::write(world.app.dir().join("target/go"), "").unwrap();
    let output = deploy.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(world.releases().len(), 1, "{stderr}");
    let (built, locked) = (stderr.find("Running build").unwrap(), stderr.find("Locked").unwrap());
    assert!(built < locked, "the status lines say the build ran under the lock:\n{stderr}");
}

#[test]
fn placed_says_whether_an_artifact_travelled_not_only_its_size() {
    // Issue 27, item 8: `Placed target/release/app (4.4 MiB)` was printed for a binary that did
    // not change and sent nothing: it read as 4.4 MiB sent.
    let world = World::with_config(
        "build = [\"mkdir -p target/release\", \"cp /bin/true target/release/app\"]\n\
         artifacts = [\"target/release/app\"]",
    );
    world.setup();
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let placed = |stderr: &str| {
        let line = stderr.lines().find(|line| line.trim_start().starts_with("Placed "));
        line.unwrap_or_else(|| panic!("no Placed line:\n{stderr}")).trim_start().to_string()
    };
    let first = run(&world, &["deploy"]);
    let stderr = stderr_of(&first);
    assert!(first.status.success(), "{stderr}");
    let line = placed(&stderr);
    assert!(line.starts_with("Placed target/release/app ("), "{line}");
    assert!(line.contains(&format!("in the release on {server}: new or changed, sent in the push's ")), "{line}");
    assert!(line.ends_with(" of build output"), "{line}");

    // A change of the source only: the binary is the same, and nothing of it travels.
    world.commit("README", "a change of the source only\n");
    let second = run(&world, &["deploy"]);
    let stderr = stderr_of(&second);
    assert!(second.status.success(), "{stderr}");
    assert!(
        placed(&stderr).ends_with(&format!("in the release on {server}: unchanged, nothing of it sent")),
        "{stderr}"
    );
}

#[test]
fn a_missing_artifact_fails_right_after_the_build_before_any_server_is_reached() {
    let world = World::with_config(
        "build = [\"mkdir -p target/release\"]\nartifacts = [\"target/release/hello\"]\n\
         [package.metadata.deploy.hooks]\non_failure = [{ local = \"touch target/on-failure\" }]",
    );
    world.setup();
    let before = logins(&world);
    let sha = world.app.repo().head().unwrap().target().unwrap().to_string();
    let output = run(&world, &["deploy"]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(i32::from(xtask_deploy::exit::LOCAL)), "{stderr}");
    assert!(stderr.contains("artifact `target/release/hello` is not at"), "{stderr}");
    assert!(stderr.contains("have a `build` command make it there") && stderr.contains("no server was changed"));
    // The servers are read while the build runs (to stop a build of a commit they all run):
    // one login, which locks nothing.
    assert!(logins(&world) <= before + 1, "the deploy logged in to the server more than once:\n{stderr}");
    assert!(!world.locked(), "{stderr}");
    assert_eq!(world.releases(), Vec::<String>::new(), "a release was made");
    let pushed = xtask_deploy::local::git()
        .arg("--git-dir")
        .arg(world.deploy_to.join("repo"))
        .args(["cat-file", "-e", &sha])
        .status();
    assert!(!pushed.unwrap().success(), "the commit was pushed");
    assert!(world.app.dir().join("target/on-failure").exists(), "the local on_failure hook did not run");
}

#[test]
fn a_dry_run_says_what_a_deploy_would_do_and_changes_nothing() {
    let world = World::with_config(
        "build = [\"true\"]\nkeep_releases = 2\nlinked_dirs = [\"log\"]\n[package.metadata.deploy.hooks]\nafter_publish = [{ remote = \"echo restarted\" }]",
    );
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let sha = world.app.repo().head().unwrap().target().unwrap().to_string();

    // Before setup: the deploy would stop at this server, and send the whole tree.
    let output = run(&world, &["deploy", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stdout.contains("  would stop   `") && stdout.contains("is not set up for deploys"), "{stdout}");
    assert!(stdout.contains("A deploy now would stop at"), "{stdout}");
    assert!(!world.deploy_to.exists(), "the dry run made deploy_to");
    world.setup();
    let plans = plan_events(&run(&world, &["deploy", "--dry-run", "--json"]));
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0]["current"], serde_json::Value::Null);
    assert!(plans[0]["transfer"].as_str().unwrap().starts_with("the whole tree (first deploy)"), "{:?}", plans[0]);
    let first_objects = plans[0]["objects"].as_u64().unwrap();
    let first = world.deploy();
    assert_eq!(first.servers[0].objects, first_objects, "the dry run counted what the first push sent");
    assert_eq!(first.sha, sha);

    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let sha = world.commit("assets/data.txt", "other data\n");
    let stdout = dry_run_changing_nothing(&world);
    for expected in [
        format!("Dry run of a deploy of HEAD ({})", &sha[..12]),
        "Locally, once:\n  build (before any server is locked): `true`\n".to_string(),
        format!("\n{server}\n"),
        format!("  current      release {} ({})\n", second.release, &second.sha[..12]),
        format!("  would deploy {} as release ", &sha[..12]),
        // The new commit, its root tree, assets/ and the new blob.
        "  would send   1 commit(s), 4 objects\n".to_string(),
        format!("  would prune  {} (`keep_releases = 2`)\n", first.release),
        "  lock         free\n".to_string(),
        "  would run    after_publish: `echo restarted`\n".to_string(),
        "A deploy would make release ".to_string(),
    ] {
        assert!(stdout.contains(&expected), "`{expected}` missing from the dry run:\n{stdout}");
    }
    assert!(!stdout.contains("## preflight"), "the scripts only with -v:\n{stdout}");

    // With -v, every script a deploy would run, per phase, in order.
    let verbose = String::from_utf8_lossy(&run(&world, &["deploy", "--dry-run", "-v"]).stdout).into_owned();
    for expected in [
        "## preflight (checks, takes the lock, holds it until this channel closes)",
        "## build: locally",
        "## push: on ",
        "git --git-dir=repo archive",
        "mv -T releases/current current",
        "## after_publish: on ",
        "## at the end, whatever happened: the preflight's channel closes, which releases the lock",
    ] {
        assert!(verbose.contains(expected), "`{expected}` missing from the dry run -v:\n{verbose}");
    }
    let order: Vec<usize> = ["## build", "## preflight", "## push", "## prepare", "## publish", "## after_publish"]
        .iter()
        .map(|h| verbose.find(h).unwrap())
        .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "phases out of order:\n{verbose}");

    // The JSON plan says the same, and the deploy then does what it said.
    let plans = plan_events(&run(&world, &["deploy", "--dry-run", "--json"]));
    let plan = &plans[0];
    assert_eq!(plan["server"].as_str(), Some(server.as_str()));
    assert_eq!(plan["current"].as_str(), Some(second.release.as_str()));
    assert_eq!(plan["current_sha"].as_str(), Some(second.sha.as_str()));
    assert_eq!(plan["sha"].as_str(), Some(sha.as_str()));
    assert_eq!(
        (plan["up_to_date"].as_bool(), plan["commits"].as_u64(), plan["objects"].as_u64()),
        (Some(false), Some(1), Some(4))
    );
    assert_eq!(plan["prune"], serde_json::json!([first.release]));
    assert_eq!(plan["locked_by"], serde_json::Value::Null);
    let steps: Vec<(&str, &str, bool)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (step["phase"].as_str().unwrap(), step["command"].as_str().unwrap(), step["local"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(steps, [("build", "true", true), ("after_publish", "echo restarted", false)]);
    let third = world.deploy();
    assert_eq!(third.servers[0].objects, 4, "the dry run counted what the push sent");
    assert_eq!(third.servers[0].removed, [first.release.as_str()], "the dry run named what was pruned");

    // Current now: a deploy would change nothing.
    let stdout = String::from_utf8_lossy(&run(&world, &["deploy", "--dry-run"]).stdout).into_owned();
    assert!(
        stdout.contains("already current: a deploy would change nothing here (exit 3) without `--force`"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{} is current on every server", &sha[..12])), "{stdout}");
    assert!(stdout.contains("would send   nothing"), "{stdout}");
    assert_eq!(run(&world, &["deploy"]).status.code(), Some(3), "as the dry run said");
}

#[test]
fn a_dry_run_names_the_lock_holder_and_a_server_it_cannot_reach() {
    let world = World::new();
    world.setup();
    world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    hold_lock(&world.deploy_to, "dave", "ci-7");
    // A second server nobody listens for.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let user = xtask_deploy::loopback::toml_string(world.server.user());
    world.edit_manifest(|manifest| {
        manifest
            + &format!("\n[[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {closed}\nuser = {user}\n")
    });
    world.app.commit_all("a second server").unwrap();
    let stdout = dry_run_changing_nothing(&world);
    assert!(stdout.contains("  lock         held by dave on ci-7"), "{stdout}");
    assert!(stdout.contains("  would stop   locked by dave on ci-7"), "{stdout}");
    let unreached = format!("127.0.0.1:{closed}\n  not reached: cannot connect to ");
    assert!(stdout.contains(&unreached), "{stdout}");
    assert!(stdout.contains(&format!("Not reached: {}@127.0.0.1:{closed}", world.server.user())), "{stdout}");
    let plans = plan_events(&run(&world, &["deploy", "--dry-run", "--json"]));
    assert_eq!(plans.len(), 2);
    assert!(plans[0]["locked_by"].as_str().unwrap().starts_with("dave on ci-7"), "{:?}", plans[0]);
    assert!(plans[1]["not_reached"].as_str().unwrap().contains("cannot connect"), "{:?}", plans[1]);
    assert_eq!(plans[1]["objects"], serde_json::Value::Null);
}

#[test]
fn unlock_leaves_a_live_lock_unless_forced_and_releases_lists_it_first() {
    let world = World::new();
    world.setup();
    world.deploy();
    hold_lock(&world.deploy_to, "dave", "ci-7");

    let listed = run(&world, &["releases"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    assert!(stdout.contains("locked by dave on ci-7"), "{stdout}");
    assert!(stdout.contains("current"), "{stdout}");

    world.commit("src/main.rs", "fn main() {}\n");
    let refused = run(&world, &["deploy"]);
    assert!(
        !refused.status.success() && stderr_of(&refused).contains("locked by dave on ci-7"),
        "{}",
        stderr_of(&refused)
    );
    // The server was reached, and the summary says so.
    let summary = stderr_of(&refused);
    assert!(summary.contains(": unchanged; connect ") && !summary.contains("not reached"), "{summary}");
    // Its holder (this test process, as its "connection") is alive: plain unlock leaves it.
    let kept = run(&world, &["unlock"]);
    assert_eq!(kept.status.code(), Some(i32::from(xtask_deploy::exit::LOCKED)), "{}", stderr_of(&kept));
    assert!(stderr_of(&kept).contains("still alive") && stderr_of(&kept).contains("--force"), "{}", stderr_of(&kept));
    assert!(world.locked(), "a live deploy's lock is left in place");
    let unlocked = run(&world, &["unlock", "--force"]);
    assert!(unlocked.status.success() && stderr_of(&unlocked).contains("dave on ci-7"), "{}", stderr_of(&unlocked));
    assert!(!world.locked());
    // Again, with no lock left: it says so instead of claiming a removal.
    let nothing = stderr_of(&run(&world, &["unlock"]));
    assert!(nothing.contains("no lock on") && nothing.contains("nothing was removed"), "{nothing}");
    assert!(!nothing.contains("Unlocked"), "{nothing}");
    let deployed = run(&world, &["deploy"]);
    assert!(deployed.status.success(), "{}", stderr_of(&deployed));
}

/// Sets `world` up, deploys twice (a commit between), and rolls back through the CLI, which
/// succeeds; returns both deploys and the rollback's output.
fn deploy_twice_then_roll_back(world: &World) -> (xtask_deploy::DeployReport, xtask_deploy::DeployReport, Output) {
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let rolled = run(world, &["rollback"]);
    assert!(rolled.status.success(), "{}", stderr_of(&rolled));
    (first, second, rolled)
}

#[test]
fn releases_and_rollback_through_the_cli() {
    let world = World::new();
    let (first, second, rolled) = deploy_twice_then_roll_back(&world);
    assert!(
        stderr_of(&rolled).contains(&format!("from {} to {}", second.release, first.release)),
        "{}",
        stderr_of(&rolled)
    );
    let listed = run(&world, &["releases"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let user = xtask_deploy::local::user_name().unwrap();
    let line = |release: &str| stdout.lines().find(|line| line.contains(release)).unwrap_or_default().to_string();
    assert!(line(&first.release).contains("current") && line(&first.release).contains(&user), "{stdout}");
    assert!(line(&second.release).contains("bad") && line(&second.release).contains(&second.sha[..12]), "{stdout}");
    // Issue 27, item 11: every column has a header, the flags' too.
    let header = stdout.lines().find(|line| line.contains("release") && line.contains("commit")).unwrap_or_default();
    let flags = line(&first.release).find("current").unwrap();
    assert_eq!(header.find("state"), Some(flags), "the flags' column has no header:\n{stdout}");
    // A release that is not there is a wrong command line (exit 2): the error lists what there is,
    // and nothing changed.
    let there = format!(
        "the releases are `{}`, `{}` on `{}@127.0.0.1:{}`",
        first.release,
        second.release,
        world.server.user(),
        world.server.port()
    );
    let single = run(&world, &["rollback", "--to", "../etc"]);
    assert_eq!(single.status.code(), Some(i32::from(xtask_deploy::exit::USAGE)), "{}", stderr_of(&single));
    assert!(stderr_of(&single).contains("`--to ../etc` is not a release name"), "{}", stderr_of(&single));
    assert!(stderr_of(&single).contains(&there), "{}", stderr_of(&single));
    let missing = run(&world, &["rollback", "--to", "20200101000000"]);
    let text = stderr_of(&missing);
    assert_eq!(missing.status.code(), Some(i32::from(xtask_deploy::exit::USAGE)), "{text}");
    assert!(text.contains("there is no release `20200101000000` (`--to`) on `"), "{text}");
    assert!(text.contains(&there.replacen("the releases are", "the releases there are", 1)), "{text}");
    assert_eq!(world.current(), Some(first.release.clone()));
    assert!(!world.locked(), "the lock was released");
    // The current release is nowhere to go back to: a wrong command line, not a failed step.
    let current = run(&world, &["rollback", "--to", &first.release]);
    let text = stderr_of(&current);
    assert_eq!(current.status.code(), Some(i32::from(xtask_deploy::exit::USAGE)), "{text}");
    assert!(text.contains("is already current on every server"), "{text}");
    assert!(!world.locked(), "the lock was released");
}

#[test]
fn pruning_takes_a_bad_release_first_and_says_when_its_files_go() {
    // Issue 27, item 9: the line said "removed before the lock is released"; the keeper renames
    // a pruned release out of sight under the lock and removes its files after the deploy.
    let world = World::with_config("keep_releases = 2");
    let (first, second, _) = deploy_twice_then_roll_back(&world);
    assert_eq!(world.bad(), vec![second.release.clone()]);
    world.commit("src/main.rs", "fn main() { println!(); }\n");
    let output = run(&world, &["deploy"]);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let said = format!(
        "Pruned old release {} on {server}: out of sight now; its files are removed on the server after this deploy",
        second.release
    );
    assert!(stderr.contains(&said), "{stderr}");
    assert!(!stderr.contains("before the lock is released"), "{stderr}");
    // The bad release went, not the older one.
    let third = world.current().unwrap();
    assert_eq!(world.releases(), vec![first.release, third]);
}

#[test]
fn a_lock_whose_connection_is_gone_is_taken_over_and_said_so() {
    let world = World::new();
    world.setup();
    // What a deploy leaves if the server went down under it: a lock whose sshd process is gone.
    let lock = world.deploy_to.join(".xtask-deploy/lock");
    fs::create_dir_all(&lock).unwrap();
    fs::write(
        lock.join("info"),
        "user=erin\nhost=old-laptop\nsince=2026-11-24T23:00:00Z\nsha=abc\nmessage=\ntoken=y\nconnection=4194000 1\n",
    )
    .unwrap();
    let listed = run(&world, &["releases"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("stale lock of erin on old-laptop"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let deployed = run(&world, &["deploy"]);
    let text = stderr_of(&deployed);
    assert!(deployed.status.success(), "{text}");
    assert!(text.contains("took over a stale lock") && text.contains("erin on old-laptop"), "{text}");
    assert!(!world.locked());
}

#[test]
fn a_deploy_killed_between_prepare_and_publish_leaves_no_release_behind() {
    // The after_update hook waits for `shared/go` (20 s at most), holding the deploy there.
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nafter_update = [{ remote = \"i=0; while [ ! -e \\\"$DEPLOY_TO/shared/go\\\" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\" }]",
    );
    world.setup();
    let go = world.deploy_to.join("shared/go");
    fs::write(&go, "").unwrap();
    let first = world.deploy();
    fs::remove_file(&go).unwrap();
    world.commit("src/main.rs", "fn main() {}\n");

    let mut child = xtask(&world, &["deploy"]).stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while world.releases().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the deploy never prepared its release");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The lock's keeper sees its channel close and removes the unfinished release.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (world.releases().len() > 1 || world.locked()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(world.releases(), vec![first.release.clone()]);
    assert!(!world.locked());
    // The hook was stopped with its deploy; even if it were not, publish finds its claim gone.
    assert_eq!(world.our_processes_after(std::time::Duration::from_secs(5)), vec![], "the hook still runs");
    fs::write(&go, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(world.current(), Some(first.release.clone()));
    assert!(fs::read_link(world.deploy_to.join("current")).unwrap().exists());
    let deployed = run(&world, &["deploy"]);
    assert!(deployed.status.success(), "{}", stderr_of(&deployed));
}

#[test]
fn releases_unmark_clears_a_mark_on_every_server_under_the_lock() {
    let world = World::new();
    let (_other, other_deploy_to) = support::add_server(&world);
    world.setup();
    let deploy_tos = [world.deploy_to.clone(), other_deploy_to];
    for deploy_to in &deploy_tos {
        releases_by_hand(deploy_to, 2);
    }
    let rolled = run(&world, &["rollback"]);
    assert!(rolled.status.success(), "{}", stderr_of(&rolled));
    let left = "20261125000002";
    assert!(stderr_of(&rolled).contains(&format!("Marked {left} bad on")), "{}", stderr_of(&rolled));
    for deploy_to in &deploy_tos {
        assert_eq!(bad_in(deploy_to), [left], "{}", deploy_to.display());
    }

    // While another deploy holds the lock on one server, nothing is unmarked anywhere.
    let lock = hold_lock(&deploy_tos[1], "dave", "ci-7");
    let refused = run(&world, &["releases", "--unmark", left]);
    assert_eq!(refused.status.code(), Some(i32::from(xtask_deploy::exit::LOCKED)), "{}", stderr_of(&refused));
    assert!(deploy_tos.iter().all(|deploy_to| bad_in(deploy_to) == [left]), "unmarked without the lock");
    fs::remove_dir_all(&lock).unwrap();

    let unmarked = run(&world, &["releases", "--unmark", left]);
    let (stdout, stderr) = (String::from_utf8_lossy(&unmarked.stdout), stderr_of(&unmarked));
    assert!(unmarked.status.success(), "{stderr}");
    assert_eq!(stderr.matches(&format!("Unmarked {left} on")).count(), 2, "{stderr}");
    for deploy_to in &deploy_tos {
        assert_eq!(bad_in(deploy_to), Vec::<String>::new(), "{}", deploy_to.display());
        assert!(!deploy_to.join(".xtask-deploy/lock").exists(), "the lock was released");
    }
    // The listing that follows shows the release without its mark.
    let line = stdout.lines().find(|line| line.contains(left)).unwrap_or_default();
    assert!(!line.is_empty() && !line.contains("bad"), "{stdout}");
    let again = run(&world, &["releases", "--unmark", left]);
    assert!(again.status.success() && stderr_of(&again).contains("was not marked bad on any server"));
    let wrong = run(&world, &["releases", "--unmark", "../etc"]);
    assert_eq!(wrong.status.code(), Some(i32::from(xtask_deploy::exit::USAGE)), "{}", stderr_of(&wrong));
    assert!(stderr_of(&wrong).contains("is not a release name"), "{}", stderr_of(&wrong));
    // A release no server has: named, with the releases of each server; nothing changed.
    let rolled = run(&world, &["rollback", "--to", left, "--mark"]);
    assert!(rolled.status.success(), "{}", stderr_of(&rolled));
    let missing = run(&world, &["releases", "--unmark", "20200101000000"]);
    let text = stderr_of(&missing);
    assert_eq!(missing.status.code(), Some(i32::from(xtask_deploy::exit::USAGE)), "{text}");
    assert!(text.contains("there is no release `20200101000000` (`--unmark`) on any server"), "{text}");
    let listed = "`20261125000001`, `20261125000002` on `";
    assert_eq!(text.matches(listed).count(), 2, "each server's releases: {text}");
    for deploy_to in &deploy_tos {
        assert_eq!(bad_in(deploy_to), ["20261125000001"], "{}", deploy_to.display());
        assert!(!deploy_to.join(".xtask-deploy/lock").exists(), "the lock was released");
    }
}

#[test]
fn releases_shows_each_commit_subject_read_on_the_server_or_in_this_clone() {
    let world = World::new();
    world.setup();
    let quoted = "Fix \"login\" page's $(redirect) `x`";
    world.app.write("src/main.rs", "fn main() {}\n").unwrap();
    world.app.commit_all(quoted).unwrap();
    let first = world.deploy();
    let long = format!("Say only what is true:{}", " every line".repeat(10));
    world.app.write("src/main.rs", "fn main() { println!(); }\n").unwrap();
    world.app.commit_all(&long).unwrap();
    let second = world.deploy();
    // A release of a commit this clone has and the server's repo/ does not (deployed by another
    // tool, say): its subject is read here.
    let here_only = world.commit("README", "not deployed\n");
    let by_hand = "20200101000000";
    fs::create_dir_all(world.deploy_to.join("releases").join(by_hand)).unwrap();
    fs::write(world.deploy_to.join("releases").join(by_hand).join("REVISION"), format!("{here_only}\n")).unwrap();

    let listed = run(&world, &["releases"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    let line = |release: &str| stdout.lines().find(|line| line.contains(release)).unwrap_or_default().to_string();
    let header = stdout.lines().nth(1).unwrap_or_default();
    assert!(header.contains(" subject ") && header.ends_with(" state"), "{stdout}");
    assert!(line(&first.release).contains(quoted), "{stdout}");
    let cut: String = long.chars().take(39).collect();
    assert!(line(&second.release).contains(&format!("{}…", cut.trim_end())), "cut to 40 characters: {stdout}");
    assert!(!line(&second.release).contains(&long), "{stdout}");
    assert!(line(&second.release).ends_with("current"), "{stdout}");
    assert!(line(by_hand).contains("change README"), "{stdout}");

    // In JSON, whole; and without this clone's commits, from the server's repo/ alone.
    let subjects = |output: &Output| -> Vec<(String, serde_json::Value)> {
        assert!(output.status.success(), "{}", stderr_of(output));
        let event: serde_json::Value =
            serde_json::from_slice(output.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let releases = event["releases"].as_array().unwrap().iter();
        releases.map(|entry| (entry["name"].as_str().unwrap().to_string(), entry["subject"].clone())).collect()
    };
    let expected = |here: serde_json::Value| {
        vec![
            (by_hand.to_string(), here),
            (first.release.clone(), serde_json::json!(quoted)),
            (second.release.clone(), serde_json::json!(long)),
        ]
    };
    assert_eq!(subjects(&run(&world, &["releases", "--json"])), expected(serde_json::json!("change README")));
    let elsewhere = tempfile::tempdir().unwrap();
    fs::copy(world.app.manifest_path(), elsewhere.path().join("Cargo.toml")).unwrap();
    fs::create_dir(elsewhere.path().join("src")).unwrap();
    fs::write(elsewhere.path().join("src/main.rs"), "fn main() {}\n").unwrap();
    assert!(xtask_deploy::local::git().args(["init", "-q"]).current_dir(elsewhere.path()).status().unwrap().success());
    let manifest = elsewhere.path().join("Cargo.toml");
    let from_server = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["releases", "--json", "--manifest-path"])
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(subjects(&from_server), expected(serde_json::Value::Null));
}

#[test]
fn releases_shows_a_release_switched_to_and_not_confirmed() {
    let world = World::new();
    world.setup();
    let releases = releases_by_hand(&world.deploy_to, 2);
    let (previous, switched) = (&releases[0].0, &releases[1].0);
    // What a deploy leaves between switching `current` and confirming the release.
    fs::write(
        world.deploy_to.join(".xtask-deploy/unconfirmed"),
        format!("token=t0k3n\nrelease={switched}\nprevious={previous}\n"),
    )
    .unwrap();
    let listed = run(&world, &["releases", "--json"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    let event: serde_json::Value =
        serde_json::from_slice(listed.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let flags: Vec<(String, bool, bool)> = event["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let flag = |name: &str| entry[name].as_bool().unwrap();
            (entry["name"].as_str().unwrap().to_string(), flag("current"), flag("unconfirmed"))
        })
        .collect();
    assert_eq!(flags, [(previous.clone(), false, false), (switched.clone(), true, true)]);
    let text = String::from_utf8_lossy(&run(&world, &["releases"]).stdout).to_string();
    let line = text.lines().find(|line| line.contains(switched.as_str())).unwrap_or_default();
    assert!(line.ends_with("current, unconfirmed"), "{text}");
}

#[test]
fn a_rollback_whose_restart_hook_or_health_check_fails_exits_7_naming_the_server() {
    let world = World::with_config(
        r#"[package.metadata.deploy.hooks]
after_publish = [{ remote = "if [ -e \"$DEPLOY_TO/shared/hook-fails\" ]; then echo cannot-restart-$RELEASE >&2; exit 3; fi" }]
[package.metadata.deploy.healthcheck]
remote = "if [ -e \"$DEPLOY_TO/shared/sick\" ]; then echo 503-from-$RELEASE; exit 1; fi"
timeout = 1
interval = 1"#,
    );
    let (other, other_deploy_to) = support::add_server(&world);
    world.setup();
    let deploy_tos = [world.deploy_to.clone(), other_deploy_to];
    for deploy_to in &deploy_tos {
        releases_by_hand(deploy_to, 2);
    }
    // The first server's service does not come back healthy; the second's cannot restart.
    fs::write(deploy_tos[0].join("shared/sick"), "").unwrap();
    fs::write(deploy_tos[1].join("shared/hook-fails"), "").unwrap();
    let rolled = run(&world, &["rollback"]);
    let text = stderr_of(&rolled);
    assert_eq!(rolled.status.code(), Some(i32::from(xtask_deploy::exit::REMOTE)), "{text}");
    let restored = "20261125000001";
    let error = text.lines().find(|line| line.starts_with("error:")).unwrap_or_default();
    assert!(
        error.contains(&format!("healthcheck failed on `{}@127.0.0.1:{}`", world.server.user(), world.server.port())),
        "{text}"
    );
    assert!(text.contains(&format!("503-from-{restored}")), "the health check's output: {text}");
    let hook = text.lines().find(|line| line.contains("after_publish failed on")).unwrap_or_default();
    assert!(hook.contains(&format!("127.0.0.1:{}`", other.port())), "{text}");
    assert!(text.contains(&format!("cannot-restart-{restored}")), "the hook's output: {text}");
    // Every server was still rolled back.
    for deploy_to in &deploy_tos {
        assert_eq!(current_in(deploy_to).as_deref(), Some(restored), "{}", deploy_to.display());
        assert!(!deploy_to.join(".xtask-deploy/lock").exists());
    }

    // Healthy and restartable again: the rollback to the other release passes.
    fs::remove_file(deploy_tos[0].join("shared/sick")).unwrap();
    fs::remove_file(deploy_tos[1].join("shared/hook-fails")).unwrap();
    let rolled = run(&world, &["rollback", "--to", "20261125000002"]);
    assert!(rolled.status.success(), "{}", stderr_of(&rolled));
    assert_eq!(stderr_of(&rolled).matches("Healthy").count(), 2, "{}", stderr_of(&rolled));
}
