//! The systemd host harness itself: given a Debian 12 container booted with systemd, over real
//! SSH the deploy user's services run, a user socket activates its service, and sudo lets the
//! deploy user restart the one system service it is allowed to. A test that cannot boot the
//! host fails (`bash .ci/install-deps` makes the root filesystem it needs).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use xtask_deploy::container::SystemdHost;
use xtask_deploy::loopback::LoopbackServer;

fn boot() -> SystemdHost {
    let started = Instant::now();
    let host = SystemdHost::boot().unwrap_or_else(|err| panic!("cannot boot the systemd host: {err}"));
    eprintln!("systemd host on port {} booted in {:?}", host.port(), started.elapsed());
    host
}

/// Runs `command` on `host` over SSH with the `ssh` client, as its deploy user.
fn ssh(host: &SystemdHost, command: &str) -> Output {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"])
        .arg("-i")
        .arg(host.identity())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", host.known_hosts().display()))
        .args(["-p", &host.port().to_string(), &format!("{}@127.0.0.1", host.user()), command])
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed: {}{}", stdout(output), String::from_utf8_lossy(&output.stderr));
}

#[test]
fn user_services_run_over_ssh_and_a_socket_on_127_0_0_1_activates_its_service() {
    let host = boot();
    assert_eq!(stdout(&ssh(&host, "systemctl --user is-system-running")), "running");
    let hostname = std::fs::read_to_string(host.root_dir().join("etc/hostname")).unwrap();
    assert_eq!(stdout(&ssh(&host, "hostname")), hostname.trim());

    // A socket on a port of this machine's 127.0.0.1 (the container shares its network), and a
    // service that takes the listening socket over (not one per connection): a proxy to the
    // container's own sshd.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let units = format!(
        "mkdir -p ~/.config/systemd/user && cd ~/.config/systemd/user && \
         printf '[Socket]\\nListenStream=127.0.0.1:{port}\\n[Install]\\nWantedBy=sockets.target\\n' > fwd.socket && \
         printf '[Service]\\nExecStart=/usr/lib/systemd/systemd-socket-proxyd 127.0.0.1:{ssh}\\n' > fwd.service && \
         systemctl --user daemon-reload && systemctl --user enable --now fwd.socket && \
         {{ systemctl --user is-active fwd.service; true; }}",
        ssh = host.port()
    );
    let started = ssh(&host, &units);
    assert_ok(&started, "starting the user socket");
    assert_eq!(stdout(&started), "inactive", "the service waits for a connection");

    let mut banner = [0u8; 8];
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    connection.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let state =
        host.user_sh("systemctl --user is-active fwd.service; journalctl --user -u fwd.service -q -n 5").unwrap();
    assert!(stdout(&state).starts_with("active"), "{}", stdout(&state));

    // Dropping the host leaves nothing running and removes its copy.
    let root = host.root_dir().to_path_buf();
    drop(host);
    assert!(!root.exists(), "the copy `{}` is still there", root.display());
    assert_eq!(LoopbackServer::processes_mentioning(&root.display().to_string()), vec![]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the socket outlived the host");
}

#[test]
fn sudo_lets_the_deploy_user_restart_the_listed_service_and_no_other() {
    let host = boot();
    let units = "for unit in app other; do \
                   printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/$unit.service; \
                 done; systemctl daemon-reload && systemctl start app.service other.service";
    assert_ok(&host.root_sh(units).unwrap(), "starting the system services");
    host.allow_sudo("50-app", "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart app.service").unwrap();
    assert!(
        host.allow_sudo("51-broken", "deploy ALL=(root) NOPASSWD /usr/bin/true").is_err(),
        "visudo -c passed a bad line"
    );
    assert!(!host.root_dir().join("etc/sudoers.d/51-broken").exists());

    let main_pid = || stdout(&host.root_sh("systemctl show -p MainPID --value app.service").unwrap());
    let before = main_pid();
    assert_ok(&ssh(&host, "sudo -n /usr/bin/systemctl restart app.service"), "the allowed restart");
    let after = main_pid();
    assert!(before != after && after != "0", "app.service was not restarted: MainPID {before} then {after}");

    let started = Instant::now();
    let refused = ssh(&host, "sudo -n /usr/bin/systemctl restart other.service");
    assert!(!refused.status.success(), "sudo restarted a service it does not list");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("password is required"), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "sudo -n took {:?} to refuse", started.elapsed());
}
