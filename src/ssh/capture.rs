//! What the deployer keeps of a remote step's output while it reads all of it: a bounded part
//! of each stream, however much the step prints, and the step-done markers of a batch, found as
//! the bytes arrive (so that none is lost with the bytes that are not kept).
//!
//! **Architecture Invariant:** what is kept of a step's output is bounded; every byte is read
//! (the server never waits for the deployer) and counted, and what is not kept is said to be
//! dropped, with its size.

use std::collections::VecDeque;

use crate::shell::STEP_DONE;

/// Bytes of a step's stdout kept from its start. What the deployer parses there (step-done
/// markers, `removed`, `reverted`, health results, the state a preflight reports) is printed
/// by our own scripts, in lines far shorter than this; hooks print on stderr.
pub(super) const STDOUT_HEAD: usize = 256 * 1024;

/// Bytes kept from the end of each stream: what an error message shows.
pub(super) const TAIL: usize = 16 * 1024;

/// The longest line that can be a step-done marker; a longer one is skipped whole.
const MARKER_LINE_MAX: usize = 64;

/// One output stream of a remote step as kept: its first `head_limit` bytes and its last
/// `tail_limit` bytes; the bytes between are counted, not kept.
pub(super) struct Kept {
    head: Vec<u8>,
    head_limit: usize,
    tail: VecDeque<u8>,
    tail_limit: usize,
    dropped: u64,
}

impl Kept {
    /// Keeps the first `head_limit` and the last `tail_limit` bytes of what is pushed.
    pub(super) fn new(head_limit: usize, tail_limit: usize) -> Kept {
        Kept { head: Vec::new(), head_limit, tail: VecDeque::new(), tail_limit, dropped: 0 }
    }

    /// Takes the next bytes of the stream.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let taken = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
        }
        if bytes.len() > self.tail_limit {
            // All that the tail held, and the start of `bytes`, is dropped.
            self.dropped += (self.tail.len() + bytes.len() - self.tail_limit) as u64;
            self.tail.clear();
            bytes = &bytes[bytes.len() - self.tail_limit..];
        }
        let over = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..over);
        self.dropped += over as u64;
        self.tail.extend(bytes);
    }

    /// The text kept: the head, then, if bytes were dropped, a line saying how many, then the
    /// tail. Bytes that are not UTF-8 (or a character cut at a boundary) become U+FFFD.
    pub(super) fn into_text(self) -> String {
        let mut bytes = self.head;
        if self.dropped > 0 {
            let kept = if self.head_limit == 0 {
                format!("the last {} follow", size(self.tail_limit))
            } else {
                format!("the first {} and the last {} are kept", size(self.head_limit), size(self.tail_limit))
            };
            let at_line_start = bytes.is_empty() || bytes.ends_with(b"\n");
            let note = format!("[xtask-deploy: {} bytes of output dropped here; {kept}]\n", self.dropped);
            bytes.extend_from_slice(if at_line_start { note } else { format!("\n{note}") }.as_bytes());
        }
        bytes.extend(self.tail);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `bytes` as people read it: in KiB when a whole number of them.
fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// Counts the steps of a batch that printed their step-done marker, from its stdout as it
/// arrives. Only the marker of the step that is running counts (`<STEP_DONE> <its index>` on a
/// line of its own), and only for the batch's `steps`: a step that prints any marker, of its own
/// or of another step, once or a thousand times, does not make the batch's steps last longer.
pub(super) struct StepMarkers {
    steps: usize,
    done: usize,
    /// The current line, while it may still be a marker.
    line: Vec<u8>,
    /// Whether the current line grew too long to be a marker.
    overlong: bool,
}

impl StepMarkers {
    /// Markers for a batch of `steps` steps.
    pub(super) fn new(steps: usize) -> StepMarkers {
        StepMarkers { steps, done: 0, line: Vec::new(), overlong: false }
    }

    /// The steps done so far.
    pub(super) fn done(&self) -> usize {
        self.done
    }

    /// Reads the next bytes of stdout; returns whether another step of the batch has started
    /// (the marker of a step that is not the last).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut started = false;
        for chunk in bytes.split_inclusive(|&byte| byte == b'\n') {
            let (text, ends_line) = match chunk.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (chunk, false),
            };
            if !self.overlong {
                if self.line.len() + text.len() > MARKER_LINE_MAX {
                    self.overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(text);
                }
            }
            if ends_line {
                if !self.overlong && self.done < self.steps && self.line == self.expected() {
                    self.done += 1;
                    started |= self.done < self.steps;
                }
                self.line.clear();
                self.overlong = false;
            }
        }
        started
    }

    /// The marker line of the step running now.
    fn expected(&self) -> Vec<u8> {
        format!("{STEP_DONE} {}", self.done).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(head: usize, tail: usize, chunks: &[&[u8]]) -> (String, u64) {
        let mut kept = Kept::new(head, tail);
        for chunk in chunks {
            kept.push(chunk);
        }
        let dropped = kept.dropped;
        (kept.into_text(), dropped)
    }

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(kept(8, 8, &[b"0123", b"4567", b"89ab"]), ("0123456789ab".to_string(), 0));
        assert_eq!(kept(0, 16, &[b"0123456789", b"abcdef"]), ("0123456789abcdef".to_string(), 0));
    }

    #[test]
    fn the_head_and_the_tail_are_kept_and_the_rest_counted() {
        let (text, dropped) = kept(4, 4, &[b"head", b"middle-", b"bytes", b"tail"]);
        assert_eq!(dropped, 12);
        assert_eq!(text, "head\n[xtask-deploy: 12 bytes of output dropped here; the first 4 bytes and the last 4 bytes are kept]\ntail");
        // A chunk larger than the tail, after the tail filled.
        let (text, dropped) = kept(0, 3, &[b"ab", b"cdefghij", b"k"]);
        assert_eq!((text.lines().last(), dropped), (Some("ijk"), 8));
        // Without a head, the note says what follows.
        let (text, _) = kept(0, 2048, &[&[b'y'; 5000]]);
        assert!(
            text.starts_with("[xtask-deploy: 2952 bytes of output dropped here; the last 2 KiB follow]\n"),
            "{text}"
        );
        assert_eq!(text.len(), text.lines().next().unwrap().len() + 1 + 2048);
    }

    #[test]
    fn what_is_kept_stays_bounded_however_much_is_pushed() {
        let mut kept = Kept::new(1024, 1024);
        let chunk = [b'y'; 32 * 1024];
        for _ in 0..1000 {
            kept.push(&chunk);
        }
        assert_eq!(kept.dropped, 1000 * 32 * 1024 - 2048);
        assert!(kept.head.len() + kept.tail.len() == 2048 && kept.tail.capacity() < 64 * 1024);
    }

    #[test]
    fn only_the_running_steps_marker_counts_and_only_for_the_batchs_steps() {
        let mut markers = StepMarkers::new(3);
        // Another step's marker, a marker inside a line, a longer number: none counts.
        assert!(!markers.feed(format!("{STEP_DONE} 1\nsay {STEP_DONE} 0\n{STEP_DONE} 00\n").as_bytes()));
        assert_eq!(markers.done(), 0);
        // Step 0's marker, split across reads, starts step 1; repeating it changes nothing.
        assert!(!markers.feed(format!("{STEP_DONE} ").as_bytes()));
        assert!(markers.feed(format!("0\n{STEP_DONE} 0\n").as_bytes()));
        assert_eq!(markers.done(), 1);
        assert!(markers.feed(format!("{STEP_DONE} 1\n").as_bytes()));
        // The last step's marker counts it done, and starts nothing; a fourth is no step.
        assert!(!markers.feed(format!("{STEP_DONE} 2\n{STEP_DONE} 3\n").as_bytes()));
        assert_eq!(markers.done(), 3);
    }

    #[test]
    fn a_marker_at_the_end_of_an_overlong_line_does_not_count() {
        let mut markers = StepMarkers::new(2);
        let mut line = vec![b'x'; 100];
        line.extend_from_slice(STEP_DONE.as_bytes());
        assert!(!markers.feed(&line));
        assert!(!markers.feed(b" 0\n"));
        assert!(markers.feed(format!("{STEP_DONE} 0\n").as_bytes()));
    }
}
