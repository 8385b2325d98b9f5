//! A client of git's receive-pack protocol (the push half of the v0 smart protocol), over any
//! byte stream: read the ref advertisement, send one update command, stream a thin pack made by
//! `git pack-objects --thin`, read the `report-status`. With `side-band-64k`, what the server
//! prints (git's own errors, such as a malformed tree refused by `receive.fsckObjects`, and its
//! hooks' output) comes back on the same stream and is shown with a failed push.
//!
//! The pack's bases are every advertised tip that also exists locally, as `git send-pack` does,
//! so only what the server lacks travels, as deltas against what it has.
//!
//! This file holds the push itself ([`push_observed`]): which refs to update, with which
//! capabilities, and which pack. By concern:
//! - `protocol.rs`: the pkt-lines, the ref advertisement, and the server's `report-status`.
//! - `pack.rs`: the pack of a push (`PackSpec`), made by `git pack-objects` (with a build
//!   output's part made apart and joined to it), and the shallow roots.
//! - `shared.rs`: [`SharedPacks`], each distinct pack of a deploy to several servers made once.

mod pack;
mod protocol;
mod shared;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};

pub(in crate::transport) use pack::Grafts;
use pack::{send_pack, shallow_roots, PackSpec};
use protocol::{read_report, write_flush, write_pkt, Advertisement};

use super::bases::Bases;
use super::error::PushError;

pub use protocol::read_advertisement;
pub use shared::SharedPacks;

/// The capabilities a push sent before the advertisement counts on: every receive-pack since
/// git 1.8 offers them.
const ASSUMED: [&str; 4] = ["report-status", "ofs-delta", "side-band-64k", "quiet"];

/// Reads the advertisement that came after the commands (`pipelined`), and checks that the
/// server offered the capabilities they counted on.
fn read_after<S: Read>(stream: &mut S, pipelined: bool) -> Result<(), PushError> {
    if !pipelined {
        return Ok(());
    }
    let advertisement = read_advertisement(stream)?;
    match ASSUMED.iter().find(|assumed| !advertisement.capabilities.iter().any(|cap| cap == *assumed)) {
        None => Ok(()),
        Some(missing) => Err(PushError::Missing(missing.to_string())),
    }
}

/// Where the server keeps refs to the commits of the releases it still has (see
/// `plan/scripts/sh/tidy.sh`).
pub const KEPT_REFS: &str = "refs/xtask-kept/";

/// The object name git uses for "no object" (a ref being created).
const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// What the server's repository holds, read under the deploy's lock: its refs `(sha, refname)`
/// and its shallow roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub refs: Vec<(String, String)>,
    pub shallow: Vec<String>,
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
#[cfg(any(test, feature = "testkit"))]
pub fn push<S: Read + Write>(
    repo: &git2::Repository,
    stream: &mut S,
    source: Update<'_>,
    build: Option<Update<'_>>,
    shared: Option<&SharedPacks>,
) -> Result<Sent, PushError> {
    let packing = crate::transport::Packing { method: crate::transport::PackMethod::ThinPack, shared, known: None, bases: None };
    push_observed(repo, stream, source, build, packing, &mut |_| {})
}

/// Like [`push`], telling `pack` what the pack holds as it starts and when it is all sent (for
/// progress reports); it is not called when nothing needs sending.
///
/// With `known`, what the server's repository holds as read just before under the deploy's
/// lock, the push does not wait for the ref advertisement: it sends its
/// commands and pack at once (with the capabilities every git since 1.8 offers), then reads
/// the advertisement and the report.
///
/// With `bases` (a release commit of the server's fetched with what deltas against it need,
/// without its history), it is a base like any tip this repository has, and a shallow root.
pub fn push_observed<S: Read + Write>(
    repo: &git2::Repository,
    stream: &mut S,
    source: Update<'_>,
    build: Option<Update<'_>>,
    packing: crate::transport::Packing<'_>,
    pack: &mut dyn FnMut(PackProgress),
) -> Result<Sent, PushError> {
    let (shared, known, bases) = (packing.shared, packing.known, packing.bases);
    // With the refs known, the commands and the pack go at once, and the advertisement is read
    // after them: a round trip less. receive-pack writes its advertisement before it reads.
    let advertisement = match known {
        Some(known) => Advertisement {
            refs: known.refs.clone(),
            capabilities: ASSUMED.iter().map(|c| c.to_string()).collect(),
            shallow: known.shallow.clone(),
        },
        None => read_advertisement(stream)?,
    };
    let old = |refname: &str| {
        let advertised = advertisement.refs.iter().find(|(_, name)| name == refname);
        advertised.map(|(old, _)| old.clone()).unwrap_or_else(|| ZERO_ID.to_string())
    };
    let updates: Vec<(String, Update)> =
        [Some(source), build].into_iter().flatten().map(|update| (old(update.refname), update)).collect();
    let commands: Vec<&(String, Update)> = updates.iter().filter(|(old, update)| old != update.sha).collect();
    if commands.is_empty() {
        // The server already has every commit under its ref: no command, no pack.
        return write_flush(stream).map(|()| Sent::default()).map_err(PushError::Lost);
    }
    let advertisement = &advertisement;
    if !advertisement.capabilities.iter().any(|cap| cap == "report-status") {
        return Err(PushError::NoReportStatus);
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
    // No `agent=`: it is optional, and its ~25 bytes are a tenth of a one-line change's push.

    // The bases: every advertised tip that exists here, the build output's own ref first (the
    // previous release's binaries are what the new ones are deltas against). Not the refs that
    // keep older releases' commits from git gc (`KEPT_REFS`): their binaries are older versions
    // of the same files, and each is one more delta search over a whole binary (a push of a
    // 5 MB binary took 30% longer with them).
    let exists = |tip: &str| git2::Oid::from_str(tip).is_ok_and(|oid| repo.odb().is_ok_and(|odb| odb.exists(oid)));
    let mut advertised: Vec<&(String, String)> =
        advertisement.refs.iter().filter(|(_, name)| !name.starts_with(KEPT_REFS)).collect();
    advertised.sort_by_key(|(_, name)| Some(name.as_str()) != build.map(|build| build.refname));
    let haves: Vec<&str> =
        advertised.iter().map(|(tip, _)| tip.as_str()).filter(|tip| *tip != ZERO_ID && exists(tip)).collect();
    let mut shallow = shallow_roots(repo, source.sha, &haves, &advertisement.shallow);
    let mut cut = advertisement.shallow.clone();
    // A fetched release commit has no parent here: no walk goes below it, and the deployed
    // commit's tree travels against its trees (as from a clone that knows nothing the server has).
    let fetched = bases.map(|bases| bases.tip.as_str()).filter(|tip| haves.contains(tip));
    if let Some(tip) = fetched {
        cut.push(tip.to_string());
        shallow = vec![source.sha.to_string()];
    }
    // git's receive-pack updates (and reports) only the first ref of a push that brings shallow
    // roots: then only the release commit's ref, which carries the deployed commit all the same
    // (the branch follows on the next deploy).
    let commands: Vec<&(String, Update)> = match (shallow.is_empty(), build) {
        (false, Some(build)) => commands.into_iter().filter(|(_, update)| update.refname == build.refname).collect(),
        _ => commands,
    };
    if commands.is_empty() {
        // The release commit's ref is already at it (the same tree built again within the
        // second: the same commit), and the deployed commit comes with it: nothing to send.
        return write_flush(stream).map(|()| Sent::default()).map_err(PushError::Lost);
    }
    // Shallow roots come first: commits whose parents the pack does not carry.
    for root in &shallow {
        write_pkt(stream, format!("shallow {root}\n").as_bytes()).map_err(PushError::Lost)?;
    }
    for (index, (old, update)) in commands.iter().enumerate() {
        // The capabilities ride on the first command only.
        let capabilities = if index == 0 { format!("\0{}", capabilities.join(" ")) } else { String::new() };
        let command = format!("{old} {} {}{capabilities}\n", update.sha, update.refname);
        write_pkt(stream, command.as_bytes()).map_err(PushError::Lost)?;
    }
    write_flush(stream).map_err(PushError::Lost)?;

    let alternate = fetched.and(bases).map(Bases::objects);
    let spec = PackSpec {
        source: source.sha,
        build: build.map(|build| build.sha),
        haves,
        shallow,
        cut,
        ofs_delta,
        alternate: alternate.as_deref(),
    };
    let sent = match shared {
        Some(shared) => shared.pack(repo, &spec).and_then(|spooled| spooled.send(stream, pack)),
        None => send_pack(repo, &spec, stream, pack),
    };
    if sent.is_ok() {
        pack(PackProgress::Sent);
    }
    let refnames: Vec<&str> = commands.iter().map(|(_, update)| update.refname).collect();
    match sent {
        Ok(sent) => read_after(stream, known.is_some())
            .and_then(|()| read_report(stream, side_band))?
            .judge(&refnames)
            .map(|()| sent),
        // A server that refuses what it reads (a malformed object) stops reading before the
        // pack ends: its report, if it sent one, says why.
        Err(err) => match read_after(stream, known.is_some()).and_then(|()| read_report(stream, side_band)) {
            Ok(report) => Err(report.judge(&refnames).err().unwrap_or(err)),
            Err(_) => Err(err),
        },
    }
}
