//! Many servers through the command line: stages, roles, `--hosts`/`--roles`, hooks that run
//! on some servers or once, `--parallel`, and hosts named by `~/.ssh/config`.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::cli_support::bad_in;
use crate::support::{self, add_server, current_in, releases_in, World};
use xtask_deploy::exit;
use xtask_deploy::loopback::toml_string;

fn run(world: &World, args: &[&str]) -> Output {
    world.command(env!("CARGO_BIN_EXE_xtask"), args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn expect(output: &Output, code: u8) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(i32::from(code)), "{text}");
    text
}

/// The files a deploy's hooks left in the current release of `deploy_to`.
fn marks(deploy_to: &Path) -> Vec<String> {
    let mut found: Vec<String> = ["migrated", "web-warmed", "everywhere"]
        .iter()
        .filter(|mark| deploy_to.join("current").join(mark).exists())
        .map(|mark| mark.to_string())
        .collect();
    found.sort();
    found
}

#[test]
fn stages_roles_and_run_once_hooks() {
    let world = World::with_config(
        r#"hooks = { after_update = [
            { remote = "touch migrated", roles = ["app"], once = true },
            { remote = "touch web-warmed", roles = ["web"] },
            { remote = "touch everywhere" },
        ] }"#,
    );
    let (second, second_deploy_to) = add_server(&world);
    let (first_port, second_port) = (world.server.port(), second.port());
    world.edit_manifest(|manifest| {
        let manifest = manifest
            .replace(&format!("port = {first_port}\n"), &format!("port = {first_port}\nroles = [\"app\", \"db\"]\n"))
            .replace(
                &format!("port = {second_port}\n"),
                &format!("port = {second_port}\nroles = [\"app\", \"web\"]\n"),
            );
        let canary = format!(
            "\n[package.metadata.deploy.stages.production]\n\
             [package.metadata.deploy.stages.canary]\nkeep_releases = 1\n\
             [[package.metadata.deploy.stages.canary.servers]]\nhost = \"127.0.0.1\"\nport = {second_port}\n\
             user = {}\ndeploy_to = {}\nroles = [\"web\"]\n",
            toml_string(second.user()),
            toml_string(&second_deploy_to.display().to_string()),
        );
        manifest + &canary
    });
    world.app.commit_all("stages and roles").unwrap();

    let unnamed = expect(&run(&world, &["deploy-setup"]), exit::CONFIG);
    assert!(unnamed.contains("name a stage with `--stage <name>` (known stages: `canary`, `production`)"), "{unnamed}");
    let unknown = expect(&run(&world, &["deploy", "--stage", "staging"]), exit::CONFIG);
    assert!(unknown.contains("unknown stage `staging`: known stages are `canary`, `production`"), "{unknown}");
    expect(&run(&world, &["deploy-setup", "--stage", "production"]), exit::SUCCESS);
    let user = world.server.user();
    let (db, web) = (format!("{user}@127.0.0.1:{first_port}"), format!("{user}@127.0.0.1:{second_port}"));
    // The dry run lists each server's hooks: the migration once, on the first `app` server.
    let dry = run(&world, &["deploy", "--stage", "production", "--dry-run"]);
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    let hooks = |server: &str| -> Vec<String> {
        let section = plan.split(&format!("\n{server}\n")).nth(1).unwrap_or_default();
        let section = section.split("\n\n").next().unwrap_or_default();
        let commands = section.lines().filter_map(|line| line.split_once("after_update: `")?.1.strip_suffix('`'));
        commands.map(str::to_string).collect()
    };
    assert_eq!(hooks(&db), ["touch migrated", "touch everywhere"], "{plan}");
    assert_eq!(hooks(&web), ["touch web-warmed", "touch everywhere"], "{plan}");
    // With `-v`, every script, with where it runs.
    let dry = run(&world, &["deploy", "--stage", "production", "--dry-run", "-v"]);
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(plan.contains(&format!("## after_update: on {db} only\n")), "the migration, once: {plan}");
    assert!(plan.contains(&format!("## after_update: on {web} only\n")), "the web hook: {plan}");
    assert!(plan.contains(&format!("## after_update: on {db}, {web}\n")), "the hook for all: {plan}");

    // Only the web server: it is the first (and only) `app` server left, so it migrates.
    expect(&run(&world, &["deploy", "--stage", "production", "--roles", "web"]), exit::SUCCESS);
    assert!(!world.deploy_to.join("current").exists(), "the db server was left out");
    assert_eq!(marks(&second_deploy_to), ["everywhere", "migrated", "web-warmed"]);

    // Both: the migration runs once, on the first `app` server; `web` hooks on web servers only.
    let both = expect(&run(&world, &["deploy", "--stage", "production", "--force", "--parallel", "2"]), exit::SUCCESS);
    assert_eq!(marks(&world.deploy_to), ["everywhere", "migrated"], "{both}");
    assert_eq!(marks(&second_deploy_to), ["everywhere", "web-warmed"], "{both}");

    let no_such_host = expect(&run(&world, &["deploy", "--stage", "production", "--hosts", "web9"]), exit::CONFIG);
    assert!(no_such_host.contains("no server is `web9` (`--hosts`)"), "{no_such_host}");
    expect(&run(&world, &["deploy", "--stage", "production", "--parallel", "0"]), exit::USAGE);

    // The canary stage: its own server list and keep_releases.
    world.commit("src/main.rs", "fn main() { println!(\"canary\"); }\n");
    expect(&run(&world, &["deploy", "--stage", "canary"]), exit::SUCCESS);
    // Releases, not the pruned ones (`.pruned-<name>`) whose files the server is still removing.
    let count = |dir: &std::path::Path| {
        let entries = fs::read_dir(dir.join("releases")).unwrap();
        entries.filter(|entry| !entry.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count()
    };
    let releases = count(&second_deploy_to);
    assert_eq!(releases, 1, "keep_releases = 1 in the canary stage");
    let first_releases = count(&world.deploy_to);
    assert_eq!(first_releases, 1, "the canary stage does not reach the db server");
}

#[test]
fn a_host_alias_from_ssh_config_is_reached_with_its_port_user_and_key() {
    let world = World::new();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join(".ssh")).unwrap();
    fs::write(
        home.path().join(".ssh/config"),
        format!(
            "Host app-box\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n",
            world.server.port(),
            world.server.user(),
            world.server.identity().display()
        ),
    )
    .unwrap();
    world.edit_manifest(|manifest| {
        let servers = manifest.find("[[package.metadata.deploy.servers]]").unwrap();
        let ssh = manifest.find("[package.metadata.deploy.ssh]").unwrap();
        format!(
            "{}[[package.metadata.deploy.servers]]\nhost = \"app-box\"\n\n[package.metadata.deploy.ssh]\nknown_hosts = {}\n",
            &manifest[..servers],
            toml_string(&world.server.known_hosts().display().to_string())
        ) + &manifest[ssh..].lines().skip(3).map(|line| format!("{line}\n")).collect::<String>()
    });
    world.app.commit_all("reach the server by its alias").unwrap();
    let with_home = |home: &Path, args: &[&str]| {
        world.command(env!("CARGO_BIN_EXE_xtask"), args).env("HOME", home).env_remove("SSH_AUTH_SOCK").output().unwrap()
    };
    let empty_home = tempfile::tempdir().unwrap();
    let without = expect(&with_home(empty_home.path(), &["deploy-setup"]), exit::CONNECT);
    assert!(without.contains("cannot resolve `app-box`"), "without ~/.ssh/config the alias means nothing: {without}");
    expect(&with_home(home.path(), &["deploy-setup"]), exit::SUCCESS);
    let deployed = expect(&with_home(home.path(), &["deploy"]), exit::SUCCESS);
    assert!(world.current().is_some(), "{deployed}");
    assert!(deployed.contains(&format!("{}@127.0.0.1:{}", world.server.user(), world.server.port())), "{deployed}");
}

#[test]
fn on_a_terminal_each_server_has_one_line_redrawn_in_place() {
    let world = World::new();
    let (second, _) = add_server(&world);
    expect(&run(&world, &["deploy-setup"]), exit::SUCCESS);
    // `script` runs the deploy on a pseudo-terminal and copies what it drew.
    let command = format!(
        "{} deploy --manifest-path {}",
        xtask_deploy::shell::quote(env!("CARGO_BIN_EXE_xtask")),
        xtask_deploy::shell::quote(&world.app.manifest_path().display().to_string())
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run `script` (util-linux)");
    let drawn = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{drawn}");
    let names = [world.server.port(), second.port()].map(|port| format!("{}@127.0.0.1:{port}", world.server.user()));
    for name in &names {
        // Its line is cleared and redrawn (`ESC [2K`) with each step, the server's name first.
        let redrawn = "\u{1b}[2K";
        let steps: Vec<&str> = drawn
            .split(['\r', '\n'])
            .filter(|line| line.starts_with(redrawn) && line.contains(&format!("{name}  ")))
            .collect();
        assert!(steps.iter().any(|line| line.contains("Pushed")), "{name}: {drawn}");
        assert!(steps.iter().any(|line| line.contains("Published")), "{name}: {drawn}");
        let plain_pushed =
            drawn.split(['\r', '\n']).any(|line| line.trim_start().starts_with("Pushed ") && line.contains(name));
        assert!(!plain_pushed, "no plain `Pushed` line on a terminal: {drawn}");
        assert!(drawn.contains(&format!("Summary {name}: release")), "the summary stays: {drawn}");
    }
    // Not a terminal: plain lines, no escape sequences.
    let plain = expect(&run(&world, &["deploy", "--force"]), exit::SUCCESS);
    assert!(!plain.contains('\u{1b}'), "{plain}");
    for name in &names {
        assert!(plain.lines().any(|line| line.trim_start().starts_with("Pushed") && line.contains(name)), "{plain}");
    }
}

/// An `after_publish` hook that records each restart: the release, and whether it is a rollback.
const RECORD_RESTART: &str = r#"{ remote = 'echo "$RELEASE ${ROLLBACK:-0}" >> "$DEPLOY_TO/shared/restarts"' }"#;

/// A world of three servers whose health check fails where `shared/unhealthy` exists, and whose
/// restart hook records each restart; returns it with each server's `deploy_to`.
fn three_servers_with_a_health_check() -> (World, Vec<xtask_deploy::loopback::LoopbackServer>, Vec<std::path::PathBuf>)
{
    let world = World::with_config(&format!(
        "[package.metadata.deploy.hooks]\nafter_publish = [{RECORD_RESTART}]\n\
         [package.metadata.deploy.healthcheck]\nremote = 'test ! -e \"$DEPLOY_TO/shared/unhealthy\"'\n\
         timeout = 2\ninterval = 1\n"
    ));
    let others = support::add_servers(&world, 2);
    let mut deploy_tos = vec![world.deploy_to.clone()];
    let mut servers = Vec::new();
    for (server, deploy_to) in others {
        deploy_tos.push(deploy_to);
        servers.push(server);
    }
    expect(&run(&world, &["deploy-setup"]), exit::SUCCESS);
    (world, servers, deploy_tos)
}

fn last_restart(deploy_to: &Path) -> String {
    let restarts = fs::read_to_string(deploy_to.join("shared/restarts")).unwrap_or_default();
    restarts.lines().last().unwrap_or_default().to_string()
}

/// The `--json` events of `output` named `name`.
fn events(output: &Output, name: &str) -> Vec<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all: Vec<serde_json::Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    all.into_iter().filter(|event| event["event"] == name).collect()
}

#[test]
fn a_failing_health_check_on_one_of_three_servers_sends_all_three_back() {
    let (world, _servers, deploy_tos) = three_servers_with_a_health_check();
    let healthy = run(&world, &["deploy", "--json"]);
    expect(&healthy, exit::SUCCESS);
    let old = current_in(&deploy_tos[0]).unwrap();
    let checks = events(&healthy, "health_check");
    assert_eq!(checks.len(), 3, "one health check per server: {checks:?}");
    assert!(checks.iter().all(|check| check["passed"] == true), "{checks:?}");
    for deploy_to in &deploy_tos {
        assert_eq!(current_in(deploy_to).unwrap(), old, "every server on the new release");
        assert_eq!(last_restart(deploy_to), format!("{old} 0"));
    }

    fs::write(deploy_tos[1].join("shared/unhealthy"), "").unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"broken\"); }\n");
    let broken = run(&world, &["deploy", "--json"]);
    let text = expect(&broken, exit::ROLLED_BACK);
    let new = releases_in(&deploy_tos[0]).last().unwrap().clone();
    assert_ne!(new, old);
    for deploy_to in &deploy_tos {
        assert_eq!(
            current_in(deploy_to).unwrap(),
            old,
            "{}: not back on the old release:\n{text}",
            deploy_to.display()
        );
        assert_eq!(bad_in(deploy_to), vec![new.clone()], "{}: the new release is marked bad", deploy_to.display());
        assert_eq!(
            last_restart(deploy_to),
            format!("{old} 1"),
            "{}: restarted for the old release",
            deploy_to.display()
        );
        assert!(!deploy_to.join(".xtask-deploy/unconfirmed").exists());
        assert!(!deploy_to.join(".xtask-deploy/lock").exists(), "the lock was released");
    }
    let rolled_back = events(&broken, "rolled_back");
    assert_eq!(rolled_back.len(), 3, "one rolled_back event per server: {rolled_back:?}");
    assert!(rolled_back.iter().all(|event| event["from"] == new.as_str() && event["to"] == old.as_str()));
    let failed: Vec<_> = events(&broken, "health_check").into_iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let summary = &events(&broken, "summary")[0];
    assert_eq!((summary["outcome"].as_str(), summary["exit_code"].as_u64()), (Some("rolled_back"), Some(10)));
    assert!(text.contains("health check"), "the error says what failed:\n{text}");
}

#[test]
fn canaries_go_first_and_a_failing_one_leaves_the_others_untouched() {
    let (world, _servers, deploy_tos) = three_servers_with_a_health_check();
    let healthy = run(&world, &["deploy", "--json", "--canary", "1"]);
    expect(&healthy, exit::SUCCESS);
    let waves = events(&healthy, "wave");
    assert_eq!(waves.len(), 2, "{waves:?}");
    assert_eq!(waves[0]["servers"].as_array().unwrap().len(), 1, "one canary");
    assert_eq!(waves[1]["servers"].as_array().unwrap().len(), 2, "then the rest");
    let old = current_in(&deploy_tos[0]).unwrap();
    assert!(deploy_tos.iter().all(|deploy_to| current_in(deploy_to).unwrap() == old));

    let before: Vec<Vec<String>> = deploy_tos.iter().map(|deploy_to| releases_in(deploy_to)).collect();
    fs::write(deploy_tos[0].join("shared/unhealthy"), "").unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"broken canary\"); }\n");
    let broken = run(&world, &["deploy", "--json", "--canary", "1"]);
    expect(&broken, exit::ROLLED_BACK);
    assert_eq!(events(&broken, "wave").len(), 1, "the second wave never started");
    assert_eq!(current_in(&deploy_tos[0]).unwrap(), old, "the canary went back");
    assert_eq!(events(&broken, "rolled_back").len(), 1);
    for (deploy_to, before) in deploy_tos.iter().zip(&before).skip(1) {
        assert_eq!(&releases_in(deploy_to), before, "{}: touched", deploy_to.display());
        assert_eq!(current_in(deploy_to).unwrap(), old);
        assert_eq!(last_restart(deploy_to), format!("{old} 0"), "{}: restarted", deploy_to.display());
    }
}
