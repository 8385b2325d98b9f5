//! A client of git's receive-pack protocol (the push half of the v0 smart protocol), over any
//! byte stream: read the ref advertisement, send one update command, stream a thin pack made by
//! `git pack-objects --thin`, read the `report-status`.
//!
//! The pack's bases are every advertised tip that also exists locally, as `git send-pack` does,
//! so only what the server lacks travels, as deltas against what it has.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// The object name git uses for "no object" (a ref being created).
const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// The refs and capabilities a receive-pack server advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// `(sha, refname)` pairs, in the order sent.
    pub refs: Vec<(String, String)>,
    pub capabilities: Vec<String>,
}

/// Pushes commit `sha` of `repo` to `refname` through `stream`, which must already be connected
/// to a receive-pack server (for git://, after the request line). The ref is set whatever it
/// held before (a deploy may go back in history). A ref the server refuses is an error.
/// Returns how many objects the pack held (0 when the server had the commit already).
///
/// With `shared`, the pack comes from it (made once for every push that needs the same one);
/// without, `git pack-objects` streams straight into `stream`.
pub fn push<S: Read + Write>(
    repo: &git2::Repository,
    stream: &mut S,
    sha: &str,
    refname: &str,
    shared: Option<&SharedPacks>,
) -> Result<u64, String> {
    let advertisement = read_advertisement(stream)?;
    let old = advertisement
        .refs
        .iter()
        .find(|(_, name)| name == refname)
        .map(|(old, _)| old.as_str())
        .unwrap_or(ZERO_ID)
        .to_string();
    if old == sha {
        // The server already has the commit under that ref: no command, no pack.
        return write_flush(stream).map(|()| 0).map_err(lost);
    }
    if !advertisement.capabilities.iter().any(|cap| cap == "report-status") {
        return Err("the server does not offer `report-status`, so a push could not be confirmed".to_string());
    }
    let ofs_delta = advertisement.capabilities.iter().any(|cap| cap == "ofs-delta");
    let mut capabilities = vec!["report-status".to_string()];
    if ofs_delta {
        capabilities.push("ofs-delta".to_string());
    }
    capabilities.push(format!("agent=xtask-deploy/{}", env!("CARGO_PKG_VERSION")));
    let command = format!("{old} {sha} {refname}\0{}\n", capabilities.join(" "));
    write_pkt(stream, command.as_bytes()).map_err(lost)?;
    write_flush(stream).map_err(lost)?;

    let haves: Vec<&str> = advertisement
        .refs
        .iter()
        .map(|(tip, _)| tip.as_str())
        .filter(|tip| *tip != ZERO_ID)
        .filter(|tip| git2::Oid::from_str(tip).is_ok_and(|oid| repo.odb().is_ok_and(|odb| odb.exists(oid))))
        .collect();
    let objects = match shared {
        Some(shared) => shared.pack(repo, sha, &haves, ofs_delta)?.send(stream)?,
        None => send_thin_pack(repo, sha, &haves, ofs_delta, stream)?,
    };
    read_report(stream, refname)?;
    Ok(objects)
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

/// A pack on disk: its bytes and its object count.
struct Spooled {
    file: File,
    objects: u64,
}

impl SharedPacks {
    /// How many packs were made so far.
    pub fn made(&self) -> usize {
        let packs = self.packs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        packs.values().filter(|pack| pack.get().is_some()).count()
    }

    /// The pack of `sha` minus `haves`, made now unless an earlier push made it.
    fn pack(
        &self,
        repo: &git2::Repository,
        sha: &str,
        haves: &[&str],
        ofs_delta: bool,
    ) -> Result<Arc<Spooled>, String> {
        let mut bases = haves.to_vec();
        bases.sort_unstable();
        bases.dedup();
        let key = format!("{}\n{sha}\n{ofs_delta}\n{}", repo.path().display(), bases.join(" "));
        let slot = {
            let mut packs = self.packs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(packs.entry(key).or_default())
        };
        slot.get_or_init(|| {
            let mut file =
                tempfile::tempfile().map_err(|err| format!("cannot make a temporary file for the pack: {err}"))?;
            let objects = send_thin_pack(repo, sha, &bases, ofs_delta, &mut file)?;
            Ok(Arc::new(Spooled { file, objects }))
        })
        .clone()
    }
}

impl Spooled {
    /// Writes the whole pack into `stream` (reading at offsets: several pushes read it at once).
    fn send<W: Write>(&self, stream: &mut W) -> Result<u64, String> {
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
        Ok(self.objects)
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

/// Streams `git pack-objects --thin` for `sha` minus `haves` into `stream`; returns the number
/// of objects in the pack, from its header.
fn send_thin_pack<W: Write>(
    repo: &git2::Repository,
    sha: &str,
    haves: &[&str],
    ofs_delta: bool,
    stream: &mut W,
) -> Result<u64, String> {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(repo.path()).args(["pack-objects", "--thin", "--stdout", "--revs", "-q"]);
    if ofs_delta {
        command.arg("--delta-base-offset");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `git pack-objects`: {err}"))?;
    let mut revisions = format!("{sha}\n");
    for have in haves {
        revisions.push_str(&format!("^{have}\n"));
    }
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(revisions.as_bytes()).map_err(|err| format!("cannot feed `git pack-objects`: {err}"))?;
    drop(stdin);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    // The header is `PACK`, a version and the object count, each 4 bytes (big-endian).
    let mut header = [0u8; 12];
    let copied = stdout
        .read_exact(&mut header)
        .and_then(|()| stream.write_all(&header))
        .and_then(|()| io::copy(&mut stdout, stream));
    if copied.is_err() {
        // The server is gone: pack-objects would block on a pipe nobody reads. Stop it first.
        let _ = child.kill();
    }
    drop(stdout);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|err| format!("`git pack-objects` was lost: {err}"))?;
    copied.map_err(lost)?;
    if !status.success() {
        return Err(format!("`git pack-objects` failed ({status}): {}", stderr.trim()));
    }
    stream.flush().map_err(lost)?;
    Ok(u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]])))
}

/// Reads `report-status`: `unpack ok`, then `ok <ref>` or `ng <ref> <reason>`.
fn read_report<S: Read>(stream: &mut S, refname: &str) -> Result<(), String> {
    let mut lines = Vec::new();
    while let Some(line) =
        read_pkt(stream).map_err(|err| format!("the server closed before confirming the push: {err}"))?
    {
        lines.push(String::from_utf8_lossy(&line).trim_end_matches('\n').to_string());
    }
    let unpack = lines.first().map(String::as_str).unwrap_or("");
    if unpack != "unpack ok" {
        return Err(format!("the server could not store the pushed objects: `{unpack}`"));
    }
    for line in &lines[1..] {
        if let Some(rest) = line.strip_prefix("ng ") {
            let (name, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            return Err(format!("the server rejected `{name}`: {reason}"));
        }
    }
    if !lines.iter().any(|line| line == &format!("ok {refname}")) {
        return Err(format!("the server did not confirm `{refname}`: {}", lines.join("; ")));
    }
    Ok(())
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

fn lost(err: io::Error) -> String {
    format!("the connection to the server was lost: {err}")
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
        let err = send_thin_pack(&repo, &commit.to_string(), &[], true, &mut Gone).unwrap_err();
        assert!(err.contains("connection to the server was lost"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn report_status_rejections_name_the_ref_and_reason() {
        let mut input = pkt("unpack ok\n");
        input.extend(pkt("ng refs/heads/main pre-receive hook declined\n"));
        input.extend_from_slice(b"0000");
        let err = read_report(&mut input.as_slice(), "refs/heads/main").unwrap_err();
        assert_eq!(err, "the server rejected `refs/heads/main`: pre-receive hook declined");
        let mut input = pkt("unpack index-pack abnormal exit\n");
        input.extend_from_slice(b"0000");
        assert!(read_report(&mut input.as_slice(), "refs/heads/main").unwrap_err().contains("index-pack"));
    }
}
