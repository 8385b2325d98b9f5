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
    let mut hold = None;
    let (world, relay, old) = deployed_through_relay(|world| {
        let held = Hold::new(world);
        let tables = format!("[package.metadata.deploy.healthcheck]\nremote = \"{}\"\n", held.fragment());
        hold = Some(held);
        tables
    });
    let hold = hold.unwrap();
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
    assert_eq!(err.exit_code(), xtask_deploy::exit::ROLLED_BACK, "{err}");
    let (server, by, from, to) = lost_event(&events);
    assert_eq!(server, format!("root@127.0.0.1:{}", relay.port()));
    let new = world.releases()[1].clone();
    assert_eq!((from.as_deref(), to.as_deref()), (Some(new.as_str()), Some(old.as_str())));
    assert!(went_back_at <= by + 1, "it said by {by}, it went back at {went_back_at}");
    let message = err.to_string();
    assert!(message.contains("its link is down"), "{message}");
    assert!(message.contains(&format!("{server} by 20")), "the time it goes back by is said: {message}");
    let Some(Event::Summary(summary)) = events.last() else { panic!("the last event is the summary") };
    assert_eq!(summary.servers[0].status, xtask_deploy::report::ServerStatus::GoingBack);
    assert!(summary.servers[0].on_its_own.is_some());

    hold.release();
    relay.thaw();
    let next = world.deploy();
    assert_eq!(world.current(), Some(next.release));
}
