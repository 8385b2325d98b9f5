//! Deploys timed side by side, for the sections that compare conditions: each [`Target`] is a
//! config (its servers, where they keep their files, as whom) and the relays in front of its
//! servers. All targets are set up and deployed once (untimed), then each round makes one
//! small commit and deploys it to every target in turn, so every timed deploy sends the same
//! kind of change and a load on the machine falls on every row alike.
//!
//! Also the figures' shape ([`Spread`]: the median and the range) and the label of a place
//! with its filesystem type (from `/proc/mounts`).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::loopback::LoopbackServer;
use crate::relay::Relay;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::Error;

use super::{commit_change, ms, Bench};

/// What one row deploys to.
pub(super) struct Target {
    pub config: Config,
    /// The relays in front of the config's servers: their turns are summed per deploy.
    pub relays: Vec<Relay>,
}

/// One timed deploy to one target.
pub(super) struct Sample {
    /// The deploy's wall time, in milliseconds.
    pub wall: f64,
    /// Turns counted by the target's relays (see `crate::relay`).
    pub turns: u64,
    /// Connections the relays accepted.
    pub connections: u64,
    /// What the whole machine did meanwhile (Linux only).
    pub machine: Option<Machine>,
}

/// Sets up each target and deploys it once, then `rounds` times commits one small change (its
/// message names `tag`) and deploys it to every target in turn. Returns each target's samples.
pub(super) fn time_side_by_side(
    bench: &Bench,
    targets: &[Target],
    rounds: usize,
    tag: &str,
) -> Result<Vec<Vec<Sample>>, Error> {
    for target in targets {
        setup(&target.config, &mut Quiet)?;
        deploy(&target.config, &DeployOptions::default(), &mut Quiet)?;
    }
    let mut samples: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        commit_change(&bench.sh, &bench.clone_dir, &format!("{tag} round {round}"))?;
        for (target, samples) in targets.iter().zip(&mut samples) {
            target.relays.iter().for_each(Relay::reset);
            let before = Machine::now();
            let elapsed = deploy(&target.config, &DeployOptions::default(), &mut Quiet)?.elapsed;
            let machine = Machine::now().zip(before).map(|(after, before)| after.since(&before));
            samples.push(Sample {
                wall: ms(elapsed),
                turns: target.relays.iter().map(Relay::turns).sum(),
                connections: target.relays.iter().map(Relay::connections).sum(),
                machine,
            });
        }
    }
    Ok(samples)
}

/// Starts a relay in front of `server` that adds half of `rtt` each way, and makes `trusting`'s
/// known_hosts file trust `server`'s host key at the relay's port.
pub(super) fn relay_to(server: &LoopbackServer, rtt: Duration, trusting: &LoopbackServer) -> Result<Relay, Error> {
    let relay = Relay::start(server.port(), rtt / 2)
        .map_err(|err| Error::local(format!("cannot start a relay in front of the loopback sshd: {err}")))?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|err| Error::local(format!("cannot read `{}`: {err}", path.display())))
    };
    let own = read(&server.known_hosts())?;
    let direct = format!("[{}]:{} ", server.listen(), server.port());
    let key = own
        .lines()
        .find_map(|line| line.strip_prefix(&direct))
        .ok_or_else(|| Error::local(format!("no `{direct}` line in `{}`", server.known_hosts().display())))?;
    let mut trusted = read(&trusting.known_hosts())?;
    trusted.push_str(&format!("[{}]:{} {key}\n", server.listen(), relay.port()));
    std::fs::write(trusting.known_hosts(), trusted)
        .map_err(|err| Error::local(format!("cannot write `{}`: {err}", trusting.known_hosts().display())))?;
    Ok(relay)
}

/// The median and the range of some measurements.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zero when there are none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return Spread { median: 0.0, min: 0.0, max: 0.0 };
        }
        values.sort_by(|a, b| a.total_cmp(b));
        Spread { median: super::median(values.clone()), min: values[0], max: values[values.len() - 1] }
    }

    /// The spread of the samples' wall times.
    pub fn of_walls(samples: &[Sample]) -> Spread {
        Spread::of(samples.iter().map(|sample| sample.wall))
    }
}

/// `median (min-max)`, whole numbers: `1234 (1190-1302)`.
impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:.0} ({:.0}-{:.0})", self.median, self.min, self.max);
        f.pad(&text)
    }
}

/// `path (filesystem type)`, e.g. `/dev/shm (tmpfs)`.
pub(super) fn place_label(path: &Path) -> String {
    format!("{} ({})", path.display(), filesystem(path).unwrap_or_else(|| "filesystem unknown".to_string()))
}

/// The type of the filesystem holding `path`: that of the longest mount point in
/// `/proc/mounts` that is `path` or one of its parents (Linux only).
pub(super) fn filesystem(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            // Spaces and the like are octal escapes in /proc/mounts.
            let point = point.replace("\\040", " ");
            path.starts_with(&point).then(|| (point.len(), kind.to_string()))
        })
        // The last of the longest: a later mount on the same point hides the earlier.
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// What the whole machine did: CPU time busy (not idle or waiting for I/O) and processes started.
#[derive(Clone)]
pub(super) struct Machine {
    /// CPU time spent by every process and the kernel, in milliseconds.
    pub cpu_ms: f64,
    /// Processes (and threads) started.
    pub processes: f64,
}

impl Machine {
    /// The counters since boot, from `/proc/stat` (Linux only).
    fn now() -> Option<Machine> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait, in clock ticks
        // (100 per second on Linux).
        let busy: f64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
        let processes = stat.lines().find_map(|line| line.strip_prefix("processes "))?.trim().parse().ok()?;
        Some(Machine { cpu_ms: busy * 10.0, processes })
    }

    fn since(&self, before: &Machine) -> Machine {
        Machine { cpu_ms: self.cpu_ms - before.cpu_ms, processes: self.processes - before.processes }
    }
}

/// Runs `step` and returns how long it took, in milliseconds, with what it returned.
pub(super) fn timed<T>(step: impl FnOnce() -> T) -> (f64, T) {
    let started = Instant::now();
    let res = step();
    (ms(started.elapsed()), res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_range_whatever_the_order() {
        let spread = Spread::of([300.0, 100.0, 250.0, 120.0]);
        assert_eq!((spread.median, spread.min, spread.max), (185.0, 100.0, 300.0));
        // Whole milliseconds, padded as a column asks.
        assert_eq!(format!("{:>9}|", Spread::of([3.4, 1.2, 2.6])), "  3 (1-3)|");
        assert_eq!(Spread::of([]).to_string(), "0 (0-0)");
    }

    #[test]
    fn the_filesystem_is_that_of_the_nearest_mount_point() {
        // /proc is procfs on every Linux, and /proc/self/ns below it too.
        assert_eq!(filesystem(Path::new("/proc")).as_deref(), Some("proc"));
        assert_eq!(filesystem(Path::new("/proc/self/ns")).as_deref(), Some("proc"));
        assert_eq!(filesystem(Path::new("/no/such/path")), None);
        assert!(place_label(Path::new("/proc")).ends_with("/proc (proc)"));
    }
}
