//! The fleet rows: incremental deploys to several loopback servers at once. First fleets of 1, 4
//! and 8 servers reached directly (what the machine's CPU allows), then fleets of 1 and 8 with
//! each server behind its own relay at the largest round-trip time asked for (what a fleet far
//! away costs beyond one server). One key and one known_hosts file reach every server.

use std::io::Write;
use std::time::Duration;

use crate::config::Config;
use crate::loopback::LoopbackServer;
use crate::relay::Relay;
use crate::Error;

use super::timing::{relay_to, time_side_by_side, Machine, Sample, Spread, Target};
use super::{bench_config, line, server_entry, Bench};

/// How many servers the fleet rows deploy to at once, near and far.
const FLEETS: [usize; 4] = [1, 2, 4, 8];

/// Starts the other servers and prints both tables.
pub(super) fn run(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let first = bench.server;
    let started = |err: std::io::Error| Error::local(format!("cannot start a loopback sshd: {err}"));
    let others: Vec<LoopbackServer> =
        (1..FLEETS[FLEETS.len() - 1]).map(|_| LoopbackServer::start().map_err(started)).collect::<Result<_, _>>()?;
    // One key and one known_hosts file for all: the first server's key is let in everywhere.
    for server in &others {
        first.admit(server).map_err(|err| Error::local(format!("cannot write the fleet's keys: {err}")))?;
    }
    let servers: Vec<&LoopbackServer> = std::iter::once(first).chain(&others).collect();
    let near = near(bench, &servers, out)?;
    let rtt = bench.options.rtts.iter().copied().max().unwrap_or_default();
    far(bench, &servers, rtt, &near, out)
}

/// The CPU time the whole machine spent during the samples (median), when it is known.
fn machine_cpu(samples: &[Sample]) -> Option<f64> {
    let machine: Vec<&Machine> = samples.iter().filter_map(|sample| sample.machine.as_ref()).collect();
    (!machine.is_empty()).then(|| Spread::of(machine.iter().map(|machine| machine.cpu_ms)).median)
}

/// Fleets of 1, 2, 4 and 8 servers reached directly: the median wall time, and what the machine
/// did meanwhile. Returns the median wall times.
fn near(bench: &Bench, servers: &[&LoopbackServer], out: &mut dyn Write) -> Result<Vec<f64>, Error> {
    let targets = FLEETS
        .iter()
        .map(|&size| {
            let entries: Vec<serde_json::Value> =
                servers[..size].iter().map(|server| server_entry(server, &format!("fleet-{size}"))).collect();
            let config = bench_config(&bench.clone_dir, &entries, servers[0], &servers[0].known_hosts())?;
            Ok(Target { config, relays: Vec::new() })
        })
        .collect::<Result<Vec<Target>, Error>>()?;
    let rounds = bench.options.rounds.clamp(1, 5);
    let samples = time_side_by_side(bench, &targets, rounds, "fleet")?;
    line(
        out,
        format!(
            "parallel deploys to several loopback servers (no delay; {rounds} incremental deploys each, one \
             small commit before each round):"
        ),
    )?;
    line(
        out,
        format!(
            "  {:>7} {:>26} {:>12} {:>22} {:>28}",
            "servers", "median wall ms (min-max)", "x 1 server", "machine CPU ms (all)", "processes started / server"
        ),
    )?;
    let one = Spread::of_walls(&samples[0]).median;
    for (size, samples) in FLEETS.iter().zip(&samples) {
        let wall = Spread::of_walls(samples);
        let machine: Vec<&Machine> = samples.iter().filter_map(|sample| sample.machine.as_ref()).collect();
        let cpu = machine_cpu(samples).map_or("-".to_string(), |cpu| format!("{cpu:.0}"));
        let processes = match machine.is_empty() {
            true => "-".to_string(),
            false => {
                format!("{:.0}", Spread::of(machine.iter().map(|machine| machine.processes / *size as f64)).median)
            }
        };
        line(out, format!("  {size:>7} {wall:>26} {:>12.2} {cpu:>22} {processes:>28}", wall.median / one.max(1.0)))?;
    }
    let medians = samples.iter().map(|samples| Spread::of_walls(samples).median).collect();
    line(
        out,
        format!(
            "  (the servers, their sshds and the deployer share this machine's {} cores: with the CPU busy, a \
             fleet's wall time is bounded below by its CPU time / cores)",
            std::thread::available_parallelism().map_or(1, |cores| cores.get())
        ),
    )?;
    Ok(medians)
}

/// Fleets of 1, 2, 4 and 8 servers, each server behind its own relay adding half of `rtt` each
/// way; beside each, what the same fleet took without delay (`near`, its median wall times)
/// plus what the delay added to one server: what the fleet would take if the delay cost each
/// server what it costs one, and nothing else.
fn far(
    bench: &Bench,
    servers: &[&LoopbackServer],
    rtt: Duration,
    near: &[f64],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let first = servers[0];
    let mut targets = Vec::new();
    for size in FLEETS {
        // Each fleet has relays of its own, so that each counts its own fleet's turns.
        let own: Vec<Relay> =
            servers[..size].iter().map(|server| relay_to(server, rtt, first)).collect::<Result<_, _>>()?;
        let entries: Vec<serde_json::Value> = servers[..size]
            .iter()
            .zip(&own)
            .map(|(server, relay)| {
                let mut entry = server_entry(server, &format!("fleet-far-{size}"));
                entry["port"] = relay.port().into();
                entry
            })
            .collect();
        let config: Config = bench_config(&bench.clone_dir, &entries, first, &first.known_hosts())?;
        targets.push(Target { config, relays: own });
    }
    let rounds = bench.options.rounds.clamp(1, 5);
    let samples: Vec<Vec<Sample>> = time_side_by_side(bench, &targets, rounds, "far fleet")?;
    line(
        out,
        format!(
            "fleets at a distance: each server behind its own relay, {} ms round trip ({} ms added each way); \
             {rounds} incremental deploys each:",
            rtt.as_millis(),
            (rtt / 2).as_millis()
        ),
    )?;
    line(
        out,
        format!(
            "  {:>7} {:>26} {:>12} {:>16} {:>22} {:>30}",
            "servers",
            "median wall ms (min-max)",
            "x 1 server",
            "turns / server",
            "machine CPU ms (all)",
            "no delay + one server's delay"
        ),
    )?;
    let one = Spread::of_walls(&samples[0]).median;
    let added = one - near[0];
    for ((size, samples), near) in FLEETS.iter().zip(&samples).zip(near) {
        let wall = Spread::of_walls(samples);
        let turns = Spread::of(samples.iter().map(|sample| sample.turns as f64 / *size as f64)).median;
        let cpu = machine_cpu(samples).map_or("-".to_string(), |cpu| format!("{cpu:.0}"));
        let sum = format!("{:.0} ({:.2}x)", near + added, wall.median / (near + added).max(1.0));
        line(
            out,
            format!("  {size:>7} {wall:>26} {:>12.2} {turns:>16.0} {cpu:>22} {sum:>30}", wall.median / one.max(1.0)),
        )?;
    }
    line(
        out,
        format!(
            "  (no delay + one server's delay: this fleet's median without delay, above, plus the {added:.0} ms the \
             delay added to one server; the measured time over it, in brackets. Near 1.00x, a far fleet costs its \
             round trips once, as one server does, and the rest is the machine's CPU, shared here by every \
             server and the deployer)"
        ),
    )
}
