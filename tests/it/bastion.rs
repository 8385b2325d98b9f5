//! Fleets behind bastions: every server behind a gateway is reached through one session to it
//! (one TCP connection, one login), and gateways chain (`ProxyJump a,b`). The bastions and the
//! servers behind them keep OpenSSH's stock `MaxStartups` and `MaxSessions`; the servers are
//! in a network namespace, out of the deployer's reach, their ports held here by decoys.

use std::net::TcpListener;
use std::path::PathBuf;

use crate::support::{Netns, World};
use xtask_deploy::config::{Defaults, SshConfig};
use xtask_deploy::loopback::{toml_string, LoopbackServer, Place};
use xtask_deploy::report::Collect;
use xtask_deploy::{Config, DeployOptions, Error};

/// OpenSSH's defaults, which the loopback servers raise for other tests.
fn stock(server: &LoopbackServer) {
    server.reconfigure("MaxStartups 10:30:100").unwrap();
    server.reconfigure("MaxSessions 10").unwrap();
}

/// An sshd in `netns` on its own 127.0.0.1, reachable only from inside; a decoy holds the same
/// port here, so that a direct connection would arrive there.
fn inner_server(world: &World, netns: &Netns) -> (LoopbackServer, TcpListener) {
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = decoy.local_addr().unwrap().port();
    let server = LoopbackServer::start_with(&Place { netns: Some(&netns.name), port: Some(port), ..Place::default() })
        .expect("start an sshd in the namespace");
    stock(&server);
    world.server.admit(&server).unwrap();
    (server, decoy)
}

/// The world's manifest with `servers` instead of its own server, reached through `gateway`
/// (TOML: a table, or an array of tables).
fn reach_through(world: &World, servers: &str, gateway: &str) {
    world.edit_manifest(|manifest| {
        let first = manifest.find("[[package.metadata.deploy.servers]]").unwrap();
        let ssh = manifest.find("[package.metadata.deploy.ssh]").unwrap();
        format!("{}{}\n{servers}\n{gateway}", &manifest[..first], &manifest[ssh..])
    });
    world.app.commit_all("deploy through the bastion").unwrap();
}

fn gateway_entry(table: &str, host: &str, server: &LoopbackServer, world: &World) -> String {
    format!(
        "\n[{table}]\nhost = {}\nport = {}\nuser = {}\nidentity = {}\n",
        toml_string(host),
        server.port(),
        toml_string(server.user()),
        toml_string(&world.server.identity().display().to_string()),
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

fn nothing_connected(decoy: &TcpListener) {
    decoy.set_nonblocking(true).unwrap();
    assert!(decoy.accept().is_err(), "nothing connected to a server behind the bastion directly");
}

/// `[[servers]]` entries: `server` once for each of `deploy_tos`.
fn server_entries(server: &LoopbackServer, deploy_tos: &[PathBuf]) -> String {
    deploy_tos
        .iter()
        .map(|deploy_to| {
            format!(
                "[[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {}\nuser = {}\ndeploy_to = {}\n",
                server.port(),
                toml_string(server.user()),
                toml_string(&deploy_to.display().to_string()),
            )
        })
        .collect()
}

/// `count` servers (as many `deploy_to`s of one sshd, `inner`) behind a bastion, both in a
/// network namespace with OpenSSH's stock settings; the world's manifest reaches them through
/// the bastion. Fields drop in order: the servers before their namespace.
struct Fleet {
    bastion: LoopbackServer,
    inner: LoopbackServer,
    decoy: TcpListener,
    deploy_tos: Vec<PathBuf>,
    _netns: Netns,
}

fn fleet_behind_a_bastion(world: &World, count: usize) -> Fleet {
    let netns = Netns::create();
    let bastion =
        LoopbackServer::start_with(&Place { listen: &netns.inside, netns: Some(&netns.name), ..Place::default() })
            .expect("start the bastion's sshd in the namespace");
    stock(&bastion);
    world.server.admit(&bastion).unwrap();
    let (inner, decoy) = inner_server(world, &netns);
    let deploy_tos: Vec<PathBuf> =
        (0..count).map(|index| inner.dir().join("srv").join(format!("app{index}"))).collect();
    let gateway = gateway_entry("package.metadata.deploy.gateway", &netns.inside, &bastion, world);
    reach_through(world, &server_entries(&inner, &deploy_tos), &gateway);
    assert_eq!(world.config().servers.len(), count);
    Fleet { bastion, inner, decoy, deploy_tos, _netns: netns }
}

#[test]
fn fifty_servers_behind_one_bastion_cost_it_one_connection_and_one_login() {
    let world = World::new();
    let Fleet { bastion, inner, decoy, deploy_tos, _netns } = fleet_behind_a_bastion(&world, 50);
    world.setup();
    let before = bastion.log();
    let mut options = DeployOptions::default();
    options.parallel = Some(50);
    let report = world.deploy_with(&options).expect("every server deployed through the bastion");
    for deploy_to in &deploy_tos {
        let current = std::fs::read_link(deploy_to.join("current")).unwrap();
        assert!(current.ends_with(&report.release), "{}: {}", deploy_to.display(), current.display());
    }
    let log = bastion.log();
    let during = &log[before.len()..];
    assert_eq!(count(during, "Connection from"), 1, "one TCP connection to the bastion: {during}");
    assert_eq!(count(during, "Accepted publickey"), 1, "one login at the bastion: {during}");
    assert!(count(&inner.log(), "Accepted publickey") >= 100, "setup and deploy logged in to each server");
    assert!(!inner.log().contains("MaxStartups"), "the servers dropped no connection: {}", inner.log());
    nothing_connected(&decoy);
}

/// `gateway` as a list: the first hop is a bastion reachable from here, the second one only
/// from the first (on the namespace's 127.0.0.1), the server behind both.
#[test]
fn two_hops_deploy_roll_back_and_check_and_a_wrong_host_key_names_its_hop() {
    let world = World::new();
    let netns = Netns::create();
    let outer =
        LoopbackServer::start_with(&Place { listen: &netns.inside, netns: Some(&netns.name), ..Place::default() })
            .expect("start the outer bastion");
    stock(&outer);
    world.server.admit(&outer).unwrap();
    let (second, second_decoy) = inner_server(&world, &netns);
    let (server, decoy) = inner_server(&world, &netns);
    let deploy_to = server.dir().join("srv").join("hello");
    let servers = server_entries(&server, std::slice::from_ref(&deploy_to));
    let hops = format!(
        "{}{}",
        gateway_entry("[package.metadata.deploy.gateway]", &netns.inside, &outer, &world),
        gateway_entry("[package.metadata.deploy.gateway]", "127.0.0.1", &second, &world),
    );
    reach_through(&world, &servers, &hops);

    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() { println!(\"two\"); }\n");
    let second_deploy = world.deploy();
    assert!(std::fs::read_link(deploy_to.join("current")).unwrap().ends_with(&second_deploy.release));
    let config = world.config();
    let checks = xtask_deploy::run_checks(&config, &mut Collect(Vec::new()));
    assert!(checks.ok(), "{checks:?}");
    xtask_deploy::rollback(&config, xtask_deploy::RollbackTo::Previous, &mut Collect(Vec::new())).unwrap();
    assert!(std::fs::read_link(deploy_to.join("current")).unwrap().ends_with(&first.release));
    // setup, two deploys, deploy-check, rollback: at most one login at each hop for each (a
    // command that starts while the last one's session is still open shares it).
    for (hop, log) in [("outer", outer.log()), ("second", second.log())] {
        let (logins, connections) = (count(&log, "Accepted publickey"), count(&log, "Connection from"));
        assert!((1..=5).contains(&logins) && logins == connections, "{hop}: {logins} logins: {log}");
    }
    assert!(server.log().contains("Accepted publickey"));
    nothing_connected(&decoy);
    nothing_connected(&second_decoy);

    // The same chain from `~/.ssh/config`'s `ProxyJump a,b`: the server named by an alias whose
    // hops are aliases too.
    let user = server.user();
    let ssh_config = format!(
        "Host hop-a\n  HostName {}\n  Port {}\n  User {user}\nHost hop-b\n  HostName 127.0.0.1\n  Port {}\n  \
         User {user}\nHost app\n  HostName 127.0.0.1\n  Port {}\n  User {user}\n  ProxyJump hop-a,hop-b\n",
        netns.inside,
        outer.port(),
        second.port(),
        server.port(),
    );
    let metadata = serde_json::json!({ "deploy": {
        "application": "hello",
        "deploy_to": deploy_to.display().to_string(),
        "servers": [{ "host": "app" }],
        "ssh": {
            "identity": world.server.identity().display().to_string(),
            "known_hosts": world.server.known_hosts().display().to_string(),
        },
    }});
    let defaults = Defaults { ssh_config: Some(SshConfig::parse(&ssh_config, None)), ..Defaults::from_env(None, None) };
    let manifest = world.app.manifest_path();
    let jumped = Config::from_metadata(&metadata, "package.metadata", &manifest, &defaults).unwrap();
    let jumped = Config { target_dir: world.app.dir().join("target"), ..jumped };
    let hops = jumped.servers[0].gateway.as_ref().expect("reached through hop-b");
    assert_eq!(hops.gateway.as_ref().map(|first| first.port), Some(outer.port()), "hop-b through hop-a");
    world.commit("src/main.rs", "fn main() { println!(\"three\"); }\n");
    let third = xtask_deploy::deploy(&jumped, &DeployOptions::default(), &mut Collect(Vec::new())).unwrap();
    assert!(std::fs::read_link(deploy_to.join("current")).unwrap().ends_with(&third.release));
    assert!(xtask_deploy::run_checks(&jumped, &mut Collect(Vec::new())).ok());

    // A wrong host key at either hop: refused, naming that hop.
    let known_hosts = world.server.known_hosts();
    let trusted = std::fs::read_to_string(&known_hosts).unwrap();
    let other_key = std::fs::read_to_string(world.server.dir().join("host_ed25519.pub")).unwrap();
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    for (hop, host, port) in [("outer", netns.inside.as_str(), outer.port()), ("second", "127.0.0.1", second.port())] {
        let entry = format!("[{host}]:{port} ");
        let lied: String = trusted
            .lines()
            .map(|line| match line.starts_with(&entry) {
                true => format!("{entry}{}\n", other_key.join(" ")),
                false => format!("{line}\n"),
            })
            .collect();
        assert_ne!(lied, trusted, "{hop} is in known_hosts");
        std::fs::write(&known_hosts, lied).unwrap();
        let err = world.try_deploy().unwrap_err();
        let named = format!("@{host}:{port}");
        match &err {
            Error::HostKey { message, .. } => {
                assert!(
                    message.contains(&format!("cannot reach the gateway {}{named}", outer.user())),
                    "{hop}: {message}"
                );
                assert!(message.contains("host key"), "{hop}: {message}");
            }
            other => panic!("{hop}: expected a host key error, got {other}"),
        }
        std::fs::write(&known_hosts, &trusted).unwrap();
    }
    assert!(world.try_deploy().is_ok(), "with the right keys again, the deploy goes through");
}

/// A server that drops every connection past the first unauthenticated one (`MaxStartups
/// 1:100:1`): the deploy tries each dropped start again, starts fewer at once through the
/// bastion, and every server is deployed.
#[test]
fn servers_that_drop_connections_past_max_startups_are_tried_again_and_all_deployed() {
    let world = World::new();
    let Fleet { inner, deploy_tos, .. } = &fleet_behind_a_bastion(&world, 20);
    inner.reconfigure("MaxStartups 1:100:1").unwrap();
    world.setup();
    let mut options = DeployOptions::default();
    options.parallel = Some(20);
    let report = world.deploy_with(&options).expect("every server deployed");
    for deploy_to in deploy_tos {
        assert!(std::fs::read_link(deploy_to.join("current")).unwrap().ends_with(&report.release));
    }
    let drops = count(&inner.log(), "past MaxStartups");
    assert!(drops > 0, "the server dropped connections, and the deploy went on: {}", inner.log());
}

/// A gateway that accepts connections and then says nothing (a hung bastion): the servers
/// behind it wait for one login there, not one each; every one fails naming the gateway, within
/// about one `timeouts.connect`, not one per server.
#[test]
fn servers_behind_a_silent_gateway_fail_together_within_one_connect_timeout() {
    let world = World::with_config("[package.metadata.deploy.timeouts]\nconnect = 2\n");
    let bastion = LoopbackServer::start().unwrap();
    let relay = xtask_deploy::relay::Relay::start(bastion.port(), std::time::Duration::ZERO).unwrap();
    relay.freeze();
    let deploy_tos: Vec<PathBuf> =
        (0..10).map(|index| world.server.dir().join("srv").join(format!("app{index}"))).collect();
    let servers = server_entries(&world.server, &deploy_tos);
    let gateway = format!(
        "\n[package.metadata.deploy.gateway]\nhost = \"127.0.0.1\"\nport = {}\nuser = {}\n",
        relay.port(),
        toml_string(bastion.user())
    );
    reach_through(&world, &servers, &gateway);
    let started = std::time::Instant::now();
    let mut events = Collect(Vec::new());
    let err = xtask_deploy::setup(&world.config(), &mut events).unwrap_err();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "10 servers behind a silent gateway took {took:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{}", relay.port())), "{err}");
    assert_eq!(relay.connections(), 1, "one login tried at the gateway, for all ten");
    relay.thaw();
}
