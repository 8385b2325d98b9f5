//! The shallow-clone rows: what a CI checkout (`git clone --depth 1`, GitHub Actions' default)
//! deploys. A depth-1 clone of the benchmark's clone deploys to a fresh `deploy_to` on the same
//! server (time, bytes pushed, objects), then after each of several small commits. A deploy
//! that fails is a figure too: the row says so and why, and the benchmark goes on.

use std::io::Write;

use xshell::{cmd, Shell};

use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::Error;

use super::timing::{timed, Spread};
use super::{bench_config, commit_change, line, server_entry, Bench};

/// Clones, deploys and prints the rows.
pub(super) fn run(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let server = bench.server;
    let dir = server.dir().join("shallow-app");
    // A file:// URL: from a plain path git copies the whole repository and ignores --depth.
    let url = format!("file://{}", bench.clone_dir.display());
    crate::local::own_repo(cmd!(bench.sh, "git clone -q --depth 1 {url} {dir}"))
        .quiet()
        .run()
        .map_err(|err| Error::local(format!("cannot make a shallow clone: {err}")))?;
    let sh = Shell::new().map_err(|err| Error::local(format!("cannot start a local shell: {err}")))?;
    sh.change_dir(&dir);
    let config = bench_config(&dir, &[server_entry(server, "shallow")], server, &server.known_hosts())?;
    let rounds = bench.options.rounds.max(1);
    line(
        out,
        format!(
            "a shallow clone (`git clone --depth 1`, as CI checks out): deployed to a fresh deploy_to on the \
             server, then {rounds} incremental deploys (one small commit each):"
        ),
    )?;
    setup(&config, &mut Quiet)?;
    let (wall, first) = timed(|| deploy(&config, &DeployOptions::default(), &mut Quiet));
    match first {
        Ok(report) => {
            let bytes: u64 = report.servers.iter().map(|server| server.bytes_sent).sum();
            let objects: u64 = report.servers.iter().map(|server| server.objects).sum();
            line(out, format!("  first deploy: {wall:.0} ms, {bytes} bytes pushed, {objects} objects"))?;
        }
        Err(err) => return line(out, format!("  first deploy: failed after {wall:.0} ms: {err}")),
    }
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        commit_change(&sh, &dir, &format!("shallow round {round}"))?;
        let (wall, report) = timed(|| deploy(&config, &DeployOptions::default(), &mut Quiet));
        match report {
            Ok(report) => {
                let bytes: u64 = report.servers.iter().map(|server| server.bytes_sent).sum();
                let objects: u64 = report.servers.iter().map(|server| server.objects).sum();
                samples.push((wall, bytes as f64, objects as f64));
            }
            Err(err) => {
                return line(out, format!("  incremental deploy {}: failed after {wall:.0} ms: {err}", round + 1))
            }
        }
    }
    line(
        out,
        format!(
            "  incremental deploys: {} ms (median, min-max), {:.0} bytes pushed, {:.0} objects (medians)",
            Spread::of(samples.iter().map(|sample| sample.0)),
            Spread::of(samples.iter().map(|sample| sample.1)).median,
            Spread::of(samples.iter().map(|sample| sample.2)).median,
        ),
    )
}
