//! Many servers: a deploy reaches them all in parallel with one release name and one commit,
//! publishes only when every one is ready, and reaches servers through a gateway.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{add_existing_server, add_servers, current_in, processes_left_on, releases_in, Netns, World};
use xtask_deploy::loopback::{toml_string, LoopbackServer, Place};
use xtask_deploy::report::{Collect, Event, ServerStatus};
use xtask_deploy::{DeployOptions, Error};

/// A remote hook that waits until `count` servers have reached it (each leaves a file in
/// `barrier`): servers that ran one after the other would never all arrive, and it fails.
fn barrier_hook(barrier: &std::path::Path, count: usize) -> String {
    let dir = xtask_deploy::shell::quote(&barrier.display().to_string());
    let command = format!(
        "mktemp {dir}/arrived.XXXXXX >/dev/null; i=0; \
         while [ \"$(ls {dir} | wc -l)\" -lt {count} ]; do i=$((i+1)); \
         if [ $i -gt 300 ]; then echo \"only $(ls {dir} | wc -l) of {count} servers arrived\" >&2; exit 1; fi; \
         sleep 0.1; done"
    );
    format!("hooks = {{ after_update = [{{ remote = {} }}] }}", toml_string(&command))
}

/// Puts a stand-in for `tool` first on `server`'s `PATH`: it waits until `count` calls (from
/// every server) have arrived in `root/tool/`, then runs the real tool. Servers worked on one
/// after the other never all arrive: after 5 s the stand-in writes `root/timed-out` and runs
/// the real tool anyway.
fn barrier_tool(server: &LoopbackServer, root: &std::path::Path, tool: &str, count: usize) {
    let dir = root.join(tool);
    fs::create_dir_all(&dir).unwrap();
    let quoted = |path: &std::path::Path| xtask_deploy::shell::quote(&path.display().to_string());
    let (dir, timed_out) = (quoted(&dir), quoted(&root.join("timed-out")));
    let script = format!(
        "#!/bin/sh\nmktemp {dir}/arrived.XXXXXX >/dev/null\ni=0\n\
         while [ \"$(ls {dir} | wc -l)\" -lt {count} ]; do\n\
         \x20 i=$((i+1)); if [ $i -gt 50 ]; then echo {tool} >> {timed_out}; break; fi; sleep 0.1\n\
         done\nPATH={path} exec {tool} \"$@\"\n",
        path = xtask_deploy::loopback::DEFAULT_PATH,
    );
    let stand_in = server.bin_dir().join(tool);
    fs::write(&stand_in, script).unwrap();
    fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The world's own server, then `others` (as [`add_servers`] made them): the config's order.
fn servers<'a>(world: &'a World, others: &'a [(LoopbackServer, PathBuf)]) -> Vec<&'a LoopbackServer> {
    std::iter::once(&world.server).chain(others.iter().map(|(server, _)| server)).collect()
}

/// The `deploy_to` of each of [`servers`], in the same order.
fn deploy_tos(world: &World, others: &[(LoopbackServer, PathBuf)]) -> Vec<PathBuf> {
    std::iter::once(world.deploy_to.clone()).chain(others.iter().map(|(_, deploy_to)| deploy_to.clone())).collect()
}

#[test]
fn eight_servers_are_deployed_in_parallel_with_one_release_and_one_commit() {
    let barrier = tempfile::tempdir().unwrap();
    let world = World::with_config(&barrier_hook(barrier.path(), 8));
    let others = add_servers(&world, 7);
    let deploy_tos = deploy_tos(&world, &others);
    world.setup();
    let mut events = Collect(Vec::new());
    let report = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events)
        .unwrap_or_else(|err| panic!("deploy: {err}"));
    assert_eq!(report.servers.len(), 8);
    assert!(report.servers.iter().all(|server| server.status == ServerStatus::Published), "{report:?}");
    assert_eq!(fs::read_dir(barrier.path()).unwrap().count(), 8, "every server ran the hook once");
    for deploy_to in &deploy_tos {
        assert_eq!(current_in(deploy_to).as_deref(), Some(report.release.as_str()), "{}", deploy_to.display());
        let revision = fs::read_to_string(deploy_to.join("releases").join(&report.release).join("REVISION")).unwrap();
        assert_eq!(revision.trim(), report.sha);
    }
    // No server switched before every server was ready.
    let position = |wanted: fn(&Event) -> bool| events.0.iter().rposition(wanted);
    let last_prepared = position(|event| matches!(event, Event::Prepared { .. })).unwrap();
    let first_published = events.0.iter().position(|event| matches!(event, Event::Published { .. })).unwrap();
    assert!(last_prepared < first_published, "every server was prepared before any switched");
    assert!(!deploy_tos.iter().any(|deploy_to| deploy_to.join(".xtask-deploy/lock").exists()), "locks released");
}

#[test]
fn one_server_failing_to_prepare_leaves_every_server_as_it_was() {
    // An on_failure hook that fails too, on every server: each failure is reported.
    let world =
        World::with_config("[package.metadata.deploy.hooks]\non_failure = [{ remote = \"echo paged >&2; exit 7\" }]");
    let others = add_servers(&world, 3);
    world.setup();
    let first = world.deploy();
    let deploy_tos = deploy_tos(&world, &others);
    // The third server's `tar` fails, as a full disk would, while it makes the release.
    let (broken, _) = &others[1];
    let tar = broken.bin_dir().join("tar");
    fs::write(&tar, "#!/bin/sh\necho 'tar: write error: No space left on device' >&2\nexit 2\n").unwrap();
    fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    world.commit("src/main.rs", "fn main() {}\n");

    let mut events = Collect(Vec::new());
    let err = xtask_deploy::deploy(&world.config(), &DeployOptions::default(), &mut events).unwrap_err();
    let broken_name = format!("{}@127.0.0.1:{}", broken.user(), broken.port());
    match &err {
        Error::Remote { server, message, .. } => {
            assert_eq!(server, &broken_name);
            assert!(message.contains("No space left on device"), "{message}");
        }
        other => panic!("expected the prepare step to fail on {broken_name}: {other}"),
    }
    let prepared: Vec<&Event> = events.0.iter().filter(|event| matches!(event, Event::Prepared { .. })).collect();
    assert_eq!(prepared.len(), 3, "the other three servers made their release: {prepared:?}");
    assert!(!events.0.iter().any(|event| matches!(event, Event::Published { .. })), "no server switched");
    let discarded = events.0.iter().filter(|event| matches!(event, Event::Discarded { .. })).count();
    assert_eq!(discarded, 4, "every server's unfinished release was removed");
    let hook_failures: Vec<&str> = events
        .0
        .iter()
        .filter_map(|event| match event {
            Event::Warning { message } if message.starts_with("on_failure hook failed") => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(hook_failures.len(), 4, "{hook_failures:?}");
    for (server, _) in &others {
        let name = format!("{}@127.0.0.1:{}", server.user(), server.port());
        assert!(hook_failures.iter().any(|message| message.contains(&name)), "{name} in {hook_failures:?}");
    }
    for deploy_to in &deploy_tos {
        assert_eq!(current_in(deploy_to).as_deref(), Some(first.release.as_str()), "{}", deploy_to.display());
        assert_eq!(releases_in(deploy_to), vec![first.release.clone()], "{}", deploy_to.display());
        assert!(!deploy_to.join(".xtask-deploy/lock").exists(), "lock released on {}", deploy_to.display());
    }
    for server in servers(&world, &others) {
        let left = processes_left_on(server, Duration::from_millis(300));
        assert_eq!(left, vec![], "still running on {} after the failed deploy", server.port());
    }
}

#[test]
fn servers_behind_a_gateway_are_reached_only_through_it() {
    let world = World::new();
    let netns = Netns::create();
    // The gateway listens on the namespace's veth address, reachable from here.
    let gateway =
        LoopbackServer::start_with(&Place { listen: &netns.inside, netns: Some(&netns.name), ..Place::default() })
            .expect("start the gateway's sshd in the namespace");
    // Each inner server listens on the namespace's own 127.0.0.1, out of reach from here. Its
    // port is held here by a decoy listener, so that a direct connection would arrive there.
    let decoys: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let mut inner = Vec::new();
    for decoy in &decoys {
        let port = decoy.local_addr().unwrap().port();
        let server =
            LoopbackServer::start_with(&Place { netns: Some(&netns.name), port: Some(port), ..Place::default() })
                .expect("start an inner sshd in the namespace");
        inner.push(add_existing_server(&world, server));
    }
    // Only the inner servers: the world's own server leaves the manifest.
    world.server.admit(&gateway).unwrap();
    world.edit_manifest(|manifest| {
        let first = manifest.find("[[package.metadata.deploy.servers]]").unwrap();
        let second = first + 1 + manifest[first + 1..].find("[[package.metadata.deploy.servers]]").unwrap();
        let ssh = manifest.find("[package.metadata.deploy.ssh]").unwrap();
        let mut kept = format!("{}{}", &manifest[..first], &manifest[ssh..second]);
        kept.push_str(&manifest[second..]);
        kept.push_str(&format!(
            "\n[package.metadata.deploy.gateway]\nhost = {}\nport = {}\nuser = {}\nidentity = {}\n",
            toml_string(&netns.inside),
            gateway.port(),
            toml_string(gateway.user()),
            toml_string(&world.server.identity().display().to_string()),
        ));
        kept
    });
    world.app.commit_all("deploy through the gateway").unwrap();
    assert_eq!(world.config().servers.len(), 2, "the two inner servers");

    world.setup();
    let report = world.deploy();
    for (server, deploy_to) in &inner {
        assert_eq!(current_in(deploy_to).as_deref(), Some(report.release.as_str()));
        let log = server.log();
        assert!(log.contains("Accepted publickey"), "the deploy logged in: {log}");
    }
    for decoy in &decoys {
        decoy.set_nonblocking(true).unwrap();
        assert!(decoy.accept().is_err(), "nothing connected to the inner servers' ports directly");
    }
    let gateway_log = gateway.log();
    assert!(gateway_log.contains("Accepted publickey"), "{gateway_log}");
    drop(inner);
    drop(gateway);
}

#[test]
fn check_releases_unlock_and_rollback_work_on_every_server_at_once() {
    let world = World::new();
    let others = add_servers(&world, 3);
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let config = world.config();
    let servers = servers(&world, &others);
    let deploy_tos = deploy_tos(&world, &others);
    // Each command's first use of a tool: deploy-check runs `df`, `releases` `readlink`,
    // `unlock` `rm` (with a lock to remove), `rollback` `basename`.
    let barriers = tempfile::tempdir().unwrap();
    for server in &servers {
        for tool in ["df", "readlink", "rm", "basename"] {
            barrier_tool(server, barriers.path(), tool, servers.len());
        }
    }
    let arrived = |tool: &str| fs::read_dir(barriers.path().join(tool)).unwrap().count();

    let report = xtask_deploy::check::run_checks(&config, &mut Collect(Vec::new()));
    assert!(report.ok(), "{report:?}");
    let order: Vec<String> = report.checks.iter().map(|check| check.server.clone()).collect();
    let mut servers_in_order = order.clone();
    servers_in_order.dedup();
    assert_eq!(servers_in_order.len(), 4, "the rows come server by server, in the configured order: {order:?}");
    assert_eq!(arrived("df"), 4);

    let listed = xtask_deploy::manage::releases(&config).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|server| server.state.current_release() == Some(second.release.as_str())));
    assert_eq!(arrived("readlink"), 4);

    for deploy_to in &deploy_tos {
        let lock = deploy_to.join(".xtask-deploy/lock");
        fs::create_dir_all(&lock).unwrap();
        fs::write(lock.join("info"), "user=gone\nconnection=1 0\n").unwrap();
    }
    let mut events = Collect(Vec::new());
    xtask_deploy::manage::unlock(&config, false, &mut events).unwrap();
    let unlocked = events.0.iter().filter(|event| matches!(event, Event::Unlocked { .. })).count();
    assert_eq!(unlocked, 4, "{:?}", events.0);
    assert!(deploy_tos.iter().all(|deploy_to| !deploy_to.join(".xtask-deploy/lock").exists()));
    assert!(arrived("rm") >= 4);

    let mut events = Collect(Vec::new());
    xtask_deploy::manage::rollback(&config, xtask_deploy::plan::RollbackTo::Previous, &mut events).unwrap();
    let rolled = events.0.iter().filter(|event| matches!(event, Event::RolledBack { .. })).count();
    assert_eq!(rolled, 4, "{:?}", events.0);
    for deploy_to in &deploy_tos {
        assert_eq!(current_in(deploy_to).as_deref(), Some(first.release.as_str()), "{}", deploy_to.display());
    }
    assert_eq!(arrived("basename"), 4);
    let timed_out = fs::read_to_string(barriers.path().join("timed-out")).unwrap_or_default();
    assert_eq!(timed_out, "", "these waited for servers that never came at the same time");
}
