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
    assert!(world.server.ssh_true(relay.port()).status().expect("run ssh").success(), "ssh ... true");
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
    let older = dir.join("0123456789abcdef0123456789abcdef01234567");
    std::fs::write(&older, "echo older\n").unwrap();
    // Another version's file, untouched for 31 days; one of a week goes on being kept.
    let recent = dir.join("89abcdef0123456789abcdef0123456789abcdef");
    std::fs::write(&recent, "echo recent\n").unwrap();
    for (file, age) in [(&older, "31 days ago"), (&recent, "7 days ago")] {
        assert!(Command::new("touch").args(["-d", age]).arg(file).status().unwrap().success());
    }
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
    let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    left.sort();
    let mut want = vec![std::ffi::OsString::from(&kept().id), recent.file_name().unwrap().to_owned()];
    want.sort();
    assert_eq!(left, want, "this version's file is kept, and another's of a week; one of 31 days went");

    // A kept file changed on the server (a disk fault, a hand edit) fails its check, and is
    // sent again: the deploy is what it would have been.
    std::fs::write(&kept_file, kept().text.replacen("set -u", "set -u; echo tampered >&2; exit 9", 1)).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"five\"); }\n");
    let report = world.deploy();
    assert_eq!(world.current().as_deref(), Some(report.release.as_str()));
    assert_eq!(std::fs::read_to_string(&kept_file).unwrap(), kept().text);

    // Commands that change nothing on a server keep nothing there either: a server without
    // the file is sent it for each of their scripts, and left as it was.
    std::fs::remove_dir_all(&dir).unwrap();
    let config = world.config();
    let checks = xtask_deploy::run_checks(&config, &mut xtask_deploy::report::Collect(Vec::new()));
    assert!(checks.ok(), "{checks:?}");
    assert!(!xtask_deploy::releases(&config).unwrap().is_empty());
    assert!(!dir.exists(), "deploy-check and releases kept nothing");
    world.commit("src/main.rs", "fn main() { println!(\"six\"); }\n");
    world.deploy();
    assert_eq!(std::fs::read_to_string(&kept_file).unwrap(), kept().text, "a deploy keeps it again");
}

/// What a deploy user's startup files print on a non-interactive login (here `~/.ssh/rc`, which
/// sshd runs before every command; a `~/.bashrc` that greets does the same) comes before the
/// bootstrap's answer: it is passed over, and the deploy works.
#[test]
fn a_login_that_prints_a_greeting_is_passed_over() {
    let world = World::as_user(std::path::Path::new("/bin/bash"), "");
    let user = world.deploy_user.as_ref().expect("a deploy user");
    let rc = user.home.join(".ssh/rc");
    std::fs::create_dir_all(rc.parent().unwrap()).unwrap();
    std::fs::write(&rc, "echo 'Welcome to prod-7'\n").unwrap();
    let chown = Command::new("chown").arg("-R").arg(&user.name).arg(user.home.join(".ssh")).status().unwrap();
    assert!(chown.success());
    world.setup();
    let report = world.deploy();
    assert_eq!(world.current().as_deref(), Some(report.release.as_str()));
}
