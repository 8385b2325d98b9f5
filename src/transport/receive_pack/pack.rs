//! The pack of a push: `git pack-objects --thin` over what the server lacks, and with a release
//! commit, a second `git pack-objects` for the build output's objects joined to it into one pack
//! (one header, the entries of both, one SHA-1), so the build output's bytes are counted apart.

use std::io::{self, Read, Write};
use std::process::Stdio;

use sha1::{Digest, Sha1};

use crate::transport::error::{GitError, PushError};
use super::{PackProgress, Sent};

/// What a pack holds: `source` and, with `build`, the release commit, minus what the server
/// has (`haves`, the bases, in order of use).
pub(super) struct PackSpec<'a> {
    pub(super) source: &'a str,
    pub(super) build: Option<&'a str>,
    pub(super) haves: Vec<&'a str>,
    /// Commits whose parents the pack leaves out (see [`shallow_roots`]).
    pub(super) shallow: Vec<String>,
    /// The server's own shallow roots: the history it has stops there, so the pack's bases do
    /// too (given to `git pack-objects` as grafts, not declared to the server).
    pub(super) cut: Vec<String>,
    pub(super) ofs_delta: bool,
    /// An object directory every `git` reads too: bases fetched from a server (see
    /// [`crate::transport::bases`]).
    pub(super) alternate: Option<&'a std::path::Path>,
}

/// The commits a push declares shallow (their parents are not sent). When the server has
/// nothing this repository knows (a first deploy, or a shallow clone that does not reach the
/// server's tip), the deployed commit itself: only its tree travels, not the history. From a
/// shallow clone otherwise, the clone's own shallow roots: the history stops where the clone's
/// does.
///
/// When the server's `repo/` is shallow (`server_shallow`, its roots: every server whose first
/// deploy sent the tree), the deployed commit is a shallow root too: the history between the
/// server's commits and this one may reach below what the server has (a branch forked before
/// the server's first deploy, merged after it), and a pack that walks it would take objects and
/// delta bases the server never got. Then only the commit's tree travels, against the trees of
/// the server's tips.
pub(super) fn shallow_roots(
    repo: &git2::Repository,
    source: &str,
    haves: &[&str],
    server_shallow: &[String],
) -> Vec<String> {
    if haves.is_empty() || !server_shallow.is_empty() {
        return vec![source.to_string()];
    }
    if !repo.is_shallow() {
        return Vec::new();
    }
    let listed = std::fs::read_to_string(repo.path().join("shallow")).unwrap_or_default();
    listed.lines().map(str::trim).filter(|line| line.len() == 40).map(str::to_string).collect()
}

/// How many bases `git pack-objects` takes from its input (its `--window`, by default).
const MAX_BASES: usize = 10;
/// A pack's header: `PACK`, the version and the object count, each 4 bytes (big-endian).
const HEADER: usize = 12;
/// A pack's trailer: the SHA-1 of everything before it.
const TRAILER: usize = 20;

/// Streams the pack of `spec` into `stream`. The source's part comes from `git pack-objects
/// --thin --revs`, whose bases are the trees of the commits the new ones descend from. A build
/// output's part is made apart, by a second `git pack-objects` over the objects the release
/// commit adds, with the trees of the server's tips as bases (the previous release's binaries
/// among them: it is no ancestor, so the first kind would miss it), and joined to the first
/// into one pack, so its bytes can be counted. `pack` hears that it starts once the headers are
/// read.
pub(super) fn send_pack<W: Write>(
    repo: &git2::Repository,
    spec: &PackSpec,
    stream: &mut W,
    pack: &mut dyn FnMut(PackProgress),
) -> Result<Sent, PushError> {
    let mut revisions = format!("{}\n", spec.source);
    for have in &spec.haves {
        revisions.push_str(&format!("^{have}\n"));
    }
    for root in spec.shallow.iter().chain(&spec.cut) {
        revisions.push_str(&format!("--shallow {root}\n"));
    }
    // With shallow roots (the deployed commit's, the server's), the haves are cut off from the
    // commits sent: `--shallow` makes git look at the trees of every have, not only of the
    // commits the new ones descend from (`--objects-edge-aggressive`), so that the server's
    // files are neither sent again nor missed as bases.
    let args: &[&str] = if spec.shallow.is_empty() { &["--thin", "--revs"] } else { &["--thin", "--revs", "--shallow"] };
    let mut source = PackObjects::start(repo, spec, args, &revisions)?;
    let Some(build) = spec.build else {
        // One part: the pack streams through as `git pack-objects` writes it.
        let mut header = [0u8; HEADER];
        let copied = source
            .stdout()
            .read_exact(&mut header)
            .inspect(|()| pack(PackProgress::Starts { objects: object_count(&header), bytes: None }))
            .and_then(|()| stream.write_all(&header))
            .and_then(|()| io::copy(source.stdout(), stream).map(drop));
        source.finish(copied)?;
        stream.flush().map_err(PushError::Lost)?;
        return Ok(Sent { objects: object_count(&header), build_bytes: 0 });
    };
    let mut input = String::new();
    for base in spec.haves.iter().take(MAX_BASES - 1).chain([&spec.source]) {
        input.push_str(&format!("-{base}\n"));
    }
    input.push_str(&build_objects(repo, build, spec)?);
    // Given its objects (not revisions), pack-objects takes `-<commit>` lines as bases and makes
    // deltas against them without `--thin` (which would read revisions instead).
    let mut build = PackObjects::start(repo, spec, &[], &input)?;

    let mut hasher = Sha1::new();
    let mut headers = [[0u8; HEADER]; 2];
    let mut build_bytes = 0;
    let copied = (|| {
        source.stdout().read_exact(&mut headers[0])?;
        build.stdout().read_exact(&mut headers[1])?;
        let objects = object_count(&headers[0]) + object_count(&headers[1]);
        pack(PackProgress::Starts { objects, bytes: None });
        let mut header = headers[0];
        header[8..].copy_from_slice(&u32::try_from(objects).unwrap_or(u32::MAX).to_be_bytes());
        stream.write_all(&header)?;
        hasher.update(header);
        copy_entries(source.stdout(), stream, &mut hasher)?;
        build_bytes = copy_entries(build.stdout(), stream, &mut hasher)?;
        stream.write_all(&hasher.clone().finalize())
    })();
    let failed = copied.is_err();
    let source_done = source.finish(if failed { Err(io::ErrorKind::BrokenPipe.into()) } else { Ok(()) });
    build.finish(copied)?;
    source_done?;
    stream.flush().map_err(PushError::Lost)?;
    Ok(Sent { objects: object_count(&headers[0]) + object_count(&headers[1]), build_bytes })
}

fn object_count(header: &[u8; HEADER]) -> u64 {
    u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]]))
}

/// The objects release commit `build` adds to the source that the server lacks, as `<id>
/// <path>` lines (the path lets `git pack-objects` find the same file among its bases). An
/// object the source's part of the pack carries already (one of the history, not of the
/// source's tree) is left out: a pack must not hold an object twice.
///
/// When the deployed commit is a shallow root, so is it for this walk (with the server's and
/// this clone's roots): the history behind it is not in the pack, so an object the build output
/// shares with that history only is the build output's to carry.
fn build_objects(repo: &git2::Repository, build: &str, spec: &PackSpec) -> Result<String, GitError> {
    let rooted = spec.shallow.iter().any(|root| root == spec.source);
    let grafts = match rooted {
        true => Some(Grafts::new(repo, spec.shallow.iter().chain(&spec.cut))?),
        false => None,
    };
    let mut args = vec![];
    if let Some(grafts) = &grafts {
        args.extend(["--shallow-file", grafts.path()]);
    }
    args.push("rev-list");
    // As `git pack-objects --shallow` does: every have's tree counts, not only the edges'.
    args.push(if rooted { "--objects-edge-aggressive" } else { "--objects" });
    let listing = rev_list(repo, &format!("{build}\n^{}\n", spec.source), spec, &args)?;
    let listing: String = listing.lines().filter(|line| !line.starts_with('-')).map(|line| format!("{line}\n")).collect();
    let mut candidates: std::collections::HashSet<&str> =
        listing.lines().filter_map(|line| line.split(' ').next()).collect();
    // What the source's part holds: streamed, only the few candidates are kept in memory.
    let source = format!("{}\n", spec.source);
    // When the deployed commit is a shallow root, the source's part is that commit and its tree.
    let mut args = vec!["rev-list", "--objects", "--no-object-names"];
    if rooted {
        args.push("--no-walk");
    }
    // Rooted, the source's part is at most its tree (less what the server has, which the
    // build output's part need not carry either): no haves, which would make a range that
    // `--no-walk` does not stop.
    let haves: &[&str] = if rooted { &[] } else { &spec.haves };
    let mut source_part = rev_list_child(repo, spec.alternate, &source, haves, &args)?;
    let mut reader = io::BufReader::new(source_part.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    while !candidates.is_empty() && io::BufRead::read_line(&mut reader, &mut line).map_err(lost_git)? > 0 {
        candidates.remove(line.trim_end());
        line.clear();
    }
    drop(reader);
    let _ = source_part.kill();
    let _ = source_part.wait();
    let kept = listing.lines().filter(|line| line.split(' ').next().is_some_and(|id| candidates.contains(id)));
    Ok(kept.map(|line| format!("{line}\n")).collect())
}

/// A shallow file for `git --shallow-file`: the given roots and this clone's own, as grafts
/// (commits whose parents a walk does not follow), removed when dropped.
pub(in crate::transport) struct Grafts {
    /// Kept for its `Drop`, which removes the file.
    _file: tempfile::NamedTempFile,
    path: String,
}

impl Grafts {
    pub(in crate::transport) fn new<'a>(
        repo: &git2::Repository,
        roots: impl Iterator<Item = &'a String>,
    ) -> Result<Grafts, GitError> {
        let failed = |error| GitError::Feed { command: "rev-list", error };
        let mut text: String = roots.map(|root| format!("{root}\n")).collect();
        text.push_str(&std::fs::read_to_string(repo.path().join("shallow")).unwrap_or_default());
        let file = tempfile::NamedTempFile::new().map_err(failed)?;
        std::fs::write(file.path(), text).map_err(failed)?;
        let path = file.path().display().to_string();
        Ok(Grafts { _file: file, path })
    }

    pub(in crate::transport) fn path(&self) -> &str {
        &self.path
    }
}

fn lost_git(error: io::Error) -> GitError {
    GitError::Lost { command: "rev-list", error }
}

/// `git <args> --stdin` (`args`: git's own options, then `rev-list` and its) of `revisions`
/// minus every have of `spec`, run to its end.
fn rev_list(repo: &git2::Repository, revisions: &str, spec: &PackSpec, args: &[&str]) -> Result<String, GitError> {
    let output =
        rev_list_child(repo, spec.alternate, revisions, &spec.haves, args)?.wait_with_output().map_err(lost_git)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let (status, stderr) = (output.status, stderr.trim().to_string());
        return Err(GitError::Failed { command: "rev-list", status, stderr });
    }
    String::from_utf8(output.stdout).map_err(|_| GitError::NotUtf8)
}

/// `git <args> --stdin` of `revisions` minus `haves`, left running with its output piped. It reads its whole input before it writes: no deadlock on the pipes.
fn rev_list_child(
    repo: &git2::Repository,
    alternate: Option<&std::path::Path>,
    revisions: &str,
    haves: &[&str],
    args: &[&str],
) -> Result<std::process::Child, GitError> {
    let mut child = crate::transport::bases::git(repo, alternate)
        .args(args)
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| GitError::Run { command: "rev-list", error })?;
    let mut input = revisions.to_string();
    for have in haves {
        input.push_str(&format!("^{have}\n"));
    }
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let fed = stdin.write_all(input.as_bytes());
    drop(stdin);
    if let Err(error) = fed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(GitError::Feed { command: "rev-list", error });
    }
    Ok(child)
}

/// Copies a pack's entries from `from` (positioned after its header) into `to`, leaving out its
/// trailer and hashing what is written; returns the bytes written.
fn copy_entries<R: Read, W: Write>(from: &mut R, to: &mut W, hasher: &mut Sha1) -> io::Result<u64> {
    let mut buffer = vec![0u8; 64 * 1024 + TRAILER];
    // The first `held` bytes of `buffer` are read but not written: they may be the trailer.
    let mut held = 0;
    let mut written = 0;
    loop {
        let read = from.read(&mut buffer[held..])?;
        if read == 0 {
            break;
        }
        let filled = held + read;
        let out = filled.saturating_sub(TRAILER);
        to.write_all(&buffer[..out])?;
        hasher.update(&buffer[..out]);
        written += out as u64;
        buffer.copy_within(out..filled, 0);
        held = filled - out;
    }
    if held != TRAILER {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "`git pack-objects` ended its pack early"));
    }
    Ok(written)
}

/// A running `git pack-objects --thin --stdout`, fed `input` on its stdin. Dropped unfinished,
/// it is killed (it would block on a pipe nobody reads).
struct PackObjects {
    child: Option<std::process::Child>,
    stdout: std::process::ChildStdout,
    /// A signal to the deployer alone reaches it too (it may compress for long before it writes).
    _watched: crate::interrupt::LocalProcess,
}

impl PackObjects {
    fn start(repo: &git2::Repository, spec: &PackSpec, args: &[&str], input: &str) -> Result<PackObjects, GitError> {
        let mut command = crate::transport::bases::git(repo, spec.alternate);
        command.args(["pack-objects", "--stdout", "-q"]).args(args);
        let ofs_delta = spec.ofs_delta;
        if ofs_delta {
            command.arg("--delta-base-offset");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| GitError::Run { command: "pack-objects", error })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let watched = crate::interrupt::LocalProcess::alone(child.id());
        // Dropped on an early return, which kills the process.
        let pack = PackObjects { child: Some(child), stdout, _watched: watched };
        // pack-objects reads its whole input before it writes: no deadlock on the pipes.
        stdin.write_all(input.as_bytes()).map_err(|error| GitError::Feed { command: "pack-objects", error })?;
        drop(stdin);
        Ok(pack)
    }

    fn stdout(&mut self) -> &mut std::process::ChildStdout {
        &mut self.stdout
    }

    /// Waits for the process after its pack was copied (`copied`), and says what went wrong.
    fn finish(mut self, copied: io::Result<()>) -> Result<(), PushError> {
        let mut child = self.child.take().expect("finished once");
        if copied.is_err() {
            // The server is gone: pack-objects would block on a pipe nobody reads. Stop it first.
            let _ = child.kill();
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|error| GitError::Lost { command: "pack-objects", error })?;
        // A pack-objects that failed by itself says why; one killed after the copy failed does not.
        if !status.success() && !stderr.trim().is_empty() {
            let stderr = stderr.trim().to_string();
            return Err(GitError::Failed { command: "pack-objects", status, stderr }.into());
        }
        match copied {
            // Its pack ended before its end: it died, the connection did not.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(GitError::PackEndedEarly { status }.into()),
            Err(err) => Err(PushError::Lost(err)),
            Ok(()) if !status.success() => Err(GitError::PackFailed { status }.into()),
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for PackObjects {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
