//! The wire of git's receive-pack protocol: pkt-lines, the ref advertisement the server opens
//! with, and the `report-status` it ends with (on the side band, with what the server printed).

use std::io::{self, Read, Write};

/// The refs and capabilities a receive-pack server advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// `(sha, refname)` pairs, in the order sent.
    pub refs: Vec<(String, String)>,
    pub capabilities: Vec<String>,
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

/// How an error begins when the connection ended before the server's report.
pub(in crate::transport) const CLOSED_BEFORE_REPORT: &str = "the server closed before confirming the push";

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
    pub(super) fn judge(&self, refnames: &[&str]) -> Result<(), String> {
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
pub(super) fn read_report<S: Read>(stream: &mut S, side_band: bool) -> Result<Report, String> {
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

pub(super) fn write_pkt<W: Write>(stream: &mut W, payload: &[u8]) -> io::Result<()> {
    stream.write_all(format!("{:04x}", payload.len() + 4).as_bytes())?;
    stream.write_all(payload)
}

pub(super) fn write_flush<W: Write>(stream: &mut W) -> io::Result<()> {
    stream.write_all(b"0000")?;
    stream.flush()
}

/// How an error begins when the connection ended while the push was being sent.
pub(in crate::transport) const LOST: &str = "the connection to the server was lost";

pub(super) fn lost(err: io::Error) -> String {
    format!("{LOST}: {err}")
}
