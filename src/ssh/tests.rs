//! Unit tests of `ssh` that need no server.

use std::path::Path;
use std::time::Duration;

use super::host_key::trust_commands;
use super::RemoteProcess;
use crate::config::Server;

fn server(host: &str, port: u16, user: &str) -> Server {
    Server {
        host: host.into(),
        port,
        user: user.into(),
        deploy_to: String::new(),
        roles: Vec::new(),
        alias: host.into(),
        identity: None,
        gateway: None,
    }
}

#[test]
fn trusting_a_key_writes_the_configured_file_even_behind_a_gateway() {
    let file = Path::new("/tmp/no such dir/known_hosts");
    let direct = trust_commands(&server("10.0.0.5", 2222, "deploy"), file);
    assert_eq!(
        direct,
        "`mkdir -p -m 700 '/tmp/no such dir' && ssh-keyscan -p 2222 10.0.0.5 >> '/tmp/no such dir/known_hosts'` \
         (or connect once with `ssh -o UserKnownHostsFile='/tmp/no such dir/known_hosts' -p 2222 deploy@10.0.0.5`)"
    );
    let behind = Server { gateway: Some(Box::new(server("bastion", 22, "jump"))), ..server("10.0.0.5", 22, "deploy") };
    assert_eq!(
        trust_commands(&behind, Path::new("/tmp/known_hosts")),
        "`ssh -o UserKnownHostsFile=/tmp/known_hosts -p 22 jump@bastion ssh-keyscan -p 22 10.0.0.5 >> /tmp/known_hosts` \
         (its gateway scans it)"
    );
}

#[test]
fn a_lost_remote_process_names_its_server() {
    let mut process = RemoteProcess::stopped("deploy@10.0.0.5:22");
    let lost = "cannot connect to `deploy@10.0.0.5:22`: lost the SSH channel: the process was stopped";
    assert_eq!(process.send(b"unlock\n").unwrap_err().to_string(), lost);
    assert_eq!(process.wait_for_line("ready", Duration::from_secs(1)).unwrap_err().to_string(), lost);
}
