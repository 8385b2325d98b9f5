//! The bastion rows. First what a one-line deploy sends over the whole connection (counted by a
//! relay outside the tool) beside OpenSSH's `ssh true`, and what the first deploy after a new
//! version of the tool sends (the server's kept scripts replaced). Then fleets of 1, 10 and 50
//! servers behind one bastion (OpenSSH's stock `MaxStartups` and `MaxSessions` on it and on the
//! servers), at no delay and at the largest round trip asked for to the bastion: the bastion's
//! TCP connections and logins, the deployer's CPU per server and its peak RSS.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Server};
use crate::loopback::LoopbackServer;
use crate::relay::Relay;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::Error;

use super::timing::{relay_to, Spread};
use super::{bench_config, commit_change, line, ms, server_entry, Bench};

/// How many servers stand behind the bastion in each row.
const FLEETS: [usize; 3] = [1, 10, 50];

pub(super) fn run(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    wire(bench, out)?;
    line(out, "")?;
    fleets(bench, out)
}

/// OpenSSH's defaults, which the loopback servers raise for other uses.
fn stock(server: &LoopbackServer) -> Result<(), Error> {
    for setting in ["MaxStartups 10:30:100", "MaxSessions 10"] {
        server.reconfigure(setting).map_err(|err| Error::local(format!("cannot reconfigure sshd: {err}")))?;
    }
    Ok(())
}

fn started(err: std::io::Error) -> Error {
    Error::local(format!("cannot start a loopback sshd: {err}"))
}

/// Bytes up and down over the whole connection: OpenSSH's `ssh true`, a one-line deploy, and
/// the first deploy after the server's kept scripts are of another version.
fn wire(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let server = bench.server;
    let relay = relay_to(server, Duration::ZERO, server)?;
    let mut entry = server_entry(server, "wire");
    entry["port"] = relay.port().into();
    let config = bench_config(&bench.clone_dir, &[entry], server, &server.known_hosts())?;
    setup(&config, &mut Quiet)?;
    deploy(&config, &DeployOptions::default(), &mut Quiet)?;
    let rounds = bench.options.rounds.clamp(1, 5);
    let mut rows: Vec<(String, Vec<Bytes>)> = Vec::new();
    let has_ssh = Command::new("ssh").arg("-V").stderr(Stdio::null()).status().is_ok();
    if has_ssh {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            relay.reset();
            ssh_true(server, &relay)?;
            samples.push((relay.bytes_to_target(), relay.bytes_from_target(), 0));
        }
        rows.push(("OpenSSH's `ssh true` (no deploy)".to_string(), samples));
    }
    let kept = std::path::Path::new(&config.servers[0].deploy_to).join(crate::shell::kept::KEPT_DIR);
    for (label, replaced) in [("one-line deploy", false), ("first deploy after a new version", true)] {
        let mut samples = Vec::new();
        for round in 0..rounds {
            commit_change(&bench.sh, &bench.clone_dir, &format!("wire round {round}"))?;
            if replaced {
                // What an older version left: another file, and not ours.
                let _ = std::fs::remove_dir_all(&kept);
                std::fs::create_dir_all(&kept).map_err(|err| Error::local(err.to_string()))?;
                std::fs::write(kept.join("0123456789abcdef0123456789abcdef01234567"), "older")
                    .map_err(|err| Error::local(err.to_string()))?;
            }
            relay.reset();
            let report = deploy(&config, &DeployOptions::default(), &mut Quiet)?;
            samples.push((relay.bytes_to_target(), relay.bytes_from_target(), report.servers[0].bytes_sent));
        }
        rows.push((label.to_string(), samples));
    }
    line(
        out,
        format!(
            "what travels over the whole SSH connection, counted by a relay (median of {rounds}; the server \
             keeps our scripts, {} bytes, and is sent them once per version of the tool):",
            crate::shell::kept::kept().text.len()
        ),
    )?;
    line(out, format!("  {:<36} {:>10} {:>10} {:>10}", "", "up", "down", "pushed"))?;
    let median = |values: Vec<u64>| Spread::of(values.into_iter().map(|value| value as f64)).median;
    let ssh_up = rows.first().filter(|_| has_ssh).map(|(_, samples)| median(samples.iter().map(|s| s.0).collect()));
    for (label, samples) in &rows {
        let (up, down, pushed) = (
            median(samples.iter().map(|sample| sample.0).collect()),
            median(samples.iter().map(|sample| sample.1).collect()),
            median(samples.iter().map(|sample| sample.2).collect()),
        );
        let beyond = match ssh_up {
            Some(ssh) if pushed > 0.0 => format!("   ssh true + pushed + {:.0}", up - ssh - pushed),
            _ => String::new(),
        };
        line(out, format!("  {label:<36} {up:>10.0} {down:>10.0} {pushed:>10.0}{beyond}"))?;
    }
    if !has_ssh {
        line(out, "  OpenSSH's `ssh true`: not measured, `ssh` is not installed (apt-get install openssh-client)")?;
    }
    Ok(())
}

/// Bytes up, down, and pushed (by the push alone), of one sample.
type Bytes = (u64, u64, u64);

/// One `ssh true` to `server` through `relay`.
fn ssh_true(server: &LoopbackServer, relay: &Relay) -> Result<(), Error> {
    let status =
        server.ssh_true(relay.port()).status().map_err(|err| Error::local(format!("cannot run `ssh`: {err}")))?;
    match status.success() {
        true => Ok(()),
        false => Err(Error::local(format!("`ssh ... true` through the relay failed ({status})"))),
    }
}

/// One timed fleet deploy through the bastion.
struct FleetSample {
    wall: f64,
    connections: u64,
    logins: usize,
    cpu_ms: f64,
    peak_rss: u64,
}

/// Fleets behind one bastion (a relay in front of it adds the round trip), every server on one
/// more loopback sshd, each in a `deploy_to` of its own.
fn fleets(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let first = bench.server;
    let bastion = LoopbackServer::start().map_err(started)?;
    let inner = LoopbackServer::start().map_err(started)?;
    for server in [&bastion, &inner] {
        stock(server)?;
        first.admit(server).map_err(|err| Error::local(format!("cannot write the fleet's keys: {err}")))?;
    }
    let far = bench.options.rtts.iter().copied().max().unwrap_or_default();
    let rtts = if far.is_zero() { vec![Duration::ZERO] } else { vec![Duration::ZERO, far] };
    let rounds = bench.options.rounds.clamp(1, 3);
    line(
        out,
        format!(
            "fleets behind one bastion (OpenSSH's stock MaxStartups 10:30:100 and MaxSessions 10 there and on the \
             servers; --parallel = servers; median of {rounds} incremental deploys):"
        ),
    )?;
    line(
        out,
        format!(
            "  {:>7} {:>13} {:>26} {:>16} {:>14} {:>20} {:>14}",
            "servers",
            "bastion RTT",
            "median wall ms (min-max)",
            "TCP connections",
            "bastion logins",
            "deployer CPU/server",
            "peak RSS"
        ),
    )?;
    for rtt in rtts {
        let relay = relay_to(&bastion, rtt, first)?;
        for size in FLEETS {
            let entries: Vec<serde_json::Value> = (0..size)
                .map(|index| server_entry(&inner, &format!("bastion-{}ms-{size}-{index}", rtt.as_millis())))
                .collect();
            let mut config = bench_config(&bench.clone_dir, &entries, first, &first.known_hosts())?;
            let gateway = Server {
                host: "127.0.0.1".to_string(),
                port: relay.port(),
                deploy_to: String::new(),
                gateway: None,
                ..config.servers[0].clone()
            };
            for server in &mut config.servers {
                server.gateway = Some(Box::new(gateway.clone()));
            }
            let options = DeployOptions { parallel: Some(size), ..DeployOptions::default() };
            setup(&config, &mut Quiet)?;
            deploy(&config, &options, &mut Quiet)?;
            let mut samples = Vec::new();
            for round in 0..rounds {
                commit_change(&bench.sh, &bench.clone_dir, &format!("bastion round {round}"))?;
                samples.push(fleet_deploy(&config, &options, &relay, &bastion)?);
            }
            let walls = Spread::of(samples.iter().map(|sample| sample.wall));
            let median = |value: fn(&FleetSample) -> f64| Spread::of(samples.iter().map(value)).median;
            line(
                out,
                format!(
                    "  {size:>7} {:>13} {walls:>26} {:>16.0} {:>14.0} {:>17.1} ms {:>11.0} MB",
                    format!("{} ms", rtt.as_millis()),
                    median(|sample| sample.connections as f64),
                    median(|sample| sample.logins as f64),
                    median(|sample| sample.cpu_ms) / size as f64,
                    median(|sample| sample.peak_rss as f64) / 1e6,
                ),
            )?;
        }
    }
    line(
        out,
        "  deployer CPU: this process and the processes it started (git), user + system, less the relay's \
         threads (in this process); peak RSS: this process's resident set, sampled every 5 ms during the deploy",
    )
}

/// Deploys `config` once, measuring what the bastion and the deployer saw.
fn fleet_deploy(
    config: &Config,
    options: &DeployOptions,
    relay: &Relay,
    bastion: &LoopbackServer,
) -> Result<FleetSample, Error> {
    relay.reset();
    let logins = || bastion.log().matches("Accepted publickey").count();
    let logins_before = logins();
    let cpu_before = cpu_ms();
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss()));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let report = deploy(config, options, &mut Quiet);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let report = report?;
    // The relay runs in this process: its CPU is not the deployer's.
    relay.settle(Duration::from_secs(2));
    let cpu = cpu_ms() - cpu_before - relay.cpu().as_secs_f64() * 1000.0;
    Ok(FleetSample {
        wall: ms(report.elapsed),
        connections: relay.connections(),
        logins: logins() - logins_before,
        cpu_ms: cpu,
        peak_rss: peak.load(Ordering::Relaxed),
    })
}

/// The CPU time of this process and of its children that ended, in milliseconds.
fn cpu_ms() -> f64 {
    let used = |who| {
        // SAFETY: `usage` is a valid, writable rusage for the call; `who` is a valid target.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let time = |tv: libc::timeval| tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0;
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN)
}

/// This process's resident set in bytes (0 where `/proc` does not say).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
