//! What CI pipelines rely on, through the `xtask` binary against real loopback sshds: the
//! `--json` event stream, one exit code per kind of outcome, credentials from the environment,
//! `--verbose`, and `deploy-check` on a server in each broken state it reports.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli_support::stderr_of;
use crate::support::{self, add_server, snapshot, Hold, World};
use serde_json::Value;
use xtask_deploy::exit;

fn xtask(world: &World, args: &[&str]) -> Command {
    world.command(env!("CARGO_BIN_EXE_xtask"), args)
}

fn run(world: &World, args: &[&str]) -> Output {
    xtask(world, args).output().unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

/// Every stdout line parsed as JSON; each must be an object with `"schema": 1`.
fn json_lines(output: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            assert_eq!(value["schema"], 1, "no schema version: {line}");
            value
        })
        .collect()
}

fn names(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|line| line["event"].as_str().unwrap()).collect()
}

fn find<'a>(lines: &'a [Value], event: &str) -> &'a Value {
    lines.iter().find(|line| line["event"] == event).unwrap_or_else(|| panic!("no `{event}` in {lines:?}"))
}

/// Starts a deploy that takes the lock and waits in a `before_publish` hook until released.
fn hold_a_deploy(world: &World) -> (Hold, std::process::Child) {
    let hold = Hold::new(world);
    world.edit_manifest(|text| {
        format!("{text}\n[package.metadata.deploy.hooks]\nbefore_publish = [{{ remote = \"{}\" }}]\n", hold.fragment())
    });
    world.app.commit_all("hold before publish").unwrap();
    hold.arm();
    let held = xtask(world, &["deploy"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    (hold, held)
}

#[test]
fn the_json_stream_of_a_deploy_has_every_phase_then_the_summary() {
    let world = World::new();
    assert_eq!(code(&run(&world, &["deploy-setup"])), 0);
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    let lines = json_lines(&output);
    assert_eq!(
        names(&lines),
        [
            "started",
            "connected",
            "locked",
            "daemon_ready",
            "pushing",
            "pushed",
            "prepared",
            "published",
            "summary",
            "exit"
        ]
    );
    let sha = world.app.repo().head().unwrap().target().unwrap().to_string();
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    assert_eq!(find(&lines, "started")["sha"], sha.as_str());
    assert_eq!(find(&lines, "started")["servers"], serde_json::json!([server]));
    let pushed = find(&lines, "pushed");
    assert!(pushed["bytes_sent"].as_u64().unwrap() > 500, "{pushed}");
    assert!(pushed["objects"].as_u64().unwrap() >= 6, "commit, trees, 3 files: {pushed}");
    let summary = find(&lines, "summary");
    assert_eq!(summary["outcome"], "deployed");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["sha"], sha.as_str());
    assert_eq!(summary["release"], world.current().unwrap().as_str());
    assert_eq!(summary["servers"][0]["server"], server.as_str());
    assert_eq!(summary["servers"][0]["status"], "published");
    assert_eq!(summary["servers"][0]["bytes_sent"], pushed["bytes_sent"]);
    assert!(summary["elapsed_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        lines.last().unwrap(),
        &serde_json::json!({"schema": 1, "event": "exit", "command": "deploy", "exit_code": 0, "error": null})
    );

    // People get the same story on stderr, as text, and no remote scripts without --verbose.
    let text = stderr_of(&output);
    assert!(text.contains("Summary") && text.contains("Finished deploy of"), "{text}");
    assert!(!text.contains("Script "), "{text}");
}

#[test]
fn a_failed_deploy_reports_the_failure_the_clean_up_and_exit_code_7() {
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nbefore_publish = [{ remote = \"echo no way >&2; exit 1\" }]",
    );
    world.setup();
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), i32::from(exit::REMOTE), "{}", stderr_of(&output));
    let lines = json_lines(&output);
    let failed = find(&lines, "failed");
    assert_eq!(failed["exit_code"], 7);
    assert!(failed["error"].as_str().unwrap().contains("before_publish"), "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("no way"), "{failed}");
    assert!(names(&lines).contains(&"discarded"));
    let summary = find(&lines, "summary");
    assert_eq!(summary["outcome"], "failed");
    assert_eq!(summary["servers"][0]["status"], "discarded");
    assert_eq!(summary["servers"][0]["error"], failed["error"]);
    let last = lines.last().unwrap();
    assert_eq!((&last["event"], &last["exit_code"]), (&Value::from("exit"), &Value::from(7)));
    // The error line people read is the one the stream carries.
    let error = stderr_of(&output).lines().find_map(|line| line.strip_prefix("error: ").map(str::to_string)).unwrap();
    assert_eq!(last["error"], error.as_str());
    assert_eq!(world.current(), None);
    assert_eq!(world.releases(), Vec::<String>::new());
}

#[test]
fn each_kind_of_outcome_has_its_own_exit_code() {
    let world = World::new();
    let deploy = |args: &[&str]| {
        let mut all = vec!["deploy"];
        all.extend_from_slice(args);
        run(&world, &all)
    };
    assert_eq!(code(&run(&world, &["deploy-setup"])), i32::from(exit::SUCCESS));
    assert_eq!(code(&deploy(&[])), i32::from(exit::SUCCESS));

    let again = deploy(&["--json"]);
    assert_eq!(code(&again), i32::from(exit::UP_TO_DATE), "nothing to deploy");
    assert_eq!(find(&json_lines(&again), "summary")["outcome"], "up_to_date");

    assert_eq!(code(&deploy(&["--no-such-flag"])), i32::from(exit::USAGE));

    world.app.write("src/main.rs", "fn main() {}\n").unwrap();
    let dirty = deploy(&[]);
    assert_eq!(code(&dirty), i32::from(exit::LOCAL), "{}", stderr_of(&dirty));
    assert!(stderr_of(&dirty).contains("uncommitted"), "{}", stderr_of(&dirty));

    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    world.edit_manifest(|text| {
        text.replace("[package.metadata.deploy]\n", "[package.metadata.deploy]\nkeep_release = 3\n")
    });
    assert_eq!(code(&deploy(&["--allow-dirty"])), i32::from(exit::CONFIG));

    // Connecting: nothing listening, an unknown host key, a key the server refuses.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port_line = format!("port = {}\n", world.server.port());
    let other_key = world.server.dir().join("other_key");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other_key).status();
    assert!(keygen.unwrap().success());
    let empty_known_hosts = world.server.dir().join("empty_known_hosts");
    fs::write(&empty_known_hosts, "").unwrap();
    let identity = world.server.identity().display().to_string();
    let known_hosts = world.server.known_hosts().display().to_string();
    for (what, from, to) in [
        ("refused connection", port_line.clone(), format!("port = {closed}\n")),
        ("unknown host key", known_hosts.clone(), empty_known_hosts.display().to_string()),
        ("refused key", identity.clone(), other_key.display().to_string()),
    ] {
        fs::write(world.app.manifest_path(), manifest.replace(&from, &to)).unwrap();
        let output = deploy(&["--allow-dirty"]);
        assert_eq!(code(&output), i32::from(exit::CONNECT), "{what}: {}", stderr_of(&output));
    }
    fs::write(world.app.manifest_path(), &manifest).unwrap();

    // A lock held by a deploy waiting in a hook.
    let (hold, mut held) = hold_a_deploy(&world);
    assert!(hold.wait_held(Duration::from_secs(30)), "the deploy never reached its hook");
    let locked = deploy(&[]);
    assert_eq!(code(&locked), i32::from(exit::LOCKED), "{}", stderr_of(&locked));
    hold.release();
    assert_eq!(held.wait().unwrap().code(), Some(i32::from(exit::SUCCESS)));
}

#[test]
fn a_server_that_cannot_switch_after_another_did_sends_that_one_back_exit_10() {
    let world = World::new();
    let (second, second_deploy_to) = add_server(&world);
    assert_eq!(code(&run(&world, &["deploy-setup"])), 0);
    let first = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&first), 0, "{}", stderr_of(&first));
    // Each server has its own deploy_to, and both got the release.
    let release = world.current().unwrap();
    let second_current = fs::read_link(second_deploy_to.join("current")).unwrap();
    assert!(second_current.ends_with(&release), "{}", second_current.display());
    let summary = find(&json_lines(&first), "summary").clone();
    assert_eq!(summary["servers"].as_array().unwrap().len(), 2);

    // The second server's `current` is a directory now, so its switch fails after the first's.
    fs::remove_file(second_deploy_to.join("current")).unwrap();
    fs::create_dir(second_deploy_to.join("current")).unwrap();
    fs::write(second_deploy_to.join("current/keep.txt"), "not a release\n").unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"two\"); }\n");
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), i32::from(exit::ROLLED_BACK), "{}", stderr_of(&output));
    assert_eq!(world.current().unwrap(), release, "the first server went back to its release");
    let new_release = world.releases().last().unwrap().clone();
    assert_ne!(new_release, release);
    assert_eq!(world.bad(), vec![new_release.clone()]);
    assert!(second_deploy_to.join("current/keep.txt").exists(), "the second server's current was touched");
    let first_name = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let text = stderr_of(&output);
    assert!(text.contains(&format!("Release {new_release} was rolled back on {first_name}")), "{text}");
    let lines = json_lines(&output);
    let rolled_back: Vec<&Value> = lines.iter().filter(|line| line["event"] == "rolled_back").collect();
    assert_eq!(rolled_back.len(), 1, "{rolled_back:?}");
    assert_eq!(rolled_back[0]["server"], first_name.as_str());
    let summary = find(&lines, "summary").clone();
    assert_eq!(summary["outcome"], "rolled_back");
    assert_eq!(summary["exit_code"], 10);
    assert_eq!(summary["servers"][0]["status"], "rolled_back");
    assert_eq!(summary["servers"][1]["status"], "discarded");
    assert!(summary["servers"][1]["error"].as_str().unwrap().contains("publish"), "{summary}");
    drop(second);
}

#[test]
fn a_server_that_cannot_go_back_makes_a_partial_deploy_exit_8_naming_it() {
    let world = World::new();
    let (_second, second_deploy_to) = add_server(&world);
    assert_eq!(code(&run(&world, &["deploy-setup"])), 0);
    assert_eq!(code(&run(&world, &["deploy"])), 0);
    let old = world.current().unwrap();
    // The second server cannot switch (its `current` is a directory); the first loses the release
    // it would go back to, in a hook that runs before the switch.
    fs::remove_file(second_deploy_to.join("current")).unwrap();
    fs::create_dir(second_deploy_to.join("current")).unwrap();
    let gone = world.deploy_to.join("releases").join(&old);
    world.edit_manifest(|text| {
        format!(
            "{text}\n[package.metadata.deploy.hooks]\nbefore_publish = [{{ remote = \"rm -rf '{}'\" }}]\n",
            gone.display()
        )
    });
    world.commit("src/main.rs", "fn main() { println!(\"three\"); }\n");
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), i32::from(exit::PARTIAL), "{}", stderr_of(&output));
    let first_name = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let text = stderr_of(&output);
    let error = text.lines().find(|line| line.starts_with("error: ")).unwrap_or_default();
    assert!(error.contains(&format!("is still live on {first_name} (no earlier release")), "{text}");
    assert!(error.contains("cargo xtask rollback --hosts"), "the way back there: {error}");
    let summary = find(&json_lines(&output), "summary").clone();
    assert_eq!(summary["outcome"], "partial");
    assert_eq!(summary["servers"][0]["status"], "published");
}

#[test]
fn credentials_from_the_environment_deploy_and_are_never_shown() {
    let world = World::new();
    world.setup();
    let key = fs::read_to_string(world.server.identity()).unwrap();
    let known_hosts = fs::read_to_string(world.server.known_hosts()).unwrap();
    // No key file, no known_hosts file, no agent, an empty home: only the environment is left.
    let missing = world.server.dir().join("no-such-known_hosts");
    world.edit_manifest(|text| {
        text.lines()
            .filter(|line| !line.starts_with("identity = "))
            .map(|line| {
                if line.starts_with("known_hosts = ") {
                    format!("known_hosts = {:?}", missing.display().to_string())
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    world.app.commit_all("credentials from the environment").unwrap();
    let home = tempfile::tempdir().unwrap();
    let deploy = |env: &[(&str, &str)]| {
        let mut command = xtask(&world, &["deploy", "--json", "-vv"]);
        command.env("HOME", home.path()).env_remove("SSH_AUTH_SOCK");
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };

    let without = deploy(&[]);
    assert_eq!(code(&without), i32::from(exit::CONNECT), "{}", stderr_of(&without));
    assert!(stderr_of(&without).contains("XTASK_DEPLOY_KNOWN_HOSTS"), "{}", stderr_of(&without));
    let key_only_missing = deploy(&[("XTASK_DEPLOY_KNOWN_HOSTS", &known_hosts)]);
    assert_eq!(code(&key_only_missing), i32::from(exit::CONNECT));
    assert!(stderr_of(&key_only_missing).contains("XTASK_DEPLOY_SSH_KEY"), "{}", stderr_of(&key_only_missing));

    let output = deploy(&[("XTASK_DEPLOY_SSH_KEY", &key), ("XTASK_DEPLOY_KNOWN_HOSTS", &known_hosts)]);
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    assert!(world.current().is_some());
    let everything = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr_of(&output));
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        assert!(!everything.contains(line), "a line of the key was printed");
    }
    // -vv shows each remote script with the server it runs on.
    assert!(everything.contains("Script preflight on") && everything.contains("|   mv -T releases/current current"));
    assert_eq!(fs::read_dir(home.path()).unwrap().count(), 0, "something was written into HOME");
}

#[test]
fn the_key_and_passphrase_from_the_environment_reach_no_child_process() {
    // Issue 18, finding 7: with `XTASK_DEPLOY_SSH_KEY` set, a `build` command (and so every build
    // script under `cargo build`) could read the private key from its environment.
    let seen = tempfile::tempdir().unwrap();
    let env_into = |name: &str| format!("sh -c 'env > {}'", seen.path().join(name).display());
    let world = World::with_config(&format!(
        "build = [{:?}]\n[package.metadata.deploy.hooks]\nbefore_update = [{{ local = {:?} }}]",
        env_into("build.env"),
        env_into("hook.env")
    ));
    world.setup();
    // The server's key, protected by a passphrase: authenticating needs both variables.
    let key_file = world.server.dir().join("ci_key");
    fs::copy(world.server.identity(), &key_file).unwrap();
    let passphrase = "correct horse battery staple";
    let protect =
        Command::new("ssh-keygen").args(["-q", "-p", "-P", "", "-N", passphrase, "-f"]).arg(&key_file).status();
    assert!(protect.unwrap().success());
    let key = fs::read_to_string(&key_file).unwrap();
    world.edit_manifest(|text| {
        text.lines().filter(|line| !line.starts_with("identity = ")).collect::<Vec<_>>().join("\n")
    });
    world.app.commit_all("the key comes from the environment").unwrap();
    let home = tempfile::tempdir().unwrap();

    let output = xtask(&world, &["deploy"])
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env("XTASK_DEPLOY_SSH_KEY", &key)
        .env("XTASK_DEPLOY_SSH_KEY_PASSPHRASE", passphrase)
        .env("XTASK_TEST_VISIBLE", "inherited")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "the key from the environment authenticates: {}", stderr_of(&output));
    assert!(world.current().is_some());
    for file in ["build.env", "hook.env"] {
        let env = fs::read_to_string(seen.path().join(file)).unwrap();
        assert!(env.contains("XTASK_TEST_VISIBLE=inherited"), "{file} holds the child's environment: {env}");
        assert!(!env.contains("XTASK_DEPLOY_SSH_KEY"), "{file}: a child saw the variables:\n{env}");
        assert!(!env.contains(passphrase), "{file}: a child saw the passphrase");
        for line in key.lines().filter(|line| !line.starts_with("-----")) {
            assert!(!env.contains(line), "{file}: a child saw a line of the key");
        }
    }
}

#[test]
fn a_key_revoked_in_the_environments_known_hosts_is_refused() {
    // Issue 18, finding 3, through `XTASK_DEPLOY_KNOWN_HOSTS`: an `@revoked` line there counts.
    let world = World::new();
    let trusted = fs::read_to_string(world.server.known_hosts()).unwrap();
    let key: Vec<&str> = trusted.split_whitespace().skip(1).take(2).collect();
    let revoked = format!("{trusted}@revoked * {}\n", key.join(" "));
    let output = xtask(&world, &["deploy-setup"]).env("XTASK_DEPLOY_KNOWN_HOSTS", &revoked).output().unwrap();
    let text = stderr_of(&output);
    assert_eq!(code(&output), i32::from(exit::CONNECT), "{text}");
    assert!(text.contains("is revoked") && text.contains("line 2 of `XTASK_DEPLOY_KNOWN_HOSTS`"), "{text}");
    assert!(!world.deploy_to.exists(), "setup reached the server");
    // The same lines without the mark let it in: the refusal was the mark's.
    let output = xtask(&world, &["deploy-setup"]).env("XTASK_DEPLOY_KNOWN_HOSTS", &trusted).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
}

/// `deploy-check --json`: the exit code and each check's status by name, for one server.
fn check(world: &World) -> (i32, Vec<(String, String)>) {
    let output = run(world, &["deploy-check", "--json"]);
    let rows = json_lines(&output)
        .into_iter()
        .filter(|line| line["event"] == "check")
        .map(|line| (line["check"].as_str().unwrap().to_string(), line["status"].as_str().unwrap().to_string()))
        .collect();
    (code(&output), rows)
}

/// Asserts that exactly the checks in `failing` fail (others pass or warn), with exit 9.
fn assert_fails(world: &World, state: &str, failing: &[&str]) {
    let (code, rows) = check(world);
    assert_eq!(rows.len(), xtask_deploy::check::CHECKS.len(), "{state}: {rows:?}");
    for (name, status) in &rows {
        let expected = failing.contains(&name.as_str());
        assert_eq!(status == "fail", expected, "{state}: `{name}` is {status}: {rows:?}");
    }
    assert_eq!(code, i32::from(exit::CHECK_FAILED), "{state}");
}

#[test]
fn deploy_check_passes_a_ready_server_and_changes_nothing() {
    let world = World::with_config("linked_files = [\"config/app.toml\"]");
    world.setup();
    fs::write(world.deploy_to.join("shared/config/app.toml"), "x = 1\n").unwrap();
    world.deploy();
    let before = snapshot(&world.deploy_to);
    let output = run(&world, &["deploy-check"]);
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(code(&output), 0, "{table}{}", stderr_of(&output));
    assert!(table.contains("A deploy would get past every check"), "{table}");
    for check in xtask_deploy::check::CHECKS {
        assert!(table.lines().any(|line| line.contains(&format!("  {check} "))), "no `{check}` row:\n{table}");
    }
    assert!(table.contains("git version"), "{table}");
    assert!(!table.contains("FAIL"), "{table}");
    assert_eq!(snapshot(&world.deploy_to), before, "deploy-check changed the server");
}

#[test]
fn deploy_check_says_setup_makes_linked_dirs_and_only_the_user_makes_linked_files() {
    let world = World::with_config("linked_files = [\"config/app.toml\"]\nlinked_dirs = [\"log\"]");
    let linked = |world: &World| {
        let output = run(world, &["deploy-check", "--json"]);
        let row = json_lines(&output).into_iter().find(|line| line["check"] == "linked files").expect("the row");
        (code(&output), row["status"].as_str().unwrap().to_string(), row["detail"].as_str().unwrap().to_string())
    };
    let deploy_to = world.deploy_to.display();
    let (_, status, detail) = linked(&world);
    assert_eq!(status, "fail", "{detail}");
    assert!(
        detail.contains(&format!(
            "shared/config/app.toml missing in {deploy_to}: create them on the server, deploy-setup does not"
        )),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("shared/log/ missing in {deploy_to}: `cargo xtask deploy-setup` creates them")),
        "{detail}"
    );
    world.setup();
    assert!(world.deploy_to.join("shared/log").is_dir(), "setup made the linked dir, as the check said");
    assert!(!world.deploy_to.join("shared/config/app.toml").exists(), "and not the linked file");
    fs::write(world.deploy_to.join("shared/config/app.toml"), "x = 1\n").unwrap();
    assert_eq!(linked(&world), (0, "ok".to_string(), "2 present".to_string()));

    // A linked dir added after setup: a warning, and a deploy does go through without it.
    world.edit_manifest(|text| text.replace("linked_dirs = [\"log\"]", "linked_dirs = [\"log\", \"tmp/cache\"]"));
    world.app.commit_all("a new linked dir").unwrap();
    let (code_before, status, detail) = linked(&world);
    assert_eq!((code_before, status.as_str()), (0, "warn"), "{detail}");
    assert!(detail.contains("shared/tmp/cache/ missing") && detail.contains("deploy-setup` again"), "{detail}");
    let deployed = run(&world, &["deploy"]);
    assert_eq!(code(&deployed), 0, "{}", stderr_of(&deployed));
    let link = world.deploy_to.join("current/tmp/cache");
    assert!(link.is_symlink() && !link.exists(), "the release links to a directory that is not there");
    world.setup();
    assert_eq!(linked(&world).1, "ok");
}

#[test]
fn deploy_check_reports_each_broken_state() {
    let world = World::with_config("linked_files = [\"config/app.toml\"]");
    assert_fails(&world, "never set up", &["setup", "linked files"]);
    assert!(!world.deploy_to.exists(), "the check created deploy_to");
    world.setup();
    assert_fails(&world, "linked file missing", &["linked files"]);
    fs::write(world.deploy_to.join("shared/config/app.toml"), "x = 1\n").unwrap();
    world.deploy();
    assert_eq!(check(&world).0, 0);

    // Locked by a deploy in progress: a failure. Locked by a deploy that died: a warning.
    let (hold, mut held) = hold_a_deploy(&world);
    assert!(hold.wait_held(Duration::from_secs(30)));
    assert_fails(&world, "locked", &["lock"]);
    hold.release();
    assert!(held.wait().unwrap().success());
    let lock = world.deploy_to.join(".xtask-deploy/lock");
    fs::create_dir(&lock).unwrap();
    fs::write(lock.join("info"), "user=ghost\nconnection=999999 1\n").unwrap();
    let (code, rows) = check(&world);
    assert_eq!(code, 0, "a stale lock does not stop a deploy: {rows:?}");
    assert!(rows.contains(&("lock".to_string(), "warn".to_string())), "{rows:?}");
    fs::remove_dir_all(&lock).unwrap();

    // The next release would not fit: the current one is (sparsely) bigger than the free space.
    let df = Command::new("df").arg("-Pk").arg(&world.deploy_to).output().unwrap();
    let free_kib: u64 =
        String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().split_whitespace().nth(3).unwrap().parse().unwrap();
    let current = world.deploy_to.join("releases").join(world.current().unwrap());
    let huge = fs::File::create(current.join("huge.bin")).unwrap();
    huge.set_len((free_kib + 1024 * 1024) * 1024).unwrap();
    assert_fails(&world, "disk too small", &["free disk"]);
    fs::remove_file(current.join("huge.bin")).unwrap();

    // deploy_to cannot be made: its parent is a file.
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let blocker = world.server.dir().join("a-file");
    fs::write(&blocker, "").unwrap();
    let deploy_to = format!("deploy_to = {:?}", world.deploy_to.display().to_string());
    let unwritable = format!("deploy_to = {:?}", blocker.join("app").display().to_string());
    fs::write(world.app.manifest_path(), manifest.replace(&deploy_to, &unwritable)).unwrap();
    assert_fails(&world, "unwritable", &["deploy_to", "setup", "linked files"]);

    // Not reachable, unknown host key, refused key: the checks after it are skipped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let other_key = world.server.dir().join("other_key");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other_key).status();
    assert!(keygen.unwrap().success());
    let empty_known_hosts = world.server.dir().join("empty_known_hosts");
    fs::write(&empty_known_hosts, "").unwrap();
    for (state, from, to, failing) in [
        ("unreachable", format!("port = {}\n", world.server.port()), format!("port = {closed}\n"), "connect"),
        (
            "unknown host key",
            world.server.known_hosts().display().to_string(),
            empty_known_hosts.display().to_string(),
            "host key",
        ),
        ("refused key", world.server.identity().display().to_string(), other_key.display().to_string(), "auth"),
    ] {
        fs::write(world.app.manifest_path(), manifest.replace(&from, &to)).unwrap();
        let (code, rows) = check(&world);
        assert_eq!(code, i32::from(exit::CHECK_FAILED), "{state}");
        let at = rows.iter().position(|(name, _)| name == failing).unwrap();
        assert_eq!(rows[at].1, "fail", "{state}: {rows:?}");
        assert!(rows[..at].iter().all(|(_, status)| status == "ok"), "{state}: {rows:?}");
        assert!(rows[at + 1..].iter().all(|(_, status)| status == "skipped"), "{state}: {rows:?}");
    }
    assert_eq!(fs::read_to_string(&empty_known_hosts).unwrap(), "", "the check recorded a host key");

    // Under `accept-new` an unknown key only warns (a deploy would record it); a changed one fails.
    let other_public = fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let changed_known_hosts = world.server.dir().join("changed_known_hosts");
    let key: Vec<&str> = other_public.split_whitespace().take(2).collect();
    fs::write(&changed_known_hosts, format!("[127.0.0.1]:{} {}\n", world.server.port(), key.join(" "))).unwrap();
    for (known_hosts, expected) in [(&empty_known_hosts, "warn"), (&changed_known_hosts, "fail")] {
        let accept_new = manifest
            .replace(&world.server.known_hosts().display().to_string(), &known_hosts.display().to_string())
            .replace(
                "[package.metadata.deploy.ssh]\n",
                "[package.metadata.deploy.ssh]\nhost_key_policy = \"accept-new\"\n",
            );
        fs::write(world.app.manifest_path(), accept_new).unwrap();
        let (_, rows) = check(&world);
        let host_key = rows.iter().find(|(name, _)| name == "host key").unwrap();
        assert_eq!(host_key.1, expected, "{}: {rows:?}", known_hosts.display());
    }
    assert_eq!(fs::read_to_string(&empty_known_hosts).unwrap(), "", "the check recorded a host key");
}

#[test]
fn deploy_check_finds_a_server_without_git() {
    let world = World::new();
    // A PATH holding every command of this machine except git.
    let farm = world.server.dir().join("no-git-bin");
    fs::create_dir(&farm).unwrap();
    for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let link = farm.join(&name);
            if !name.to_string_lossy().starts_with("git") && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    let no_git = xtask_deploy::loopback::LoopbackServer::start_with_path(&farm.display().to_string()).unwrap();
    let (no_git, _) = support::add_existing_server(&world, no_git);
    let output = run(&world, &["deploy-check", "--json"]);
    assert_eq!(code(&output), i32::from(exit::CHECK_FAILED));
    // Servers are checked in parallel, so rows are told apart by their server, not their order.
    let mut git: Vec<(bool, String)> = json_lines(&output)
        .into_iter()
        .filter(|line| line["event"] == "check" && line["check"] == "git")
        .map(|line| {
            let server = line["server"].as_str().unwrap().to_string();
            (server.ends_with(&format!(":{}", no_git.port())), line["status"].as_str().unwrap().to_string())
        })
        .collect();
    git.sort();
    assert_eq!(git, [(false, "ok".to_string()), (true, "fail".to_string())]);
}

#[test]
fn under_json_stdout_carries_only_events_even_for_the_demo() {
    // Run as `git rebase --exec` runs a command: GIT_DIR names the repository being rebased.
    // The demo makes its own repository and must leave that one alone.
    let outer = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = xtask_deploy::local::git().arg("-C").arg(outer.path()).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "outer"]);
    let before = fs::read_to_string(outer.path().join(".git/config")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--json"])
        .env("GIT_DIR", outer.path().join(".git"))
        .env("GIT_WORK_TREE", outer.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    let log = xtask_deploy::local::git().arg("-C").arg(outer.path()).args(["log", "--format=%s"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout), "outer\n", "the demo committed into the outer repository");
    assert_eq!(fs::read_to_string(outer.path().join(".git/config")).unwrap(), before);
    let lines = json_lines(&output);
    assert_eq!(names(&lines).iter().filter(|name| **name == "summary").count(), 2, "two deploys");
    assert_eq!(lines.last().unwrap()["event"], "exit");
    assert!(stderr_of(&output).contains("revisions.log"), "the demo's report went to stderr");
}

#[test]
fn artifacts_under_target_are_read_from_cargos_target_directory() {
    let world = World::with_config(
        "build = [\"cargo build --release --offline --quiet\"]\nartifacts = [\"target/release/hello\"]",
    );
    world.setup();
    let elsewhere = world.server.dir().join("shared-target");
    let with_target_dir = |args: &[&str]| {
        world.command(env!("CARGO_BIN_EXE_xtask"), args).env("CARGO_TARGET_DIR", &elsewhere).output().unwrap()
    };
    let deployed = with_target_dir(&["deploy"]);
    assert_eq!(code(&deployed), 0, "{}", stderr_of(&deployed));
    assert!(!world.app.dir().join("target").exists(), "cargo built into CARGO_TARGET_DIR, not the app's target/");
    let shipped = world.deploy_to.join("current/target/release/hello");
    assert_eq!(fs::read(&shipped).unwrap(), fs::read(elsewhere.join("release/hello")).unwrap());
    let ran = Command::new(&shipped).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello\n");
    // deploy-check reads the same place: without CARGO_TARGET_DIR, nothing is built yet.
    let binaries = |output: Output| {
        let rows = json_lines(&output).into_iter().filter(|line| line["check"] == "binaries");
        rows.map(|line| line["status"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(binaries(with_target_dir(&["deploy-check", "--json"])), ["ok"]);
    assert_eq!(binaries(run(&world, &["deploy-check", "--json"])), ["skipped"]);
}

#[test]
fn deploy_check_judges_the_binaries_built_here_against_each_server() {
    let world = World::with_config("artifacts = [\"target/release/app\"]");
    world.setup();
    let binaries = |world: &World| {
        let (code, rows) = check(world);
        let row = rows.into_iter().find(|(name, _)| name == "binaries").expect("a binaries row");
        (code, row.1)
    };
    assert_eq!(binaries(&world), (0, "skipped".to_string()), "nothing built yet: deploy-check builds nothing");
    let app = world.app.dir().join("target/release/app");
    fs::create_dir_all(app.parent().unwrap()).unwrap();
    // A binary of this machine runs on the loopback server, which is this machine.
    fs::copy("/bin/true", &app).unwrap();
    assert_eq!(binaries(&world), (0, "ok".to_string()));
    // An aarch64 executable's header.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    (elf[4], elf[5], elf[6], elf[16], elf[18], elf[20], elf[52], elf[54], elf[58]) = (2, 1, 1, 2, 183, 1, 64, 56, 64);
    fs::write(&app, elf).unwrap();
    assert_eq!(binaries(&world), (i32::from(exit::CHECK_FAILED), "fail".to_string()));
}

#[test]
fn deploy_check_runs_the_health_check_in_the_current_release_and_changes_nothing() {
    let world = World::with_config(
        r#"[package.metadata.deploy.healthcheck]
remote = "test -f index.txt && test \"$RELEASE_PATH\" = \"$DEPLOY_TO/releases/$RELEASE\" && if [ -e \"$DEPLOY_TO/shared/sick\" ]; then echo 503-from-$RELEASE; exit 1; fi"
timeout = 1
interval = 1"#,
    );
    // The `health` row: its status and detail, and the exit code.
    let health = |world: &World| {
        let output = run(world, &["deploy-check", "--json"]);
        let row = json_lines(&output)
            .into_iter()
            .find(|line| line["event"] == "check" && line["check"] == "health")
            .expect("a health row");
        (code(&output), row["status"].as_str().unwrap().to_string(), row["detail"].as_str().unwrap().to_string())
    };
    world.setup();
    assert_eq!(health(&world).1, "skipped", "no current release yet");
    let current = support::releases_by_hand(&world.deploy_to, 2).pop().unwrap().0;

    let before = snapshot(&world.deploy_to);
    let (code, status, detail) = health(&world);
    assert_eq!((code, status.as_str()), (0, "ok"), "{detail}");
    assert!(detail.contains(&format!("passed in the current release {current}")), "{detail}");
    assert_eq!(snapshot(&world.deploy_to), before, "deploy-check changed the server");

    fs::write(world.deploy_to.join("shared/sick"), "").unwrap();
    let (code, status, detail) = health(&world);
    // A warning: during an outage, the deploy that fixes it must not be blocked by the check.
    assert_eq!((code, status.as_str()), (0, "warn"), "{detail}");
    assert!(detail.contains(&format!("503-from-{current}")), "the check's output: {detail}");
    // Issue 27, item 10: the table's last line says both things, not "all is well".
    let table = String::from_utf8_lossy(&run(&world, &["deploy-check"]).stdout).to_string();
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let verdict = format!("A deploy would get past every check, but 1 warning(s) need a look: `health` on {server}.");
    assert!(table.contains(&verdict), "{table}");

    // Without a health check, the row is skipped and does not fail the check.
    world.edit_manifest(|manifest| {
        let start = manifest.find("[package.metadata.deploy.healthcheck]").unwrap();
        let end = manifest[start..].find("interval = 1\n").unwrap() + start + "interval = 1\n".len();
        format!("{}{}", &manifest[..start], &manifest[end..])
    });
    let (code, status, detail) = health(&world);
    assert_eq!((code, status.as_str(), detail.as_str()), (0, "skipped", "no `healthcheck` configured"));
}

#[test]
fn under_json_what_local_commands_print_goes_to_stderr() {
    let world = World::with_config(
        "build = [\"echo built-and-said-so\"]\n[package.metadata.deploy.hooks]\nbefore_update = [{ local = \"echo hook-said-so\" }]",
    );
    world.setup();
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    // Every stdout line is an event (json_lines fails on anything else).
    assert!(json_lines(&output).iter().any(|line| line["event"] == "summary"));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("built-and-said-so") && stderr.contains("hook-said-so"), "{stderr}");
}

#[test]
fn each_hook_is_named_by_its_command_when_it_runs_and_when_it_fails() {
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nafter_update = [{ remote = \"true first\" }, { remote = \"test -e no-such-file\" }]",
    );
    world.setup();
    let output = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&output), i32::from(exit::REMOTE), "{}", stderr_of(&output));
    let lines = json_lines(&output);
    let running: Vec<&str> =
        lines.iter().filter(|line| line["event"] == "running").filter_map(|line| line["what"].as_str()).collect();
    assert_eq!(running, ["true first", "test -e no-such-file"]);
    let error = find(&lines, "summary")["error"].as_str().unwrap().to_string();
    assert!(error.contains("after_update failed") && error.contains("`test -e no-such-file`"), "{error}");
}

/// Deploys (`--json`) a commit that adds 20 MB that do not compress, to `world`'s server
/// through a slow link (see [`World::behind_a_slow_link`]), and returns its output.
fn deploy_a_long_push(world: &World) -> Output {
    let _relay = world.behind_a_slow_link();
    assert_eq!(code(&run(world, &["deploy-setup"])), 0);
    world.commit_big();
    let output = run(world, &["deploy", "--json"]);
    assert_eq!(code(&output), 0, "{}", stderr_of(&output));
    output
}

/// The `push_progress` events of `server`: at least one, all between its `pushing` and
/// `pushed`, a second or more apart (from a second into the push) but for the last, which says
/// the pack is all sent, with bytes that grow up to `pushed`'s.
fn push_progress<'a>(lines: &'a [Value], server: &str) -> Vec<&'a Value> {
    let of = |event: &str| lines.iter().position(|line| line["event"] == event && line["server"] == server);
    let (pushing, pushed) = (of("pushing").unwrap(), of("pushed").unwrap());
    let progress: Vec<&Value> =
        lines.iter().filter(|line| line["event"] == "push_progress" && line["server"] == server).collect();
    assert!(!progress.is_empty(), "no progress for {server}: {:?}", names(lines));
    let at = |event: &Value| lines.iter().position(|line| std::ptr::eq(line, event)).unwrap();
    assert!(progress.iter().all(|event| (pushing..pushed).contains(&at(event))), "progress outside the push");
    let (mut bytes, mut elapsed) = (0, 0);
    for (index, event) in progress.iter().enumerate() {
        let (now, at) = (event["bytes"].as_u64().unwrap(), event["elapsed_ms"].as_u64().unwrap());
        assert!(now > bytes, "bytes did not grow: {progress:?}");
        let last = index + 1 == progress.len();
        assert!(at >= elapsed + 1000 || (last && index > 0), "more than one a second: {progress:?}");
        (bytes, elapsed) = (now, at);
    }
    // The last says the pack is through: what the push sent in all (it writes nothing after).
    let end = progress.last().unwrap();
    assert_eq!((&end["bytes"], &end["total_bytes"]), (&lines[pushed]["bytes_sent"], &lines[pushed]["bytes_sent"]));
    assert_eq!(end["percent"], 100, "{end}");
    eprintln!("{server}: {} progress events, then {}", progress.len(), lines[pushed]);
    for event in &progress {
        eprintln!("  {event}");
    }
    progress
}

#[test]
fn a_long_push_reports_its_progress_at_most_once_a_second() {
    let world = World::new();
    let output = deploy_a_long_push(&world);
    let lines = json_lines(&output);
    let pushed = find(&lines, "pushed");
    let progress = push_progress(&lines, pushed["server"].as_str().unwrap());
    // One server's pack streams from `git pack-objects` as it is made: its size is known only
    // at its end.
    let (end, before) = progress.split_last().unwrap();
    assert!(before.iter().all(|event| event["total_bytes"].is_null() && event["percent"].is_null()), "{before:?}");
    assert_eq!(end["percent"], 100);
    assert_eq!(progress.last().unwrap()["objects"], pushed["objects"], "the pack's objects, from its header");
    // Not a terminal: a push shorter than 10 s prints no progress line among the status lines.
    let stderr = stderr_of(&output);
    assert!(!stderr.lines().any(|line| line.contains("Pushing") && line.contains("/s")), "{stderr}");
}

#[test]
fn with_several_servers_the_push_progress_knows_the_packs_size() {
    let world = World::new();
    let (_second, _) = add_server(&world);
    let output = deploy_a_long_push(&world);
    let lines = json_lines(&output);
    // The server behind the relay, whose push takes seconds.
    let server = find(&lines, "started")["servers"][0].as_str().unwrap().to_string();
    let pushed = lines.iter().find(|line| line["event"] == "pushed" && line["server"] == server.as_str()).unwrap();
    let mut percent = 0;
    for event in push_progress(&lines, &server) {
        // Made once for both servers before it is sent, the pack has a size: what the bytes
        // sent come to, to the byte, once it is through.
        assert_eq!(event["total_bytes"], pushed["bytes_sent"], "{event}");
        let now = event["percent"].as_u64().unwrap();
        assert_eq!(now, event["bytes"].as_u64().unwrap() * 100 / pushed["bytes_sent"].as_u64().unwrap());
        assert!(now >= percent && now <= 100, "{event}");
        percent = now;
    }
}

/// Runs the xtask with `args`; returns its exit code, each stdout line as JSON with when it
/// was read, and its stderr.
fn run_timed(world: &World, args: &[&str]) -> (Option<i32>, Vec<(Instant, Value)>, String) {
    let mut child = xtask(world, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let drained = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| (Instant::now(), serde_json::from_str(&line.unwrap()).unwrap()))
        .collect();
    let status = child.wait().unwrap();
    (status.code(), lines, drained.join().unwrap())
}

#[test]
fn a_hook_is_announced_when_it_starts_on_the_server_not_when_its_batch_is_sent() {
    // Issue 17: `Running` of both hooks came at 0.94 s, before either ran; after a failed
    // `after_update`, the last line still named the next hook.
    let world = World::with_config(
        "[package.metadata.deploy.hooks]\nafter_update = [{ remote = \"sleep 1\" }, { remote = \"echo second\" }]",
    );
    world.setup();
    let (code, lines, stderr) = run_timed(&world, &["deploy", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let running = |what: &str| {
        let found = lines.iter().position(|(_, line)| line["event"] == "running" && line["what"] == what);
        found.unwrap_or_else(|| panic!("no `running` of `{what}`: {lines:?}"))
    };
    let (first, second) = (running("sleep 1"), running("echo second"));
    let gap = lines[second].0 - lines[first].0;
    assert!(gap >= Duration::from_millis(900), "the second hook was announced {gap:?} after the first");
    // The release's own steps are timed apart from the hooks between them, and the release is
    // announced as prepared when it is, before the hooks run.
    let event = |name: &str| lines.iter().position(|(_, line)| line["event"] == name).unwrap();
    let ms = |index: usize| lines[index].1["elapsed_ms"].as_u64().unwrap();
    let (prepared, published) = (event("prepared"), event("published"));
    assert!(prepared < first && second < published, "{lines:?}");
    let release = lines[event("summary")].1["servers"][0]["release_ms"].as_u64().unwrap();
    assert!(release.abs_diff(ms(prepared) + ms(published)) <= 1, "{lines:?}");
    assert!(release < 1000, "the hooks' second counts in the release's time: {release} ms");

    // The first hook fails: the second never starts, and is never announced.
    world.edit_manifest(|text| text.replace("\"sleep 1\"", "\"sleep 1; exit 3\""));
    world.app.commit_all("the first hook fails").unwrap();
    let (code, lines, stderr) = run_timed(&world, &["deploy", "--json"]);
    assert_eq!(code, Some(i32::from(exit::REMOTE)), "{stderr}");
    let announced: Vec<&str> = lines
        .iter()
        .filter(|(_, line)| line["event"] == "running")
        .filter_map(|(_, line)| line["what"].as_str())
        .collect();
    assert_eq!(announced, ["sleep 1; exit 3"]);
}

#[test]
fn what_a_hook_prints_is_shown_under_verbose_and_always_when_it_fails() {
    // The hook computes what it prints: the scripts `--verbose` shows cannot hold it.
    let hook = "echo out-$((40+2)); echo err-$((6*7)) >&2";
    let world =
        World::with_config(&format!("[package.metadata.deploy.hooks]\nafter_update = [{{ remote = {hook:?} }}]"));
    world.setup();
    let server = format!("{}@127.0.0.1:{}", world.server.user(), world.server.port());
    let shown = |text: &str, stream: &str, line: &str| {
        text.contains(&format!("{stream} after_update: {hook} on {server}\n{:>12} | {line}\n", ""))
    };

    let quiet = run(&world, &["deploy"]);
    let text = stderr_of(&quiet);
    assert_eq!(code(&quiet), 0, "{text}");
    assert!(!text.contains("out-42") && !text.contains("err-42"), "a hook that passed was shown:\n{text}");

    world.commit("src/main.rs", "fn main() { println!(\"verbose\"); }\n");
    let verbose = run(&world, &["deploy", "-v"]);
    let text = stderr_of(&verbose);
    assert_eq!(code(&verbose), 0, "{text}");
    assert!(shown(&text, "Stdout", "out-42") && shown(&text, "Stderr", "err-42"), "{text}");
    // The hooks' level is apart from the scripts': `-v` shows no script, `-vv` does.
    assert!(!text.contains("Script "), "-v showed the scripts:\n{text}");

    // With --json, as events, with or without --verbose.
    world.commit("src/main.rs", "fn main() { println!(\"json\"); }\n");
    let json = run(&world, &["deploy", "--json"]);
    assert_eq!(code(&json), 0, "{}", stderr_of(&json));
    let outputs: Vec<(String, String, String, bool)> = json_lines(&json)
        .iter()
        .filter(|line| line["event"] == "output")
        .map(|line| {
            assert_eq!(
                (line["server"].as_str(), line["phase"].as_str()),
                (Some(server.as_str()), Some("after_update"))
            );
            let text = |key: &str| line[key].as_str().unwrap().to_string();
            (text("what"), text("stream"), text("text"), line["failed"].as_bool().unwrap())
        })
        .collect();
    let expected = |stream: &str, text: &str| (hook.to_string(), stream.to_string(), text.to_string(), false);
    assert_eq!(outputs, [expected("stdout", "out-42"), expected("stderr", "err-42")]);

    // A hook that fails: both streams are shown without --verbose.
    world.edit_manifest(|text| text.replace(">&2\"", ">&2; exit 5\""));
    world.app.commit_all("the hook fails").unwrap();
    let failed = run(&world, &["deploy"]);
    let text = stderr_of(&failed);
    assert_eq!(code(&failed), i32::from(exit::REMOTE), "{text}");
    let hook = format!("{hook}; exit 5");
    let shown = |stream: &str, line: &str| {
        text.contains(&format!("{stream} after_update: {hook} on {server}\n{:>12} | {line}\n", ""))
    };
    assert!(shown("Stdout", "out-42") && shown("Stderr", "err-42"), "{text}");
}
