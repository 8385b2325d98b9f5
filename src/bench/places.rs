//! The places rows: where the servers keep their files and who deploys. The benchmark's server
//! deploys into a directory on tmpfs (`/dev/shm`) and one on disk (`/var/tmp` or `/tmp`, the
//! first not on tmpfs), as root and, when run as root, as a fresh non-root user made with
//! `useradd -m -s /bin/bash` (the distribution's stock `~/.bashrc`), each row reached through a
//! relay: the best case (root, tmpfs, no delay) next to the server as the world has it
//! (non-root, on disk, at the largest round-trip time asked for).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::loopback::user::{is_root, LocalUser};
use crate::Error;

use super::timing::{filesystem, place_label, relay_to, time_side_by_side, Spread, Target};
use super::{bench_config, line, Bench};

/// One row: who deploys, where, at what round trip, and what it stands for.
struct Row<'a> {
    user: Option<&'a LocalUser>,
    place: &'a Place,
    rtt: Duration,
    note: &'static str,
}

/// A directory for the rows' `deploy_to`s, removed on drop.
struct Place {
    parent: PathBuf,
    dir: TempDir,
}

/// Prints the table, or why rows are missing.
pub(super) fn run(bench: &Bench, out: &mut dyn Write) -> Result<(), Error> {
    let server = bench.server;
    let rtt = bench.options.rtts.iter().copied().max().unwrap_or_default();
    let mut notes = Vec::new();
    let user = if !is_root() {
        notes.push("non-root rows: skipped, making a user takes root (`useradd`)".to_string());
        None
    } else if !Path::new("/bin/bash").exists() {
        notes.push("non-root rows: skipped, `/bin/bash` is not installed".to_string());
        None
    } else {
        server.open_to_local_users().map_err(|err| Error::local(format!("cannot open the sshd to users: {err}")))?;
        let home = server.dir().join("home");
        Some(LocalUser::create(&home, "/bin/bash").map_err(|err| Error::local(format!("cannot make a user: {err}")))?)
    };
    let tmpfs = find_place(&["/dev/shm"], |kind| kind == "tmpfs")?;
    let disk = find_place(&["/var/tmp", "/tmp"], |kind| kind != "tmpfs" && kind != "ramfs")?;
    if tmpfs.is_none() {
        notes.push("tmpfs rows: skipped, `/dev/shm` is not a tmpfs here".to_string());
    }
    if disk.is_none() {
        notes.push("disk rows: skipped, neither `/var/tmp` nor `/tmp` is on disk here".to_string());
    }

    let places: Vec<&Place> = [tmpfs.as_ref(), disk.as_ref()].into_iter().flatten().collect();
    let mut rows = Vec::new();
    for who in std::iter::once(None).chain(user.as_ref().map(Some)) {
        for &place in &places {
            let best = who.is_none() && tmpfs.as_ref().is_some_and(|tmpfs| std::ptr::eq(place, tmpfs));
            rows.push(Row { user: who, place, rtt: Duration::ZERO, note: if best { "best case" } else { "" } });
        }
    }
    if let (false, Some(place)) = (rtt.is_zero(), disk.as_ref().or(tmpfs.as_ref())) {
        let note = if user.is_some() && disk.is_some() { "as the world is" } else { "" };
        rows.push(Row { user: user.as_ref(), place, rtt, note });
    }
    let targets =
        rows.iter().enumerate().map(|(index, row)| target(bench, row, index)).collect::<Result<Vec<_>, _>>()?;
    let rounds = bench.options.rounds.max(1);
    let samples = time_side_by_side(bench, &targets, rounds, "places")?;

    line(
        out,
        format!(
            "where the servers are: the same server and repository, each row its own deploy_to, reached through \
             its own relay (RTT/2 added each way); {rounds} incremental deploys per row, one small commit each:"
        ),
    )?;
    line(out, format!("  {:<36} {:<24} {:>6} {:>22}", "deploying as", "deploy_to in", "RTT", "median ms (min-max)"))?;
    for (row, samples) in rows.iter().zip(&samples) {
        let who = match row.user {
            Some(user) => format!("{} (bash, stock ~/.bashrc)", user.name),
            None => format!("{} (as the benchmark)", server.user()),
        };
        let rtt = format!("{} ms", row.rtt.as_millis());
        let wall = Spread::of_walls(samples);
        let text = format!("  {who:<36} {:<24} {rtt:>6} {wall:>22}   {}", place_label(&row.place.parent), row.note);
        line(out, text.trim_end())?;
    }
    for note in notes {
        line(out, format!("  {note}"))?;
    }
    Ok(())
}

/// The first of `candidates` that exists and whose filesystem type `fits`, with a fresh
/// directory in it that every user can traverse.
fn find_place(candidates: &[&str], fits: impl Fn(&str) -> bool) -> Result<Option<Place>, Error> {
    let Some(parent) =
        candidates.iter().map(PathBuf::from).find(|path| filesystem(path).is_some_and(|kind| fits(&kind)))
    else {
        return Ok(None);
    };
    let dir = tempfile::Builder::new()
        .prefix("xtask-deploy-bench-")
        .tempdir_in(&parent)
        .map_err(|err| Error::local(format!("cannot make a directory in `{}`: {err}", parent.display())))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|err| Error::local(format!("cannot open `{}` to users: {err}", dir.path().display())))?;
    Ok(Some(Place { parent, dir }))
}

/// The row's config: its own `deploy_to` (owned by its user), its own relay.
fn target(bench: &Bench, row: &Row, index: usize) -> Result<Target, Error> {
    let server = bench.server;
    let deploy_to = row.place.dir.path().join(format!("row-{index}"));
    std::fs::create_dir_all(&deploy_to)
        .map_err(|err| Error::local(format!("cannot make `{}`: {err}", deploy_to.display())))?;
    if let Some(user) = row.user {
        // git refuses a repository owned by another user: the deploy user owns its deploy_to.
        std::os::unix::fs::chown(&deploy_to, Some(user.uid), None)
            .map_err(|err| Error::local(format!("cannot give `{}` to `{}`: {err}", deploy_to.display(), user.name)))?;
    }
    let relay = relay_to(server, row.rtt, server)?;
    let user = row.user.map_or(server.user(), |user| user.name.as_str());
    let entry = serde_json::json!({
        "host": server.listen(), "port": relay.port(), "user": user,
        "deploy_to": deploy_to.display().to_string(),
    });
    let config = bench_config(&bench.clone_dir, &[entry], server, &server.known_hosts())?;
    Ok(Target { config, relays: vec![relay] })
}
