//! Silent partitions (issue 30): a link that stops carrying packets, without a FIN or an RST,
//! closes no channel. The relay in front of the sshd freezes (`Relay::freeze`): nothing passes
//! either way, and nothing is closed. The server keeps its own deadline and its own count of the
//! deployer's silence, and goes back by itself; the deployer gives up on a server it hears
//! nothing from, and says what that server does and by when.

use std::fs;
use std::time::{Duration, Instant};

use xtask_deploy::relay::Relay;
use xtask_deploy::report::DeployReport;
use xtask_deploy::Event;

use crate::support::{wait_until, Hold, World};

/// An `after_publish` hook that records each restart: the release and whether it is a rollback.
const RECORD_RESTART: &str = r#"echo "$RELEASE ${ROLLBACK:-0}" >> "$DEPLOY_TO/shared/restarts""#;

/// `timeouts.silence` in these tests (the default is 20 s).
const SILENCE: u64 = 5;

/// The app deployed once through a relay, with a restart hook that records, and the tables
/// `extra` makes (given the world) appended to its manifest; returns the world, the relay and
/// the first deploy's release.
fn deployed_through_relay(extra: impl FnOnce(&World) -> String) -> (World, Relay, String) {
    let world = World::new();
    let relay = Relay::start(world.server.port(), Duration::ZERO).unwrap();
    world.route_through(relay.port());
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let tables = format!(
        "\n[package.metadata.deploy.timeouts]\nsilence = {SILENCE}\n\
         [package.metadata.deploy.hooks]\nafter_publish = [{{ remote = '{RECORD_RESTART}' }}]\n{}",
        extra(&world)
    );
    world.commit("Cargo.toml", &format!("{manifest}{tables}"));
    world.setup();
    let old = world.deploy();
    (world, relay, old.release)
}

/// Like [`deployed_through_relay`], with a health check that holds once armed (see [`Hold`]).
fn deployed_with_a_health_check_that_holds() -> (World, Relay, String, Hold) {
    let mut hold = None;
    let (world, relay, old) = deployed_through_relay(|world| {
        let held = Hold::new(world);
        let tables = format!("[package.metadata.deploy.healthcheck]\nremote = \"{}\"\n", held.fragment());
        hold = Some(held);
        tables
    });
    (world, relay, old, hold.expect("made with the world"))
}

/// What a server that went back by itself holds: `current` at `old`, the restart hook run for it
/// with `ROLLBACK=1`, the release it went back from marked bad, no marker, the lock free, and
/// no process of the deploy left.
fn assert_went_back(world: &World, old: &str) {
    // Released once it is done going back.
    assert!(wait_until(Duration::from_secs(5), || !world.locked()), "the lock was left");
    assert_eq!(world.current().as_deref(), Some(old), "current is the old release");
    let restarts = fs::read_to_string(world.deploy_to.join("shared/restarts")).unwrap_or_default();
    assert_eq!(restarts.lines().last(), Some(format!("{old} 1").as_str()), "the restart hook ran for it: {restarts}");
    let releases = world.releases();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert_eq!(world.bad(), vec![releases[1].clone()], "the release it went back from is marked bad");
    assert!(!world.deploy_to.join(".xtask-deploy/unconfirmed").exists(), "the marker was left");
    assert_eq!(world.our_processes_after(Duration::from_secs(5)), vec![], "processes of the deploy still run");
}

/// A deploy of a new commit started in a thread, with the events it reports; `on_event` sees
/// each as it comes (to freeze the relay at one).
fn deploy_in_thread(
    world: &World,
    mut on_event: impl FnMut(&Event) + Send + 'static,
) -> std::thread::JoinHandle<(Result<DeployReport, xtask_deploy::Error>, Vec<Event>, Instant)> {
    let config = world.config();
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let result = xtask_deploy::deploy(&config, &Default::default(), &mut |event: Event| {
            on_event(&event);
            events.push(event);
        });
        (result, events, Instant::now())
    })
}

/// The `lost` event of a deploy, and its `by` as seconds since 1970.
fn lost_event(events: &[Event]) -> (String, u64, Option<String>, Option<String>) {
    let lost = events.iter().find_map(|event| match event {
        Event::Lost { server, by, from, to } => Some((server.clone(), by.clone(), from.clone(), to.clone())),
        _ => None,
    });
    let (server, by, from, to) = lost.expect("a `lost` event");
    (server, seconds_of(&by), from, to)
}

/// Seconds since 1970 of an RFC 3339 UTC time to the second (`2026-12-07T18:05:39Z`).
fn seconds_of(time: &str) -> u64 {
    let output = std::process::Command::new("date").args(["-u", "-d", time, "+%s"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or_else(|_| panic!("not a time: {time}"))
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn a_link_frozen_in_the_health_check_sends_the_server_back_by_itself() {
    let (world, relay, old, hold) = deployed_with_a_health_check_that_holds();
    world.commit("src/main.rs", "fn main() { println!(\"frozen\"); }\n");
    hold.arm();
    let deploying = deploy_in_thread(&world, |_| {});
    assert!(hold.wait_held(Duration::from_secs(30)), "the deploy never reached its health check");
    relay.freeze();
    let frozen = Instant::now();
    let back = wait_until(Duration::from_secs(SILENCE + 5), || world.current().as_deref() == Some(old.as_str()));
    eprintln!("went back {:?} after the freeze", frozen.elapsed());
    assert!(back, "the server did not go back within timeouts.silence + 5 s");
    let went_back_at = now_seconds();
    assert_went_back(&world, &old);

    let (result, events, ended) = deploying.join().unwrap();
    let took = ended - frozen;
    let err = result.expect_err("the deploy failed");
    eprintln!("the deployer gave up {took:?} after the freeze: {err}");
    assert!(took < Duration::from_secs(SILENCE + 5), "the deployer took {took:?} to give up");
    // One server: its last batch confirms too, after the health check. Whether the check passed
    // and the confirmation ran there after the link went down, the deployer cannot know.
    assert_eq!(err.exit_code(), xtask_deploy::exit::PARTIAL, "{err}");
    let (server, by, from, to) = lost_event(&events);
    assert_eq!(server, format!("root@127.0.0.1:{}", relay.port()));
    let new = world.releases()[1].clone();
    assert_eq!((from.as_deref(), to.as_deref()), (Some(new.as_str()), Some(old.as_str())));
    assert!(went_back_at <= by + 1, "it said by {by}, it went back at {went_back_at}");
    let message = err.to_string();
    assert!(message.contains("its link is down"), "{message}");
    assert!(message.contains("not known to be confirmed"), "{message}");
    assert!(message.contains("it goes back by itself by 20"), "the time it goes back by is said: {message}");
    let Some(Event::Summary(summary)) = events.last() else { panic!("the last event is the summary") };
    assert!(summary.servers[0].on_its_own.is_some());

    hold.release();
    relay.thaw();
    let next = world.deploy();
    assert_eq!(world.current(), Some(next.release));
}

/// A local `after_publish` hook that marks `held` in `dir` and waits (60 s at most) until
/// `released` is there: it runs on the deployer after every remote step, just before the
/// confirmation. (Local commands run without a shell: the shell code is a file of its own.)
fn local_hold(dir: &std::path::Path) -> String {
    let script = dir.join("hold.sh");
    let dir = dir.display();
    fs::write(
        &script,
        format!("touch '{dir}/held'; i=0; while [ ! -e '{dir}/released' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n"),
    )
    .unwrap();
    format!("{{ local = \"sh {}\" }}", script.display())
}

#[test]
fn a_link_frozen_just_before_the_confirmation_sends_the_server_back_by_itself() {
    let local = tempfile::tempdir().unwrap();
    let (world, relay, old) = deployed_through_relay(|_| String::new());
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let hooks = format!("after_publish = [{{ remote = '{RECORD_RESTART}' }}, {}]", local_hold(local.path()));
    let manifest = manifest.replace(&format!("after_publish = [{{ remote = '{RECORD_RESTART}' }}]"), &hooks);
    world.commit("Cargo.toml", &manifest);
    world.commit("src/main.rs", "fn main() { println!(\"frozen\"); }\n");
    let deploying = deploy_in_thread(&world, |_| {});
    assert!(wait_until(Duration::from_secs(30), || local.path().join("held").exists()), "never reached the hook");
    relay.freeze();
    assert!(wait_until(Duration::from_secs(SILENCE + 5), || world.current().as_deref() == Some(old.as_str())));
    // The hook ends (the deployer then finds the server silent), and nothing of the deploy is left.
    fs::write(local.path().join("released"), "").unwrap();
    assert_went_back(&world, &old);
    let (result, events, _) = deploying.join().unwrap();
    let err = result.expect_err("the deploy failed");
    eprintln!("{err}");
    // Nothing was confirmed anywhere: the deployer found the server silent before it confirmed.
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    let (_, _, from, to) = lost_event(&events);
    assert_eq!(to.as_deref(), Some(old.as_str()));
    assert!(from.is_some());
    relay.thaw();
    world.deploy();
}

#[test]
fn a_link_frozen_just_after_the_confirmation_leaves_the_release_live() {
    let (world, relay, _) = deployed_through_relay(|_| String::new());
    world.commit("src/main.rs", "fn main() { println!(\"confirmed\"); }\n");
    let relay = std::sync::Arc::new(relay);
    let freezing = std::sync::Arc::clone(&relay);
    // The summary comes once the deploy is confirmed, before its keepers' channels close.
    let deploying = deploy_in_thread(&world, move |event| {
        if matches!(event, Event::Summary(_)) {
            freezing.freeze();
        }
    });
    let (result, _, _) = deploying.join().unwrap();
    let report = result.expect("the deploy was confirmed");
    let frozen = Instant::now();
    // Longer than the keeper waits without hearing from the deployer.
    std::thread::sleep(Duration::from_secs(SILENCE + 3));
    assert_eq!(world.current(), Some(report.release.clone()), "the confirmed release went back");
    assert_eq!(world.bad(), Vec::<String>::new());
    assert!(!world.locked());
    // The keeper, which waited for the end of a channel that never came, is gone too.
    assert_eq!(world.our_processes_after(Duration::from_secs(5)), vec![], "processes of the deploy still run");
    eprintln!("checked {:?} after the freeze", frozen.elapsed());
    relay.thaw();
}

#[test]
fn a_health_check_that_takes_90_seconds_on_a_healthy_link_passes_without_going_back() {
    let (world, _relay, _) = deployed_through_relay(|_| String::new());
    // Only the deploy under test has the slow health check (the first would wait as long).
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let slow = "[package.metadata.deploy.healthcheck]\nremote = \"sleep 90\"\ntimeout = 120\n";
    world.commit("Cargo.toml", &format!("{manifest}{slow}"));
    world.commit("src/main.rs", "fn main() { println!(\"slow\"); }\n");
    let started = Instant::now();
    let mut events = xtask_deploy::report::Collect::default();
    let report = xtask_deploy::deploy(&world.config(), &Default::default(), &mut events).expect("the deploy passed");
    assert!(started.elapsed() >= Duration::from_secs(90), "the health check ran its 90 s");
    assert_eq!(world.current(), Some(report.release));
    assert_eq!(world.bad(), Vec::<String>::new());
    let restarts = fs::read_to_string(world.deploy_to.join("shared/restarts")).unwrap();
    assert!(!restarts.lines().any(|line| line.ends_with(" 1")), "nothing went back: {restarts}");
    assert!(!events.0.iter().any(|event| matches!(event, Event::Lost { .. })));
}

#[test]
fn three_servers_one_partitioned_in_the_health_check_all_end_on_the_old_release() {
    let (world, relay, old, hold) = deployed_with_a_health_check_that_holds();
    let others = crate::support::add_servers(&world, 2);
    world.setup();
    world.deploy();
    let before: Vec<String> = std::iter::once(world.deploy_to.clone())
        .chain(others.iter().map(|(_, dir)| dir.clone()))
        .map(|dir| crate::support::current_in(&dir).unwrap())
        .collect();
    world.commit("src/main.rs", "fn main() { println!(\"three\"); }\n");
    hold.arm();
    let deploying = deploy_in_thread(&world, |_| {});
    // One health check holds (any of the three); the relayed server's link goes down meanwhile.
    assert!(hold.wait_held(Duration::from_secs(30)), "no health check was reached");
    relay.freeze();
    assert!(wait_until(Duration::from_secs(SILENCE + 5), || !world.locked()), "the relayed server did not give up");
    hold.release();
    let (result, events, _) = deploying.join().unwrap();
    let err = result.expect_err("the deploy failed");
    eprintln!("{err}");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    let relayed = format!("root@127.0.0.1:{}", relay.port());
    assert!(err.to_string().contains(&format!("goes back by itself on {relayed} by 20")), "{err}");
    let Some(Event::Summary(summary)) = events.last() else { panic!("the last event is the summary") };
    let statuses: Vec<_> = summary.servers.iter().map(|server| (server.server.clone(), server.status)).collect();
    use xtask_deploy::report::ServerStatus::{GoingBack, RolledBack};
    assert_eq!(statuses.iter().filter(|(_, status)| *status == RolledBack).count(), 2, "{statuses:?}");
    assert!(statuses.contains(&(relayed, GoingBack)), "{statuses:?}");
    let after: Vec<String> = std::iter::once(world.deploy_to.clone())
        .chain(others.iter().map(|(_, dir)| dir.clone()))
        .map(|dir| crate::support::current_in(&dir).unwrap())
        .collect();
    assert_eq!(after, before, "every server is on the release it had");
    let _ = old;
    relay.thaw();
}

#[test]
fn a_confirmation_later_than_timeouts_confirm_is_never_given_and_the_server_goes_back_by_itself() {
    let world = World::new();
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    world.commit(
        "Cargo.toml",
        &format!(
            "{manifest}\n[package.metadata.deploy.timeouts]\nconfirm = 4\n\
             [package.metadata.deploy.hooks]\nafter_publish = [{{ remote = '{RECORD_RESTART}' }}]\n"
        ),
    );
    world.setup();
    let old = world.deploy().release;
    // A local step after the switch that outlasts the servers' deadline.
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    let slow = format!("after_publish = [{{ remote = '{RECORD_RESTART}' }}, {{ local = \"sleep 8\" }}]");
    world.commit(
        "Cargo.toml",
        &manifest.replace(&format!("after_publish = [{{ remote = '{RECORD_RESTART}' }}]"), &slow),
    );
    world.commit("src/main.rs", "fn main() { println!(\"late\"); }\n");
    let started = Instant::now();
    let deploying = deploy_in_thread(&world, |_| {});
    // The deployer is alive and beating: only the deadline sends it back.
    let back = wait_until(Duration::from_secs(30), || {
        world.bad().len() == 1 && world.current().as_deref() == Some(old.as_str())
    });
    assert!(back, "the server did not go back by itself");
    let went_back = started.elapsed();
    let (result, events, ended) = deploying.join().unwrap();
    eprintln!("went back {went_back:?} after the deploy started, which ended after {:?}", ended - started);
    assert!(went_back < Duration::from_secs(8), "it went back before the deployer gave up");
    let err = result.expect_err("the deploy failed");
    eprintln!("{err}");
    assert!(err.to_string().contains("`timeouts.confirm`"), "{err}");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    assert!(!events.iter().any(|event| matches!(event, Event::Lost { .. })), "no link was lost");
    assert_went_back(&world, &old);
}

#[test]
fn a_server_whose_health_check_failed_goes_back_without_waiting_for_the_others() {
    let world = World::new();
    let others = crate::support::add_servers(&world, 1);
    let (_, failing) = &others[0];
    let hold = Hold::new(&world);
    // Once `fail` is there, the second server's check fails at once; the first's holds.
    let fail = hold.dir.join("fail");
    let check = format!(
        "if [ -e '{}' ] && [ \\\"$DEPLOY_TO\\\" = '{}' ]; then exit 1; fi; {}",
        fail.display(),
        failing.display(),
        hold.fragment()
    );
    let manifest = fs::read_to_string(world.app.manifest_path()).unwrap();
    world.commit(
        "Cargo.toml",
        &format!(
            "{manifest}\n[package.metadata.deploy.hooks]\nafter_publish = [{{ remote = '{RECORD_RESTART}' }}]\n\
             [package.metadata.deploy.healthcheck]\nremote = \"{check}\"\ntimeout = 1\n"
        ),
    );
    world.setup();
    world.deploy();
    let old = crate::support::current_in(failing).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"failing\"); }\n");
    fs::write(&fail, "").unwrap();
    hold.arm();
    let deploying = deploy_in_thread(&world, |_| {});
    assert!(hold.wait_held(Duration::from_secs(30)), "the first server's check never held");
    // The deployer waits for the first server's check; the second goes back by itself meanwhile.
    let back =
        wait_until(Duration::from_secs(15), || crate::support::current_in(failing).as_deref() == Some(old.as_str()));
    assert!(back, "the server whose check failed did not go back by itself");
    assert!(!hold.dir.join("released").exists(), "the other check still holds");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let restarts = fs::read_to_string(failing.join("shared/restarts")).unwrap_or_default();
            restarts.lines().last() == Some(format!("{old} 1").as_str())
        }),
        "the restart hook ran for the release it went back to"
    );
    hold.release();
    let (result, _, _) = deploying.join().unwrap();
    let err = result.expect_err("the deploy failed");
    eprintln!("{err}");
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    assert_eq!(crate::support::current_in(failing), Some(old));
    assert_eq!(world.current(), Some(world.releases()[world.releases().len() - 2].clone()));
}
