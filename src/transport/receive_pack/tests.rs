//! The protocol's parsing and the pack's failure modes, on in-memory streams: no server needed.

use std::io::{self, Write};

use super::pack::{send_pack, PackSpec};
use super::protocol::{read_report, write_pkt, SAID_LIMIT};
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
    assert_eq!(err.to_string(), "the git daemon refused the push: access denied or repository not exported: /x");
    let err = read_advertisement(&mut &b"00"[..]).unwrap_err().to_string();
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
    let spec = PackSpec { source: &source, build: None, haves: Vec::new(), shallow: Vec::new(), cut: Vec::new(), ofs_delta: true, alternate: None };
    let err = send_pack(&repo, &spec, &mut Gone, &mut |_| {}).unwrap_err();
    assert!(err.cut_short(), "{err}");
    assert!(err.to_string().starts_with("the connection to the server was lost: "), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn report_status_rejections_name_the_ref_and_reason() {
    let mut input = pkt("unpack ok\n");
    input.extend(pkt("ng refs/heads/main pre-receive hook declined\n"));
    input.extend_from_slice(b"0000");
    let report = read_report(&mut input.as_slice(), false).unwrap();
    let err = report.judge(&["refs/heads/main"]).unwrap_err().to_string();
    assert_eq!(err, "the server rejected `refs/heads/main`: pre-receive hook declined");
    let mut input = pkt("unpack index-pack abnormal exit\n");
    input.extend_from_slice(b"0000");
    let report = read_report(&mut input.as_slice(), false).unwrap();
    assert!(report.judge(&["refs/heads/main"]).unwrap_err().to_string().contains("index-pack"));
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
    let err = read_report(&mut input.as_slice(), true).unwrap().judge(&["refs/heads/main"]).unwrap_err().to_string();
    assert_eq!(
        err,
        "the server could not store the pushed objects: `unpack index-pack abnormal exit`: the pushed commit \
         holds an object git refuses (`git fsck --strict` in your clone names it); deploy a commit without it; \
         the server said: error: object 9de2: duplicateEntries: contains duplicate file entries; \
         fatal: fsck error in packed object"
    );
    let mut input = band(3, b"out of disk space\n");
    input.extend_from_slice(b"0000");
    assert_eq!(read_report(&mut input.as_slice(), true).unwrap_err().to_string(), "the server failed: out of disk space");
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
