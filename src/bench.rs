//! The benchmark (`cargo xtask bench`): a clone of a real repository, with its history, deployed
//! into a loopback sshd once in full and then after each of several small commits. It prints
//! wall times and the bytes each push sent, beside git's own thin pack for the same range and a
//! `git archive` tarball of the whole tree (what a copy strategy sends on every deploy).

mod binary;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use xshell::{cmd, Shell};

use crate::config::{Config, Defaults};
use crate::loopback::LoopbackServer;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::shell::RemoteScript;
use crate::ssh::Connection;
use crate::Error;

/// One timed deploy.
#[derive(Debug, Clone)]
pub struct Round {
    pub elapsed: Duration,
    /// connect, daemon start, push, release (made and published).
    pub phases: [Duration; 4],
    pub bytes_pushed: u64,
    /// Size of `git pack-objects --thin` for the commits this deploy added.
    pub thin_pack: u64,
    /// The same change synced by `rsync` over SSH (time, bytes sent), when rsync is installed.
    pub rsync: Option<(Duration, u64)>,
}

/// Runs the benchmark against a clone of `source` and prints the figures to `out`.
pub fn run(source: &Path, rounds: usize, out: &mut dyn Write) -> Result<(), Error> {
    let server =
        LoopbackServer::start().map_err(|err| Error::local(format!("cannot start the loopback sshd: {err}")))?;
    let clone_dir = server.dir().join("bench-app");
    let source = source.canonicalize().map_err(|err| Error::local(format!("`{}`: {err}", source.display())))?;
    git2::Repository::clone(&source.display().to_string(), &clone_dir)
        .map_err(|err| Error::local(format!("cannot clone `{}`: {}", source.display(), err.message())))?;
    let config = bench_config(&clone_dir, &[server_entry(&server, "bench")], &server, &server.known_hosts())?;
    let sh = Shell::new().map_err(|err| Error::local(format!("cannot start a local shell: {err}")))?;
    sh.change_dir(&clone_dir);
    let commits = crate::local::own_repo(cmd!(sh, "git rev-list --count HEAD"))
        .quiet()
        .read()
        .map_err(|err| Error::local(err.to_string()))?;
    let tarball = crate::local::own_repo(cmd!(sh, "git archive --format=tar.gz HEAD"))
        .quiet()
        .output()
        .map_err(|err| Error::local(err.to_string()))?;
    let tree_files = crate::local::own_repo(cmd!(sh, "git ls-files"))
        .quiet()
        .read()
        .map_err(|err| Error::local(err.to_string()))?
        .lines()
        .count();

    setup(&config, &mut Quiet)?;
    let baseline = remote_command_baseline(&config)?;
    let first = deploy(&config, &DeployOptions::default(), &mut Quiet)?;
    let first_bytes: u64 = first.servers.iter().map(|server| server.bytes_sent).sum();
    let has_rsync = cmd!(sh, "rsync --version").quiet().ignore_stdout().run().is_ok();
    let first_rsync = if has_rsync { Some(rsync(&sh, &server, "./", "rsync-copy")?) } else { None };

    let mut timed = Vec::with_capacity(rounds);
    for round in 0..rounds {
        commit_change(&sh, &clone_dir, &format!("bench round {round}"))?;
        let thin = crate::local::own_repo(cmd!(sh, "git pack-objects --thin --stdout --revs -q"))
            .stdin("HEAD\n^HEAD~1\n")
            .quiet()
            .output()
            .map_err(|err| Error::local(err.to_string()))?;
        let report = deploy(&config, &DeployOptions::default(), &mut Quiet)?;
        let first_server = &report.servers[0];
        timed.push(Round {
            elapsed: report.elapsed,
            phases: [first_server.connect, first_server.daemon, first_server.push, first_server.release_time],
            bytes_pushed: report.servers.iter().map(|server| server.bytes_sent).sum(),
            thin_pack: thin.stdout.len() as u64,
            rsync: if has_rsync { Some(rsync(&sh, &server, "./", "rsync-copy")?) } else { None },
        });
    }

    let line = |out: &mut dyn Write, text: String| -> Result<(), Error> {
        writeln!(out, "{text}").map_err(|err| Error::local(format!("cannot write the report: {err}")))
    };
    line(out, format!("repository: {} ({commits} commits, {tree_files} files), loopback sshd", source.display()))?;
    line(out, format!("full tree as tar.gz (copy strategy, every deploy): {} bytes", tarball.stdout.len()))?;
    line(
        out,
        format!(
            "one bare remote command (`true`: sshd session and login shell start-up): {:.1} ms, the \
             first after connecting {:.1} ms; a deploy runs three",
            baseline.later, baseline.first
        ),
    )?;
    let first_objects: u64 = first.servers.iter().map(|server| server.objects).sum();
    line(
        out,
        format!(
            "first deploy (the deployed tree, not the history): {:.0} ms, {first_bytes} bytes pushed, {first_objects} objects",
            ms(first.elapsed)
        ),
    )?;
    match first_rsync {
        Some((elapsed, bytes)) => line(
            out,
            format!("first rsync of the tree (rsync strategy, no history): {:.0} ms, {bytes} bytes sent", ms(elapsed)),
        )?,
        None => line(out, "rsync: not installed, so the rsync strategy is not measured".to_string())?,
    }
    line(out, "incremental deploys (one small commit each):".to_string())?;
    line(
        out,
        format!(
            "  {:>5} {:>10} {:>14} {:>16} {:>7} {:>10} {:>12}   phases (connect / daemon / push / release ms)",
            "round", "wall ms", "bytes pushed", "git thin pack", "ratio", "rsync ms", "rsync bytes"
        ),
    )?;
    for (index, round) in timed.iter().enumerate() {
        line(
            out,
            format!(
                "  {:>5} {:>10.1} {:>14} {:>16} {:>7.2} {:>10} {:>12}   {:.0} / {:.0} / {:.0} / {:.0}",
                index + 1,
                ms(round.elapsed),
                round.bytes_pushed,
                round.thin_pack,
                round.bytes_pushed as f64 / round.thin_pack.max(1) as f64,
                round.rsync.map_or("-".to_string(), |(elapsed, _)| format!("{:.1}", ms(elapsed))),
                round.rsync.map_or("-".to_string(), |(_, bytes)| bytes.to_string()),
                ms(round.phases[0]),
                ms(round.phases[1]),
                ms(round.phases[2]),
                ms(round.phases[3]),
            ),
        )?;
    }
    if !timed.is_empty() {
        let median_ms = median(timed.iter().map(|round| ms(round.elapsed)).collect());
        let median_bytes = median(timed.iter().map(|round| round.bytes_pushed as f64).collect());
        let median_thin = median(timed.iter().map(|round| round.thin_pack as f64).collect());
        line(
            out,
            format!(
                "median incremental deploy: {median_ms:.1} ms (target < 500 ms), {median_bytes:.0} bytes pushed \
                 = {:.2}x git's thin pack of {median_thin:.0} bytes (target <= 2x), {:.1}% of the tarball",
                median_bytes / median_thin.max(1.0),
                100.0 * median_bytes / tarball.stdout.len().max(1) as f64
            ),
        )?;
    }
    let synced: Vec<(Duration, u64)> = timed.iter().filter_map(|round| round.rsync).collect();
    if !synced.is_empty() {
        let median_ms = median(synced.iter().map(|(elapsed, _)| ms(*elapsed)).collect());
        let median_bytes = median(synced.iter().map(|(_, bytes)| *bytes as f64).collect());
        line(out, format!("median incremental rsync of the tree: {median_ms:.1} ms, {median_bytes:.0} bytes sent"))?;
    }
    binary::run(&server, &sh, out)?;
    fleet(&sh, &clone_dir, &server, rounds.clamp(1, 5), out)
}

/// How many servers the fleet rows deploy to at once.
const FLEETS: [usize; 3] = [1, 4, 8];

/// Incremental deploys to fleets of 1, 4 and 8 loopback servers (all in parallel), each fleet
/// deployed after each of `rounds` commits; prints each fleet's median wall time.
fn fleet(
    sh: &Shell,
    clone_dir: &Path,
    first: &LoopbackServer,
    rounds: usize,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let started = |err: std::io::Error| Error::local(format!("cannot start a loopback sshd: {err}"));
    let others: Vec<LoopbackServer> =
        (1..FLEETS[2]).map(|_| LoopbackServer::start().map_err(started)).collect::<Result<_, _>>()?;
    // One key and one known_hosts file for all: the first server's key is let in everywhere.
    for server in &others {
        first.admit(server).map_err(|err| Error::local(format!("cannot write the fleet's keys: {err}")))?;
    }
    let fleet_known_hosts = first.known_hosts();
    let servers: Vec<&LoopbackServer> = std::iter::once(first).chain(&others).collect();
    let configs = FLEETS
        .iter()
        .map(|&size| {
            let entries: Vec<serde_json::Value> =
                servers[..size].iter().map(|server| server_entry(server, &format!("fleet-{size}"))).collect();
            bench_config(clone_dir, &entries, first, &fleet_known_hosts)
        })
        .collect::<Result<Vec<Config>, Error>>()?;
    for config in &configs {
        setup(config, &mut Quiet)?;
        deploy(config, &DeployOptions::default(), &mut Quiet)?;
    }
    // Per fleet and round: the wall time, and what the whole machine did meanwhile.
    let mut times: Vec<Vec<(f64, Option<Machine>)>> = vec![Vec::new(); FLEETS.len()];
    for round in 0..rounds {
        commit_change(sh, clone_dir, &format!("fleet round {round}"))?;
        for (config, times) in configs.iter().zip(&mut times) {
            let before = Machine::now();
            let elapsed = deploy(config, &DeployOptions::default(), &mut Quiet)?.elapsed;
            times.push((ms(elapsed), Machine::now().zip(before).map(|(after, before)| after.since(&before))));
        }
    }
    let line = |out: &mut dyn Write, text: String| -> Result<(), Error> {
        writeln!(out, "{text}").map_err(|err| Error::local(format!("cannot write the report: {err}")))
    };
    line(out, format!("parallel deploys to several loopback servers ({rounds} incremental deploys each):"))?;
    line(
        out,
        format!(
            "  {:>7} {:>16} {:>12} {:>22} {:>28}",
            "servers", "median wall ms", "x 1 server", "machine CPU ms (all)", "processes started / server"
        ),
    )?;
    let one = median(times[0].iter().map(|(wall, _)| *wall).collect());
    for (size, times) in FLEETS.iter().zip(times) {
        let wall = median(times.iter().map(|(wall, _)| *wall).collect());
        let machine: Vec<&Machine> = times.iter().filter_map(|(_, machine)| machine.as_ref()).collect();
        let (cpu, processes) = if machine.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let cpu = median(machine.iter().map(|machine| machine.cpu_ms).collect());
            let processes = median(machine.iter().map(|machine| machine.processes / *size as f64).collect());
            (format!("{cpu:.0}"), format!("{processes:.0}"))
        };
        line(out, format!("  {size:>7} {wall:>16.1} {:>12.2} {cpu:>22} {processes:>28}", wall / one.max(1.0)))?;
    }
    line(
        out,
        format!(
            "  (the servers, their sshds and the deployer share this machine's {} cores: with the CPU busy, a \
             fleet's wall time is bounded below by its CPU time / cores)",
            std::thread::available_parallelism().map_or(1, |cores| cores.get())
        ),
    )?;
    Ok(())
}

/// A `[[servers]]` entry for `server`, deploying into `srv/<dir>` of its temp dir.
fn server_entry(server: &LoopbackServer, dir: &str) -> serde_json::Value {
    serde_json::json!({
        "host": "127.0.0.1", "port": server.port(), "user": server.user(),
        "deploy_to": server.dir().join("srv").join(dir).display().to_string(),
    })
}

/// The benchmark's deploy config for the clone in `clone_dir`: `servers`, reached with
/// `key_holder`'s key and checked against `known_hosts` (`~/.ssh/config` is not read).
fn bench_config(
    clone_dir: &Path,
    servers: &[serde_json::Value],
    key_holder: &LoopbackServer,
    known_hosts: &Path,
) -> Result<Config, Error> {
    let metadata = serde_json::json!({ "deploy": {
        "application": "bench",
        "servers": servers,
        "ssh": {
            "identity": key_holder.identity().display().to_string(),
            "known_hosts": known_hosts.display().to_string(),
        },
    }});
    let defaults = Defaults { ssh_config: None, ..Defaults::from_env(None, None) };
    Config::from_metadata(&metadata, "package.metadata", &clone_dir.join("Cargo.toml"), &defaults)
}

/// A small, realistic change, committed: one line appended to a file every Rust repository
/// tracks.
fn commit_change(sh: &Shell, clone_dir: &Path, message: &str) -> Result<(), Error> {
    let manifest = clone_dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap_or_default();
    text.push_str(&format!("# {message}\n"));
    std::fs::write(&manifest, text)
        .map_err(|err| Error::local(format!("cannot write `{}`: {err}", manifest.display())))?;
    crate::local::own_repo(cmd!(sh, "git -c user.name=bench -c user.email=bench@localhost commit -q -a -m {message}"))
        .quiet()
        .run()
        .map_err(|err| Error::local(err.to_string()))
}

/// What the whole machine did: CPU time busy (not idle or waiting for I/O) and processes started.
#[derive(Clone)]
struct Machine {
    /// CPU time spent by every process and the kernel, in milliseconds.
    cpu_ms: f64,
    /// Processes (and threads) started.
    processes: f64,
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

/// Syncs `source` (without `.git`) to `target_dir` in the server's directory with `rsync -a
/// --delete` over `ssh`, as an rsync deploy strategy would; returns the wall time and rsync's
/// "Total bytes sent".
fn rsync(sh: &Shell, server: &LoopbackServer, source: &str, target_dir: &str) -> Result<(Duration, u64), Error> {
    let ssh = format!(
        "ssh -p {} -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        server.port(),
        server.identity().display(),
        server.known_hosts().display()
    );
    let target = format!("{}@127.0.0.1:{}/", server.user(), server.dir().join(target_dir).display());
    let started = std::time::Instant::now();
    let stats = cmd!(sh, "rsync -a --delete --stats --exclude=/.git/ -e {ssh} {source} {target}")
        .quiet()
        .read()
        .map_err(|err| Error::local(format!("rsync failed: {err}")))?;
    let elapsed = started.elapsed();
    let sent = stats
        .lines()
        .find_map(|line| line.strip_prefix("Total bytes sent: "))
        .map(|number| number.replace(',', ""))
        .and_then(|number| number.trim().parse().ok())
        .ok_or_else(|| Error::local(format!("no \"Total bytes sent\" in rsync's output: {stats}")))?;
    Ok((elapsed, sent))
}

/// The time of a remote command that does nothing: what sshd and the user's login shell cost
/// per remote step on this server (a heavy `~/.bashrc` shows here).
struct Baseline {
    /// The first command on a new connection (a stall after authentication shows here).
    first: f64,
    /// The median of the next ones.
    later: f64,
}

fn remote_command_baseline(config: &Config) -> Result<Baseline, Error> {
    let connection = Connection::open(config, &config.servers[0])?;
    let script = RemoteScript { name: "baseline", text: "true".to_string() };
    let mut times = Vec::new();
    for _ in 0..6 {
        let started = std::time::Instant::now();
        connection.run(&script)?;
        times.push(ms(started.elapsed()));
    }
    let first = times.remove(0);
    Ok(Baseline { first, later: median(times) })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
