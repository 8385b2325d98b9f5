//! The wire of git's receive-pack protocol: pkt-lines, the ref advertisement the server opens
//! with, and the `report-status` it ends with (on the side band, with what the server printed).

use std::io::{self, Read, Write};

use crate::transport::error::{PushError, Said};

/// The refs and capabilities a receive-pack server advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// `(sha, refname)` pairs, in the order sent.
    pub refs: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    /// The repository's shallow roots (`shallow <sha>` lines after the refs), if it is shallow.
    pub shallow: Vec<String>,
}

/// Reads the ref advertisement up to its flush packet.
pub fn read_advertisement<S: Read>(stream: &mut S) -> Result<Advertisement, PushError> {
    let mut advertisement = Advertisement::default();
    let mut first = true;
    while let Some(line) = read_pkt(stream).map_err(PushError::NoAdvertisement)? {
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\n');
        if let Some(message) = line.strip_prefix("ERR ") {
            return Err(PushError::Refused(message.to_string()));
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
            return Err(PushError::MalformedAdvertisement(line.to_string()));
        };
        if sha == "shallow" {
            advertisement.shallow.push(name.to_string());
        } else if name != "capabilities^{}" {
            advertisement.refs.push((sha.to_string(), name.to_string()));
        }
    }
    Ok(advertisement)
}

/// How much of what the server printed is kept for an error message (its end).
pub(super) const SAID_LIMIT: usize = 4096;

/// The server's `report-status`, and what it printed on the side band, if any.
#[derive(Debug, Default)]
pub(super) struct Report {
    lines: Vec<String>,
    pub(super) said: String,
}

impl Report {
    /// `Ok` when the objects were stored and each of `refnames` was updated; else the server's
    /// reason, with what it printed.
    pub(super) fn judge(&self, refnames: &[&str]) -> Result<(), PushError> {
        let lines = &self.lines;
        let unpack = lines.first().map(String::as_str).unwrap_or("");
        if unpack != "unpack ok" {
            // git's own words: its fsck refused an object of the pack.
            let fsck = self.said.contains("fsck error");
            return Err(PushError::NotStored { unpack: unpack.to_string(), fsck, said: self.said() });
        }
        for line in &lines[1..] {
            if let Some(rest) = line.strip_prefix("ng ") {
                let (name, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let (refname, reason) = (name.to_string(), reason.to_string());
                return Err(PushError::Rejected { refname, reason, said: self.said() });
            }
        }
        for refname in refnames {
            if !lines.iter().any(|line| line == &format!("ok {refname}")) {
                let (refname, report) = (refname.to_string(), lines.clone());
                return Err(PushError::NotConfirmed { refname, report, said: self.said() });
            }
        }
        Ok(())
    }

    /// What the server printed, one line after another.
    fn said(&self) -> Said {
        Said(self.said.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_string).collect())
    }
}

/// Reads `report-status`: `unpack ok`, then `ok <ref>` or `ng <ref> <reason>` per ref. With
/// `side_band`, the report is band 1 of a side-band stream whose band 2 is what the server
/// printed (its last [`SAID_LIMIT`] bytes or more are kept) and band 3 a fatal error.
pub(super) fn read_report<S: Read>(stream: &mut S, side_band: bool) -> Result<Report, PushError> {
    let closed = PushError::ClosedBeforeReport;
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
            Some((3, rest)) => return Err(PushError::ServerFailed(String::from_utf8_lossy(rest).trim().to_string())),
            _ => return Err(PushError::MalformedSideBand),
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

pub(super) fn write_pkt<W: Write>(stream: &mut W, payload: &[u8]) -> io::Result<()> {
    stream.write_all(format!("{:04x}", payload.len() + 4).as_bytes())?;
    stream.write_all(payload)
}

pub(super) fn write_flush<W: Write>(stream: &mut W) -> io::Result<()> {
    stream.write_all(b"0000")?;
    stream.flush()
}

