//! The benchmark (`cargo xtask bench`): a clone of a real repository, with its history, deployed
//! into a loopback sshd once in full and then after each of several small commits. It prints
//! wall times and the bytes each push sent, beside git's own thin pack for the same range and a
//! `git archive` tarball of the whole tree (what a copy strategy sends on every deploy).
//!
//! Then its sections, each skippable ([`Section`]), each in a module of its own: a Rust binary
//! artifact (`binary`), fleets of servers near and far (`fleet`), round trips through a delaying
//! relay beside OpenSSH's `ssh true` (`distance`), the servers' files on disk or tmpfs and a
//! non-root deploy user (`places`), and a shallow clone's deploys (`shallow`). Every timed row
//! deploys the same repository to the same kind of server after one small commit, so rows
//! compare like with like (`timing`).

mod bastion;
mod binary;
mod distance;
mod fleet;
mod places;
mod service;
mod shallow;
mod timing;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use xshell::{cmd, Shell};

use crate::config::{Config, Defaults};
use crate::loopback::LoopbackServer;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::shell::RemoteScript;
use crate::ssh::Connection;
use crate::Error;

/// What to measure, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many incremental deploys each timed row makes.
    pub rounds: usize,
    /// The round-trip times to add with a relay (the distance rows; the fleet and the "as the
    /// world is" rows take the largest).
    pub rtts: Vec<Duration>,
    /// The sections not to run.
    pub skip: Vec<Section>,
}

/// A part of the benchmark that can be skipped (the first deploy and the incremental rows
/// always run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// A Rust binary artifact after a one-line change (builds with `rustc -O` twice).
    Binary,
    /// Fleets of 1, 4 and 8 servers, then 1 and 8 behind relays at the largest round trip.
    Fleet,
    /// One server behind a relay at each round-trip time, beside `ssh true`.
    Distance,
    /// The servers' files on disk and on tmpfs, as root and as a non-root deploy user.
    Places,
    /// Deploys from a `git clone --depth 1`.
    Shallow,
    /// A service under a real systemd: refused connections per deploy, through its socket and plain.
    Service,
    /// What a deploy sends beside `ssh true`; fleets of 1, 10 and 50 servers behind one bastion.
    Bastion,
}

impl Section {
    /// Every section, in the order they run.
    pub const ALL: [Section; 7] = [
        Section::Binary,
        Section::Fleet,
        Section::Distance,
        Section::Places,
        Section::Shallow,
        Section::Service,
        Section::Bastion,
    ];

    /// The name `--skip` takes.
    pub fn name(self) -> &'static str {
        match self {
            Section::Binary => "binary",
            Section::Fleet => "fleet",
            Section::Distance => "distance",
            Section::Places => "places",
            Section::Shallow => "shallow",
            Section::Service => "service",
            Section::Bastion => "bastion",
        }
    }
}

impl FromStr for Section {
    type Err = String;

    fn from_str(name: &str) -> Result<Section, String> {
        Section::ALL.into_iter().find(|section| section.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Section::ALL.iter().map(|section| section.name()).collect();
            format!("no benchmark section `{name}`: the sections are {}", names.join(", "))
        })
    }
}

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

/// What every section shares: the loopback server, the clone it deploys, a shell in the clone.
struct Bench<'a> {
    server: &'a LoopbackServer,
    clone_dir: PathBuf,
    sh: Shell,
    options: &'a Options,
}

/// Runs the benchmark against a clone of `source` and prints the figures to `out`.
pub fn run(source: &Path, options: &Options, out: &mut dyn Write) -> Result<(), Error> {
    let server =
        LoopbackServer::start().map_err(|err| Error::local(format!("cannot start the loopback sshd: {err}")))?;
    let clone_dir = server.dir().join("bench-app");
    let source = source.canonicalize().map_err(|err| Error::local(format!("`{}`: {err}", source.display())))?;
    let sh = Shell::new().map_err(|err| Error::local(format!("cannot start a local shell: {err}")))?;
    // git's own local clone: hard links (or a plain copy) of the objects, fast for a large one.
    crate::local::own_repo(cmd!(sh, "git clone -q {source} {clone_dir}"))
        .quiet()
        .run()
        .map_err(|err| Error::local(format!("cannot clone `{}`: {err}", source.display())))?;
    let config = bench_config(&clone_dir, &[server_entry(&server, "bench")], &server, &server.known_hosts())?;
    sh.change_dir(&clone_dir);
    let rounds = options.rounds;
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

    line(
        out,
        format!(
            "repository: {} ({commits} commits, {tree_files} files); one loopback sshd (no delay), as {}, \
             deploy_to in {}",
            source.display(),
            server.user(),
            timing::place_label(server.dir())
        ),
    )?;
    line(out, format!("full tree as tar.gz (copy strategy, every deploy): {} bytes", tarball.stdout.len()))?;
    line(
        out,
        format!(
            "one bare remote command (`true`: sshd session and login shell start-up): {:.1} ms, the \
             first after connecting {:.1} ms; a deploy pays it once (every remote step runs in the lock keeper's session)",
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
    let bench = Bench { server: &server, clone_dir, sh, options };
    for section in Section::ALL {
        if options.skip.contains(&section) {
            line(out, format!("\n{} rows: skipped (--skip)", section.name()))?;
            continue;
        }
        line(out, "")?;
        match section {
            Section::Binary => binary::run(bench.server, &bench.sh, out)?,
            Section::Fleet => fleet::run(&bench, out)?,
            Section::Distance => distance::run(&bench, out)?,
            Section::Places => places::run(&bench, out)?,
            Section::Shallow => shallow::run(&bench, out)?,
            Section::Service => service::run(options.rounds, out)?,
            Section::Bastion => bastion::run(&bench, out)?,
        }
    }
    Ok(())
}

/// Writes one line of the report.
fn line(out: &mut dyn Write, text: impl Display) -> Result<(), Error> {
    writeln!(out, "{text}").map_err(|err| Error::local(format!("cannot write the report: {err}")))
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

/// A small, realistic change, committed: one line appended to `Cargo.toml` (a file every Rust
/// repository tracks; made and added where there is none).
fn commit_change(sh: &Shell, clone_dir: &Path, message: &str) -> Result<(), Error> {
    let manifest = clone_dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap_or_default();
    text.push_str(&format!("# {message}\n"));
    std::fs::write(&manifest, text)
        .map_err(|err| Error::local(format!("cannot write `{}`: {err}", manifest.display())))?;
    crate::local::own_repo(cmd!(sh, "git add Cargo.toml"))
        .quiet()
        .run()
        .map_err(|err| Error::local(err.to_string()))?;
    crate::local::own_repo(cmd!(sh, "git -c user.name=bench -c user.email=bench@localhost commit -q -m {message}"))
        .quiet()
        .run()
        .map_err(|err| Error::local(err.to_string()))
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
