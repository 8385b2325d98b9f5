//! The round-trip rows: the benchmark's server, reached through a relay that adds half of each
//! round-trip time asked for (`--rtt-ms`) in each direction, an incremental deploy timed per row
//! beside OpenSSH's `ssh ... true` over the same relay (a login and one command: the floor of
//! any deploy over SSH at that distance), with OpenSSH's default key exchange and with the one
//! the deploy makes (`curve25519-sha256`: OpenSSH 9's default, `sntrup761x25519-sha512`, costs
//! the client 100-200 ms of CPU here, which the deploy does not pay).
//!
//! Round trips per deploy, two ways: the relay's turns (what it counted, see `crate::relay`: an
//! upper bound of the round trips the client waited for) and the derived figure (wall at R ms
//! minus wall at 0 ms) / R, the round trips on the critical path as the wall clock sees them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::relay::Relay;
use crate::Error;

use super::timing::{place_label, relay_to, time_side_by_side, timed, Sample, Spread, Target};
use super::{bench_config, line, server_entry, Bench};

/// Times deploys and `ssh true` at each round-trip time and prints the table.
pub(super) fn run(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let server = bench.server;
    let rtts = &bench.options.rtts;
    let targets = rtts
        .iter()
        .enumerate()
        .map(|(index, &rtt)| {
            let relay = relay_to(server, rtt, server)?;
            // Named by index too: a round-trip time given twice still gets a deploy_to per row.
            let mut entry = server_entry(server, &format!("distance-{index}-{}ms", rtt.as_millis()));
            entry["port"] = relay.port().into();
            let config = bench_config(&bench.clone_dir, &[entry], server, &server.known_hosts())?;
            Ok(Target { config, relays: vec![relay] })
        })
        .collect::<Result<Vec<Target>, Error>>()?;
    let rounds = bench.options.rounds.max(1);
    let deploys = time_side_by_side(bench, &targets, rounds, "distance")?;
    let has_ssh = Command::new("ssh").arg("-V").stderr(Stdio::null()).status().is_ok();
    // OpenSSH's default key exchange, and the one the deploy's libssh2 makes: OpenSSH 9's
    // default (sntrup761x25519) costs the client 100-200 ms of CPU on a small machine.
    let kexes: Vec<(String, Option<&str>)> = if has_ssh {
        vec![
            (format!("{} (default)", default_kex()), None),
            (LIKE_THE_DEPLOY.to_string() + " (as the deploy)", Some(LIKE_THE_DEPLOY)),
        ]
    } else {
        Vec::new()
    };
    // Per RTT, per key exchange.
    let mut logins: Vec<Vec<Vec<Sample>>> =
        targets.iter().map(|_| kexes.iter().map(|_| Vec::new()).collect()).collect();
    for _ in 0..rounds {
        for (target, logins) in targets.iter().zip(&mut logins) {
            for ((_, kex), logins) in kexes.iter().zip(logins) {
                logins.push(ssh_true(bench, &target.relays[0], *kex)?);
            }
        }
    }

    line(
        out,
        format!(
            "round trips: the server behind a relay that adds RTT/2 each way; as {}, deploy_to in {}; {rounds} \
             incremental deploys per row, one small commit each:",
            server.user(),
            place_label(server.dir()),
        ),
    )?;
    line(out, format!("  {:>6} {:>22} {:>6} {:>6} {:>8}", "RTT", "deploy ms (min-max)", "turns", "conns", "derived"))?;
    let zero = rtts.iter().position(|rtt| rtt.is_zero());
    // (median at `index` - median at 0 ms) / RTT, where the list has 0 ms.
    let derived = |medians: &[f64], index: usize| match zero {
        Some(zero) if !rtts[index].is_zero() => {
            format!("{:.1}", (medians[index] - medians[zero]) / (rtts[index].as_secs_f64() * 1000.0))
        }
        _ => "-".to_string(),
    };
    let medians = |samples: Vec<&Vec<Sample>>| -> Vec<f64> {
        samples.into_iter().map(|samples| Spread::of_walls(samples).median).collect()
    };
    let deploy_medians = medians(deploys.iter().collect());
    let turns = |samples: &[Sample]| Spread::of(samples.iter().map(|sample| sample.turns as f64)).median;
    for (index, rtt) in rtts.iter().enumerate() {
        let deploy = Spread::of_walls(&deploys[index]);
        let connections = Spread::of(deploys[index].iter().map(|sample| sample.connections as f64)).median;
        line(
            out,
            format!(
                "  {:>6} {deploy:>22} {:>6.0} {connections:>6.0} {:>8}",
                format!("{} ms", rtt.as_millis()),
                turns(&deploys[index]),
                derived(&deploy_medians, index),
            ),
        )?;
    }
    if has_ssh {
        line(out, format!("  OpenSSH's `ssh -F /dev/null ... true` over the same relays, {rounds} per row:"))?;
        line(
            out,
            format!(
                "  {:>6} {:<42} {:>18} {:>6} {:>8} {:>14}",
                "RTT", "key exchange", "ms (min-max)", "turns", "derived", "deploy / this"
            ),
        )?;
        let login_medians: Vec<Vec<f64>> = (0..kexes.len())
            .map(|kex_index| medians(logins.iter().map(|logins| &logins[kex_index]).collect()))
            .collect();
        for (index, rtt) in rtts.iter().enumerate() {
            let deploy = deploy_medians[index];
            for (kex_index, (kex, _)) in kexes.iter().enumerate() {
                let samples = &logins[index][kex_index];
                let login = Spread::of_walls(samples);
                line(
                    out,
                    format!(
                        "  {:>6} {kex:<42} {login:>18} {:>6.0} {:>8} {:>14.2}",
                        format!("{} ms", rtt.as_millis()),
                        turns(samples),
                        derived(&login_medians[kex_index], index),
                        deploy / login.median.max(0.001),
                    ),
                )?;
            }
        }
    } else {
        line(out, "  OpenSSH's `ssh true`: not measured, `ssh` is not installed (apt-get install openssh-client)")?;
    }
    line(
        out,
        "  turns: counted by the relay (median): its first chunk from the server after each chunk of the client's \
         it passed on, an upper bound of the round trips the client waited for; conns: TCP connections, each one \
         more round trip on a real network (the relay, on 127.0.0.1, does not delay connecting)",
    )?;
    line(
        out,
        "  derived: (median wall at RTT - median wall at 0 ms) / RTT, the round trips on the critical path as the \
         wall clock sees them",
    )
}

/// The key exchange the deploy's SSH library (libssh2) makes with OpenSSH.
const LIKE_THE_DEPLOY: &str = "curve25519-sha256";

/// The first key exchange OpenSSH's client offers (`ssh -G`), which an OpenSSH server takes.
fn default_kex() -> String {
    let output = Command::new("ssh").args(["-F", "/dev/null", "-G", "127.0.0.1"]).stdin(Stdio::null()).output();
    let text = output.map(|output| String::from_utf8_lossy(&output.stdout).to_string()).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("kexalgorithms "))
        .and_then(|list| list.split(',').next())
        .unwrap_or("OpenSSH's")
        .to_string()
}

/// One `ssh true` to the benchmark's server through `relay`, with the deploy's key and
/// known_hosts and no `~/.ssh/config`, with the key exchange `kex` if given; its wall time and
/// what the relay counted.
fn ssh_true(bench: &Bench, relay: &Relay, kex: Option<&str>) -> Result<Sample, Error> {
    let server = bench.server;
    relay.reset();
    let mut command = Command::new("ssh");
    command
        .args(["-F", "/dev/null", "-p", &relay.port().to_string(), "-i"])
        .arg(server.identity())
        .arg(format!("-oUserKnownHostsFile={}", server.known_hosts().display()))
        .args(["-oStrictHostKeyChecking=yes", "-oBatchMode=yes", "-oLogLevel=ERROR"])
        .args(kex.map(|kex| format!("-oKexAlgorithms={kex}")))
        .arg(format!("{}@{}", server.user(), server.listen()))
        .arg("true")
        .stdin(Stdio::null());
    let (wall, output) = timed(|| command.output());
    let output = output.map_err(|err| Error::local(format!("cannot run `ssh`: {err}")))?;
    if !output.status.success() {
        return Err(Error::local(format!(
            "`ssh ... true` through the relay failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(Sample { wall, turns: relay.turns(), connections: relay.connections(), machine: None })
}
