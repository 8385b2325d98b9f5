//! What a deploy sends: our scripts once per version of the tool, kept by the server, then
//! little more than an `ssh true` and the pack (every byte counted by a relay outside the tool).

use std::process::Command;
use std::time::Duration;

use crate::support::World;
use xtask_deploy::relay::Relay;
use xtask_deploy::shell::kept::{kept, KEPT_DIR};

/// The bytes OpenSSH's client sends for `ssh <server> true` through `relay`.
fn ssh_true(world: &World, relay: &Relay) -> u64 {
    relay.reset();
    let server = &world.server;
    let status = Command::new("ssh")
        .args(["-F", "/dev/null", "-p", &relay.port().to_string(), "-i"])
        .arg(server.identity())
        .arg(format!("-oUserKnownHostsFile={}", server.known_hosts().display()))
        .args(["-oStrictHostKeyChecking=yes", "-oBatchMode=yes", "-oLogLevel=ERROR"])
        .arg(format!("{}@{}", server.user(), server.listen()))
        .arg("true")
        .status()
        .expect("run ssh");
    assert!(status.success(), "ssh ... true through the relay");
    relay.bytes_to_target()
}

#[test]
fn an_incremental_deploy_sends_little_more_than_ssh_true_and_its_pack_and_new_scripts_once() {
    let world = World::new();
    let relay = Relay::start(world.server.port(), Duration::ZERO).unwrap();
    world.route_through(relay.port());
    world.setup();
    let kept_file = world.deploy_to.join(KEPT_DIR).join(&kept().id);
    let kept_text = std::fs::read_to_string(&kept_file).ok();
    assert_eq!(kept_text.as_deref(), Some(kept().text), "deploy-setup leaves our scripts kept");
    world.deploy();

    world.commit("src/main.rs", "fn main() { println!(\"two\"); }\n");
    relay.reset();
    let report = world.deploy();
    let sent = relay.bytes_to_target();
    let pack = report.servers[0].bytes_sent;
    let baseline = ssh_true(&world, &relay);
    eprintln!("one-line deploy: {sent} bytes to the server; `ssh true` {baseline}, the pack {pack}");
    assert!(sent <= baseline + pack + 4096, "sent {sent}: ssh true {baseline}, pack {pack}");

    // A new version of the tool: the server has another file (an older one), and a deploy
    // sends ours once, then no more.
    let dir = world.deploy_to.join(KEPT_DIR);
    std::fs::remove_file(&kept_file).unwrap();
    std::fs::write(dir.join("0123456789abcdef0123456789abcdef01234567"), "echo older\n").unwrap();
    for (round, change) in ["three", "four"].into_iter().enumerate() {
        world.commit("src/main.rs", &format!("fn main() {{ println!(\"{change}\"); }}\n"));
        relay.reset();
        let report = world.deploy();
        let sent = relay.bytes_to_target();
        let pack = report.servers[0].bytes_sent;
        eprintln!("after a new version, deploy {round}: {sent} bytes");
        let file = kept().text.len() as u64;
        match round {
            0 => assert!(sent >= file && sent <= baseline + pack + 4096 + file + 1024, "sent {sent}, file {file}"),
            _ => assert!(sent <= baseline + pack + 4096, "sent {sent}"),
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from(&kept().id)], "only this version's file is kept");

    // A kept file changed on the server (a disk fault, a hand edit) fails its check, and is
    // sent again: the deploy is what it would have been.
    std::fs::write(&kept_file, kept().text.replacen("set -u", "set -u; echo tampered >&2; exit 9", 1)).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"five\"); }\n");
    let report = world.deploy();
    assert_eq!(world.current().as_deref(), Some(report.release.as_str()));
    assert_eq!(std::fs::read_to_string(&kept_file).unwrap(), kept().text);
}
