//! A client of git's receive-pack protocol (the push half of the v0 smart protocol), over any
//! byte stream: read the ref advertisement, send one update command, stream a thin pack made by
//! `git pack-objects --thin`, read the `report-status`. With `side-band-64k`, what the server
//! prints (git's own errors, such as a malformed tree refused by `receive.fsckObjects`, and its
//! hooks' output) comes back on the same stream and is shown with a failed push.
//!
//! The pack's bases are every advertised tip that also exists locally, as `git send-pack` does,
//! so only what the server lacks travels, as deltas against what it has.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use sha1::{Digest, Sha1};

/// The object name git uses for "no object" (a ref being created).
const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// The refs and capabilities a receive-pack server advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// `(sha, refname)` pairs, in the order sent.
    pub refs: Vec<(String, String)>,
    pub capabilities: Vec<String>,
}

/// One ref update of a push: `refname` is set to `sha`, whatever it held before (a deploy may
/// go back in history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    pub sha: &'a str,
    pub refname: &'a str,
}

/// What a push's pack held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// The objects in the pack (0 when the server had everything already).
    pub objects: u64,
    /// The bytes of the pack that carry the build output (the release commit's own objects).
    pub build_bytes: u64,
}

/// How far a push's pack has got, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackProgress {
    /// It starts to be sent: its `objects` (from its header), and its size in `bytes` when it
    /// was made before it is sent (a pack [`SharedPacks`] holds); `None` when it streams from
    /// `git pack-objects` as it is made.
    Starts { objects: u64, bytes: Option<u64> },
    /// All of it is sent: the server stores it, then reports.
    Sent,
}

/// Pushes `source` (a commit of `repo` and its ref) and, with `build`, the release commit that
/// lays the build output over it, through `stream`, which must already be connected to a
/// receive-pack server (for git://, after the request line). A ref the server refuses is an
/// error.
///
/// With `shared`, the pack comes from it (made once for every push that needs the same one);
/// without, `git pack-objects` streams straight into `stream`.
pub fn push<S: Read + Write>(
    repo: &git2::Repository,
    stream: &mut S,
    source: Update<'_>,
    build: Option<Update<'_>>,
    shared: Option<&SharedPacks>,
) -> Result<Sent, String> {
    push_observed(repo, stream, source, build, shared, &mut |_| {})
}

/// Like [`push`], telling `pack` what the pack holds as it starts and when it is all sent (for
/// progress reports); it is not called when nothing needs sending.
pub fn push_observed<S: Read + Write>(
    repo: &git2::Repository,
    stream: &mut S,
    source: Update<'_>,
    build: Option<Update<'_>>,
    shared: Option<&SharedPacks>,
    pack: &mut dyn FnMut(PackProgress),
) -> Result<Sent, String> {
    let advertisement = read_advertisement(stream)?;
    let old = |refname: &str| {
        let advertised = advertisement.refs.iter().find(|(_, name)| name == refname);
        advertised.map(|(old, _)| old.clone()).unwrap_or_else(|| ZERO_ID.to_string())
    };
    let updates: Vec<(String, Update)> =
        [Some(source), build].into_iter().flatten().map(|update| (old(update.refname), update)).collect();
    let commands: Vec<&(String, Update)> = updates.iter().filter(|(old, update)| old != update.sha).collect();
    if commands.is_empty() {
        // The server already has every commit under its ref: no command, no pack.
        return write_flush(stream).map(|()| Sent::default()).map_err(lost);
    }
    if !advertisement.capabilities.iter().any(|cap| cap == "report-status") {
        return Err("the server does not offer `report-status`, so a push could not be confirmed".to_string());
    }
    let offers = |capability: &str| advertisement.capabilities.iter().any(|cap| cap == capability);
    let ofs_delta = offers("ofs-delta");
    let side_band = offers("side-band-64k");
    let mut capabilities = vec!["report-status".to_string()];
    if ofs_delta {
        capabilities.push("ofs-delta".to_string());
    }
    if side_band {
        capabilities.push("side-band-64k".to_string());
    }
    if offers("quiet") {
        // No progress meters on the side band: only what the server has to say.
        capabilities.push("quiet".to_string());
    }
    capabilities.push(format!("agent=xtask-deploy/{}", env!("CARGO_PKG_VERSION")));

    // The bases: every advertised tip that exists here, the build output's own ref first (the
    // previous release's binaries are what the new ones are deltas against).
    let exists = |tip: &str| git2::Oid::from_str(tip).is_ok_and(|oid| repo.odb().is_ok_and(|odb| odb.exists(oid)));
    let mut advertised: Vec<&(String, String)> = advertisement.refs.iter().collect();
    advertised.sort_by_key(|(_, name)| Some(name.as_str()) != build.map(|build| build.refname));
    let haves: Vec<&str> =
        advertised.iter().map(|(tip, _)| tip.as_str()).filter(|tip| *tip != ZERO_ID && exists(tip)).collect();
    let shallow = shallow_roots(repo, source.sha, &haves);
    // Shallow roots come first: commits whose parents the pack does not carry.
    for root in &shallow {
        write_pkt(stream, format!("shallow {root}\n").as_bytes()).map_err(lost)?;
    }
    // git's receive-pack updates (and reports) only the first ref of a push that brings shallow
    // roots: then only the release commit's ref, which carries the deployed commit all the same
    // (the branch follows on the next deploy).
    let commands: Vec<&(String, Update)> = match (shallow.is_empty(), build) {
        (false, Some(build)) => commands.into_iter().filter(|(_, update)| update.refname == build.refname).collect(),
        _ => commands,
    };
    for (index, (old, update)) in commands.iter().enumerate() {
        // The capabilities ride on the first command only.
        let capabilities = if index == 0 { format!("\0{}", capabilities.join(" ")) } else { String::new() };
        let command = format!("{old} {} {}{capabilities}\n", update.sha, update.refname);
        write_pkt(stream, command.as_bytes()).map_err(lost)?;
    }
    write_flush(stream).map_err(lost)?;

    let spec = PackSpec { source: source.sha, build: build.map(|build| build.sha), haves, shallow, ofs_delta };
    let sent = match shared {
        Some(shared) => shared.pack(repo, &spec).and_then(|spooled| spooled.send(stream, pack)),
        None => send_pack(repo, &spec, stream, pack),
    };
    if sent.is_ok() {
        pack(PackProgress::Sent);
    }
    let refnames: Vec<&str> = commands.iter().map(|(_, update)| update.refname).collect();
    match sent {
        Ok(sent) => read_report(stream, side_band)?.judge(&refnames).map(|()| sent),
        // A server that refuses what it reads (a malformed object) stops reading before the
        // pack ends: its report, if it sent one, says why.
        Err(err) => match read_report(stream, side_band) {
            Ok(report) => Err(report.judge(&refnames).err().unwrap_or(err)),
            Err(_) => Err(err),
        },
    }
}

/// What a pack holds: `source` and, with `build`, the release commit, minus what the server
/// has (`haves`, the bases, in order of use).
struct PackSpec<'a> {
    source: &'a str,
    build: Option<&'a str>,
    haves: Vec<&'a str>,
    /// Commits whose parents the pack leaves out (see [`shallow_roots`]).
    shallow: Vec<String>,
    ofs_delta: bool,
}

/// The commits a push declares shallow (their parents are not sent). When the server has
/// nothing this repository knows (a first deploy, or a shallow clone that does not reach the
/// server's tip), the deployed commit itself: only its tree travels, not the history. From a
/// shallow clone otherwise, the clone's own shallow roots: the history stops where the clone's
/// does.
fn shallow_roots(repo: &git2::Repository, source: &str, haves: &[&str]) -> Vec<String> {
    if haves.is_empty() {
        return vec![source.to_string()];
    }
    if !repo.is_shallow() {
        return Vec::new();
    }
    let listed = std::fs::read_to_string(repo.path().join("shallow")).unwrap_or_default();
    listed.lines().map(str::trim).filter(|line| line.len() == 40).map(str::to_string).collect()
}

/// The thin packs of one deploy to several servers. Servers in the same state advertise the same
/// tips and need the same pack: it is made by one `git pack-objects` run, spooled to a temporary
/// file (deleted when the last handle closes), and sent from there to each of them.
#[derive(Default)]
pub struct SharedPacks {
    /// By repository, commit, bases and delta format; a push that finds its pack being made
    /// waits for it.
    packs: Mutex<HashMap<String, Arc<PackSlot>>>,
}

/// A pack once made (or the error that made it fail), shared by every push that needs it.
type PackSlot = OnceLock<Result<Arc<Spooled>, String>>;

/// A pack on disk: its bytes, and what it holds.
struct Spooled {
    file: File,
    sent: Sent,
}

impl SharedPacks {
    /// How many packs were made so far.
    pub fn made(&self) -> usize {
        let packs = self.packs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        packs.values().filter(|pack| pack.get().is_some()).count()
    }

    /// The pack of `spec`, made now unless an earlier push made it.
    fn pack(&self, repo: &git2::Repository, spec: &PackSpec) -> Result<Arc<Spooled>, String> {
        let mut bases = spec.haves.clone();
        bases.sort_unstable();
        bases.dedup();
        let key = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            repo.path().display(),
            spec.source,
            spec.build.unwrap_or("-"),
            spec.ofs_delta,
            bases.join(" "),
            spec.shallow.join(" ")
        );
        let slot = {
            let mut packs = self.packs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(packs.entry(key).or_default())
        };
        slot.get_or_init(|| {
            let mut file =
                tempfile::tempfile().map_err(|err| format!("cannot make a temporary file for the pack: {err}"))?;
            let sent = send_pack(repo, spec, &mut file, &mut |_| {})?;
            Ok(Arc::new(Spooled { file, sent }))
        })
        .clone()
    }
}

impl Spooled {
    /// Writes the whole pack into `stream` (reading at offsets: several pushes read it at once).
    fn send<W: Write>(&self, stream: &mut W, pack: &mut dyn FnMut(PackProgress)) -> Result<Sent, String> {
        let size = self.file.metadata().map_err(|err| format!("cannot read the spooled pack: {err}"))?.len();
        pack(PackProgress::Starts { objects: self.sent.objects, bytes: Some(size) });
        let mut buffer = vec![0u8; 64 * 1024];
        let mut offset = 0;
        loop {
            let read =
                self.file.read_at(&mut buffer, offset).map_err(|err| format!("cannot read the spooled pack: {err}"))?;
            if read == 0 {
                break;
            }
            stream.write_all(&buffer[..read]).map_err(lost)?;
            offset += read as u64;
        }
        stream.flush().map_err(lost)?;
        Ok(self.sent)
    }
}

/// Reads the ref advertisement up to its flush packet.
pub fn read_advertisement<S: Read>(stream: &mut S) -> Result<Advertisement, String> {
    let mut advertisement = Advertisement::default();
    let mut first = true;
    while let Some(line) = read_pkt(stream).map_err(|err| {
        format!("the server closed the connection before advertising its refs ({err}); is `repo/` a bare repository?")
    })? {
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\n');
        if let Some(message) = line.strip_prefix("ERR ") {
            return Err(format!("the git daemon refused the push: {message}"));
        }
        let (refline, capabilities) = match line.split_once('\0') {
            Some((refline, capabilities)) if first => (refline, Some(capabilities)),
            _ => (line, None),
        };
        first = false;
        if let Some(capabilities) = capabilities {
            advertisement.capabilities =
                capabilities.split(' ').filter(|cap| !cap.is_empty()).map(str::to_string).collect();
        }
        let Some((sha, name)) = refline.split_once(' ') else {
            return Err(format!("malformed ref advertisement line `{line}`"));
        };
        if name != "capabilities^{}" {
            advertisement.refs.push((sha.to_string(), name.to_string()));
        }
    }
    Ok(advertisement)
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
fn send_pack<W: Write>(
    repo: &git2::Repository,
    spec: &PackSpec,
    stream: &mut W,
    pack: &mut dyn FnMut(PackProgress),
) -> Result<Sent, String> {
    let mut revisions = format!("{}\n", spec.source);
    for have in &spec.haves {
        revisions.push_str(&format!("^{have}\n"));
    }
    for root in &spec.shallow {
        revisions.push_str(&format!("--shallow {root}\n"));
    }
    let mut source = PackObjects::start(repo, &["--thin", "--revs"], spec.ofs_delta, &revisions)?;
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
        stream.flush().map_err(lost)?;
        return Ok(Sent { objects: object_count(&header), build_bytes: 0 });
    };
    let mut input = String::new();
    for base in spec.haves.iter().take(MAX_BASES - 1).chain([&spec.source]) {
        input.push_str(&format!("-{base}\n"));
    }
    input.push_str(&build_objects(repo, build, spec)?);
    // Given its objects (not revisions), pack-objects takes `-<commit>` lines as bases and makes
    // deltas against them without `--thin` (which would read revisions instead).
    let mut build = PackObjects::start(repo, &[], spec.ofs_delta, &input)?;

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
    stream.flush().map_err(lost)?;
    Ok(Sent { objects: object_count(&headers[0]) + object_count(&headers[1]), build_bytes })
}

fn object_count(header: &[u8; HEADER]) -> u64 {
    u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]]))
}

/// The objects release commit `build` adds to the source that the server lacks, as `<id>
/// <path>` lines (the path lets `git pack-objects` find the same file among its bases). An
/// object the source's part of the pack carries already (one of the history, not of the
/// source's tree) is left out: a pack must not hold an object twice.
fn build_objects(repo: &git2::Repository, build: &str, spec: &PackSpec) -> Result<String, String> {
    let listing = rev_list(repo, &format!("{build}\n^{}\n", spec.source), spec, &["--objects"])?;
    let mut candidates: std::collections::HashSet<&str> =
        listing.lines().filter_map(|line| line.split(' ').next()).collect();
    // What the source's part holds: streamed, only the few candidates are kept in memory.
    let source = format!("{}\n", spec.source);
    // When the deployed commit is a shallow root, the source's part is that commit and its tree.
    let mut args = vec!["--objects", "--no-object-names"];
    if spec.shallow.iter().any(|root| root == spec.source) {
        args.push("--no-walk");
    }
    let mut source_part = rev_list_child(repo, &source, spec, &args)?;
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

fn lost_git(err: io::Error) -> String {
    format!("`git rev-list` was lost: {err}")
}

/// `git rev-list --stdin <args>` of `revisions` minus every have, run to its end.
fn rev_list(repo: &git2::Repository, revisions: &str, spec: &PackSpec, args: &[&str]) -> Result<String, String> {
    let output = rev_list_child(repo, revisions, spec, args)?.wait_with_output().map_err(lost_git)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`git rev-list` failed ({}): {}", output.status, stderr.trim()));
    }
    String::from_utf8(output.stdout).map_err(|_| "`git rev-list` listed a path that is not UTF-8".to_string())
}

/// `git rev-list --stdin <args>` of `revisions` minus every have, left running with its
/// output piped. It reads its whole input before it writes: no deadlock on the pipes.
fn rev_list_child(
    repo: &git2::Repository,
    revisions: &str,
    spec: &PackSpec,
    args: &[&str],
) -> Result<std::process::Child, String> {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .arg("rev-list")
        .args(args)
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `git rev-list`: {err}"))?;
    let mut input = revisions.to_string();
    for have in &spec.haves {
        input.push_str(&format!("^{have}\n"));
    }
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let fed = stdin.write_all(input.as_bytes());
    drop(stdin);
    if let Err(err) = fed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot feed `git rev-list`: {err}"));
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
    fn start(repo: &git2::Repository, args: &[&str], ofs_delta: bool, input: &str) -> Result<PackObjects, String> {
        let mut command = Command::new("git");
        command.arg("--git-dir").arg(repo.path()).args(["pack-objects", "--stdout", "-q"]).args(args);
        if ofs_delta {
            command.arg("--delta-base-offset");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run `git pack-objects`: {err}"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let watched = crate::interrupt::LocalProcess::alone(child.id());
        // Dropped on an early return, which kills the process.
        let pack = PackObjects { child: Some(child), stdout, _watched: watched };
        // pack-objects reads its whole input before it writes: no deadlock on the pipes.
        stdin.write_all(input.as_bytes()).map_err(|err| format!("cannot feed `git pack-objects`: {err}"))?;
        drop(stdin);
        Ok(pack)
    }

    fn stdout(&mut self) -> &mut std::process::ChildStdout {
        &mut self.stdout
    }

    /// Waits for the process after its pack was copied (`copied`), and says what went wrong.
    fn finish(mut self, copied: io::Result<()>) -> Result<(), String> {
        let mut child = self.child.take().expect("finished once");
        if copied.is_err() {
            // The server is gone: pack-objects would block on a pipe nobody reads. Stop it first.
            let _ = child.kill();
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|err| format!("`git pack-objects` was lost: {err}"))?;
        // A pack-objects that failed by itself says why; one killed after the copy failed does not.
        if !status.success() && !stderr.trim().is_empty() {
            return Err(format!("`git pack-objects` failed ({status}): {}", stderr.trim()));
        }
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        let hint = if signal.is_some() { " (killed: out of memory on a large build output?)" } else { "" };
        match copied {
            // Its pack ended before its end: it died, the connection did not.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                Err(format!("`git pack-objects` ended before its pack did ({status}){hint}"))
            }
            Err(err) => Err(lost(err)),
            Ok(()) if !status.success() => Err(format!("`git pack-objects` failed ({status}){hint}")),
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

/// How an error begins when the connection ended before the server's report.
pub(super) const CLOSED_BEFORE_REPORT: &str = "the server closed before confirming the push";

/// How much of what the server printed is kept for an error message (its end).
const SAID_LIMIT: usize = 4096;

/// The server's `report-status`, and what it printed on the side band, if any.
#[derive(Debug, Default)]
struct Report {
    lines: Vec<String>,
    said: String,
}

impl Report {
    /// `Ok` when the objects were stored and each of `refnames` was updated; else the server's
    /// reason, with what it printed.
    fn judge(&self, refnames: &[&str]) -> Result<(), String> {
        let lines = &self.lines;
        let unpack = lines.first().map(String::as_str).unwrap_or("");
        if unpack != "unpack ok" {
            let fix = if self.said.contains("fsck error") {
                ": the pushed commit holds an object git refuses (`git fsck --strict` in your clone names it); \
                 deploy a commit without it"
            } else {
                ""
            };
            return Err(self.with_said(format!("the server could not store the pushed objects: `{unpack}`{fix}")));
        }
        for line in &lines[1..] {
            if let Some(rest) = line.strip_prefix("ng ") {
                let (name, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                return Err(self.with_said(format!("the server rejected `{name}`: {reason}")));
            }
        }
        for refname in refnames {
            if !lines.iter().any(|line| line == &format!("ok {refname}")) {
                return Err(self.with_said(format!("the server did not confirm `{refname}`: {}", lines.join("; "))));
            }
        }
        Ok(())
    }

    /// `message`, then what the server printed, one line after another.
    fn with_said(&self, message: String) -> String {
        let said: Vec<&str> = self.said.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        match said.is_empty() {
            true => message,
            false => format!("{message}; the server said: {}", said.join("; ")),
        }
    }
}

/// Reads `report-status`: `unpack ok`, then `ok <ref>` or `ng <ref> <reason>` per ref. With
/// `side_band`, the report is band 1 of a side-band stream whose band 2 is what the server
/// printed (its last [`SAID_LIMIT`] bytes or more are kept) and band 3 a fatal error.
fn read_report<S: Read>(stream: &mut S, side_band: bool) -> Result<Report, String> {
    let closed = |err: io::Error| format!("{CLOSED_BEFORE_REPORT}: {err}");
    if !side_band {
        return Ok(Report { lines: read_lines(stream).map_err(closed)?, said: String::new() });
    }
    let mut data = Vec::new();
    let mut said = String::new();
    while let Some(packet) = read_pkt(stream).map_err(closed)? {
        match packet.split_first() {
            Some((1, rest)) => data.extend_from_slice(rest),
            Some((2, rest)) => {
                said.push_str(&String::from_utf8_lossy(rest).replace('\r', "\n"));
                if said.len() > 2 * SAID_LIMIT {
                    let mut cut = said.len() - SAID_LIMIT;
                    while !said.is_char_boundary(cut) {
                        cut += 1;
                    }
                    said = format!("[...]\n{}", &said[cut..]);
                }
            }
            Some((3, rest)) => return Err(format!("the server failed: {}", String::from_utf8_lossy(rest).trim())),
            _ => return Err("the server sent a malformed side-band packet".to_string()),
        }
    }
    Ok(Report { lines: read_lines(&mut data.as_slice()).map_err(closed)?, said })
}

/// Reads pkt-lines up to a flush packet, as text without their newline.
fn read_lines<S: Read>(stream: &mut S) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    while let Some(line) = read_pkt(stream)? {
        lines.push(String::from_utf8_lossy(&line).trim_end_matches('\n').to_string());
    }
    Ok(lines)
}

/// Reads one pkt-line; `None` is a flush packet.
fn read_pkt<S: Read>(stream: &mut S) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let length = std::str::from_utf8(&header)
        .ok()
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad pkt-line header {header:?}")))?;
    match length {
        0 => Ok(None),
        1..=3 => Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad pkt-line length {length}"))),
        _ => {
            let mut payload = vec![0u8; length - 4];
            stream.read_exact(&mut payload)?;
            Ok(Some(payload))
        }
    }
}

fn write_pkt<W: Write>(stream: &mut W, payload: &[u8]) -> io::Result<()> {
    stream.write_all(format!("{:04x}", payload.len() + 4).as_bytes())?;
    stream.write_all(payload)
}

fn write_flush<W: Write>(stream: &mut W) -> io::Result<()> {
    stream.write_all(b"0000")?;
    stream.flush()
}

/// How an error begins when the connection ended while the push was being sent.
pub(super) const LOST: &str = "the connection to the server was lost";

fn lost(err: io::Error) -> String {
    format!("{LOST}: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_pkt(&mut out, text.as_bytes()).unwrap();
        out
    }

    #[test]
    fn advertisement_of_an_empty_repository_has_no_refs() {
        let mut input = pkt(&format!("{ZERO_ID} capabilities^{{}}\0report-status delete-refs ofs-delta\n"));
        input.extend_from_slice(b"0000");
        let advertisement = read_advertisement(&mut input.as_slice()).unwrap();
        assert!(advertisement.refs.is_empty());
        assert_eq!(advertisement.capabilities, vec!["report-status", "delete-refs", "ofs-delta"]);
    }

    #[test]
    fn advertisement_lists_refs_and_first_line_capabilities() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let mut input = pkt(&format!("{a} refs/heads/main\0report-status\n"));
        input.extend(pkt(&format!("{b} refs/tags/v1\n")));
        input.extend_from_slice(b"0000");
        let advertisement = read_advertisement(&mut input.as_slice()).unwrap();
        assert_eq!(advertisement.refs, vec![(a, "refs/heads/main".to_string()), (b, "refs/tags/v1".to_string())]);
    }

    #[test]
    fn daemon_errors_and_truncation_are_reported() {
        let input = pkt("ERR access denied or repository not exported: /x");
        let err = read_advertisement(&mut input.as_slice()).unwrap_err();
        assert!(err.contains("access denied"), "{err}");
        let err = read_advertisement(&mut &b"00"[..]).unwrap_err();
        assert!(err.contains("closed the connection"), "{err}");
    }

    /// A stream whose peer has gone: every write fails.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "connection cut"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_that_dies_mid_pack_fails_the_push_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        // Far more than a pipe buffer, so pack-objects is still writing when the stream dies.
        let mut state = 0x9e3779b97f4a7c15u64;
        let blob: Vec<u8> = (0..4_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let blob = repo.blob(&blob).unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        tree.insert("big.bin", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@localhost").unwrap();
        let commit = repo.commit(None, &signature, &signature, "big", &tree, &[]).unwrap();
        let started = std::time::Instant::now();
        let source = commit.to_string();
        let spec = PackSpec { source: &source, build: None, haves: Vec::new(), shallow: Vec::new(), ofs_delta: true };
        let err = send_pack(&repo, &spec, &mut Gone, &mut |_| {}).unwrap_err();
        assert!(err.contains("connection to the server was lost"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn report_status_rejections_name_the_ref_and_reason() {
        let mut input = pkt("unpack ok\n");
        input.extend(pkt("ng refs/heads/main pre-receive hook declined\n"));
        input.extend_from_slice(b"0000");
        let report = read_report(&mut input.as_slice(), false).unwrap();
        let err = report.judge(&["refs/heads/main"]).unwrap_err();
        assert_eq!(err, "the server rejected `refs/heads/main`: pre-receive hook declined");
        let mut input = pkt("unpack index-pack abnormal exit\n");
        input.extend_from_slice(b"0000");
        let report = read_report(&mut input.as_slice(), false).unwrap();
        assert!(report.judge(&["refs/heads/main"]).unwrap_err().contains("index-pack"));
    }

    #[test]
    fn on_the_side_band_the_report_comes_with_what_the_server_said() {
        let band = |band: u8, payload: &[u8]| {
            let mut packet = vec![band];
            packet.extend_from_slice(payload);
            let mut out = Vec::new();
            write_pkt(&mut out, &packet).unwrap();
            out
        };
        let mut status = pkt("unpack index-pack abnormal exit\n");
        status.extend(pkt("ng refs/heads/main unpacker error\n"));
        status.extend_from_slice(b"0000");
        let mut input = band(2, b"error: object 9de2: duplicateEntries: contains duplicate file entries\n");
        // The report may be split across packets, and the server's lines too.
        input.extend(band(1, &status[..7]));
        input.extend(band(2, b"fatal: fsck error "));
        input.extend(band(1, &status[7..]));
        input.extend(band(2, b"in packed object\n"));
        input.extend_from_slice(b"0000");
        let err = read_report(&mut input.as_slice(), true).unwrap().judge(&["refs/heads/main"]).unwrap_err();
        assert_eq!(
            err,
            "the server could not store the pushed objects: `unpack index-pack abnormal exit`: the pushed commit \
             holds an object git refuses (`git fsck --strict` in your clone names it); deploy a commit without it; \
             the server said: error: object 9de2: duplicateEntries: contains duplicate file entries; \
             fatal: fsck error in packed object"
        );
        let mut input = band(3, b"out of disk space\n");
        input.extend_from_slice(b"0000");
        assert_eq!(read_report(&mut input.as_slice(), true).unwrap_err(), "the server failed: out of disk space");
        // A hook that prints without end: only the end is kept.
        let mut input = Vec::new();
        for line in 0..10_000 {
            input.extend(band(2, format!("line {line}\n").as_bytes()));
        }
        input.extend(band(1, &status));
        input.extend_from_slice(b"0000");
        let report = read_report(&mut input.as_slice(), true).unwrap();
        assert!(report.said.len() <= 2 * SAID_LIMIT + 10 && report.said.ends_with("line 9999\n"), "{}", report.said);
    }
}
