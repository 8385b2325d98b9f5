//! What the deployer keeps of a remote step's output while it reads all of it: a bounded part
//! of each stream, however much the step prints; and, for a batch of steps, each step's part of
//! each stream, split at the markers the batch prints before each step, found as the bytes
//! arrive (so that none is lost with the bytes that are not kept).
//!
//! **Architecture Invariant:** what is kept of a step's output is bounded; every byte is read
//! (the server never waits for the deployer) and counted, and what is not kept is said to be
//! dropped, with its size.

use std::collections::VecDeque;

/// Bytes of a script's stdout kept from its start. What the deployer parses there (`switched`,
/// `reverted`, the state an inspection reports) is printed by our own scripts, in lines far
/// shorter than this.
pub(super) const STDOUT_HEAD: usize = 256 * 1024;

/// Bytes of each step's stdout kept from its start in a batch: our own steps print a few short
/// lines there (`switched`, health results); a hook's own output is shown to people.
pub(super) const STEP_STDOUT_HEAD: usize = 8 * 1024;

/// Bytes kept from the end of each stream: what an error message shows.
pub(super) const TAIL: usize = 16 * 1024;

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

    /// Takes back the last byte pushed if it is a newline.
    fn pop_newline(&mut self) {
        if self.tail.back() == Some(&b'\n') {
            self.tail.pop_back();
        } else if self.tail.is_empty() && self.head.last() == Some(&b'\n') {
            self.head.pop();
        }
    }

    /// The text kept: the head, then, if bytes were dropped, a line saying how many, then the
    /// tail. Bytes that are not UTF-8 (or a character cut at a boundary) become U+FFFD.
    pub(super) fn text(&self) -> String {
        let mut bytes = self.head.clone();
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
        bytes.extend(&self.tail);
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

/// One output stream of a batch, split into its steps' parts at the markers the batch prints
/// on both streams (see `plan::batch_script`): `<marker> <k>` on a line of its own before step
/// `k`, and `<marker> <steps>` after the last step. Only the next marker counts, by index and
/// with the batch's own `marker` (which holds a nonce): a step that prints a marker line, its
/// own or another step's, once or a thousand times, starts no step. The newline the batch
/// prints before each marker (so that the marker starts a line whatever the step printed
/// last) is not kept: each part is what its step printed. What the batch prints before the
/// first marker is kept with the first step.
pub(super) struct Split {
    steps: usize,
    /// The markers seen: each one starts a step, the last ends the batch.
    seen: usize,
    /// The marker line that comes next.
    expected: Vec<u8>,
    marker: String,
    head_limit: usize,
    tail_limit: usize,
    /// One per step that started (at least one); bytes go to the last.
    parts: Vec<Kept>,
    /// The current line, while it may still be the next marker (never longer than it).
    line: Vec<u8>,
    /// Whether the current line may still be the next marker.
    maybe_marker: bool,
}

impl Split {
    /// A stream of a batch of `steps` steps marked with `marker`, keeping the first `head_limit`
    /// and the last `tail_limit` bytes of each step's part.
    pub(super) fn new(marker: &str, steps: usize, head_limit: usize, tail_limit: usize) -> Split {
        Split {
            steps,
            seen: 0,
            expected: format!("{marker} 0").into_bytes(),
            marker: marker.to_string(),
            head_limit,
            tail_limit,
            parts: vec![Kept::new(head_limit, tail_limit)],
            line: Vec::new(),
            maybe_marker: true,
        }
    }

    /// The markers seen so far: step `k` has started once `k + 1` are; the batch ended well at
    /// `steps + 1`.
    pub(super) fn seen(&self) -> usize {
        self.seen
    }

    /// The text kept of step `step`'s part (empty for a step that has not started).
    pub(super) fn text(&self, step: usize) -> String {
        self.parts.get(step).map(Kept::text).unwrap_or_default()
    }

    /// Reads the next bytes of the stream. Only a line that starts with the marker's first
    /// byte is looked at closely; the bytes between such lines go to the step's part whole.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if !self.maybe_marker {
                let taken = self.next_line_like_a_marker(bytes);
                self.part().push(&bytes[..taken]);
                self.maybe_marker = self.seen <= self.steps && bytes[..taken].ends_with(b"\n");
                bytes = &bytes[taken..];
                continue;
            }
            let end = bytes.iter().position(|&byte| byte == b'\n').unwrap_or(bytes.len());
            let same = bytes[..end].iter().zip(&self.expected[self.line.len().min(self.expected.len())..]);
            let matching = same.take_while(|(byte, expected)| byte == expected).count();
            if matching < end {
                // Not the marker: the line so far is the step's.
                self.maybe_marker = false;
                let line = std::mem::take(&mut self.line);
                self.part().push(&line);
                continue;
            }
            self.line.extend_from_slice(&bytes[..end]);
            if end == bytes.len() {
                return;
            }
            bytes = &bytes[end + 1..];
            if self.line == self.expected {
                self.marker_seen();
            } else {
                // A line that is the start of the marker, and ends there.
                let line = std::mem::take(&mut self.line);
                self.part().push(&line);
                self.part().push(b"\n");
            }
            self.line.clear();
        }
    }

    /// Where in `bytes` (not at a line's start) the first line that starts with the marker's
    /// first byte starts; their length if none does.
    fn next_line_like_a_marker(&self, bytes: &[u8]) -> usize {
        let first = self.expected[0];
        let mut from = 0;
        while let Some(found) = bytes[from..].iter().position(|&byte| byte == first) {
            let at = from + found;
            if at > 0 && bytes[at - 1] == b'\n' {
                return at;
            }
            from = at + 1;
        }
        bytes.len()
    }

    /// Keeps what was held back (at the stream's end: it was no marker).
    pub(super) fn finish(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.part().push(&line);
    }

    /// The next marker ended its line: the newline printed before it goes, the next step (if
    /// any) gets a part of its own, and the marker after it is expected.
    fn marker_seen(&mut self) {
        self.part().pop_newline();
        self.seen += 1;
        if (2..=self.steps).contains(&self.seen) {
            self.parts.push(Kept::new(self.head_limit, self.tail_limit));
        }
        self.expected = format!("{} {}", self.marker, self.seen).into_bytes();
        self.maybe_marker = self.seen <= self.steps;
    }

    fn part(&mut self) -> &mut Kept {
        self.parts.last_mut().expect("there is always a part")
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
        (kept.text(), dropped)
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

    /// The parts of a stream of a batch of `steps` steps split by `Split` fed in `chunks`, and
    /// the markers seen.
    fn split(steps: usize, chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut split = Split::new("@@m-1f", steps, 1024, 1024);
        for chunk in chunks {
            split.feed(chunk);
        }
        split.finish();
        ((0..steps).map(|step| split.text(step)).collect(), split.seen())
    }

    #[test]
    fn a_stream_is_split_into_what_each_step_printed_at_the_markers() {
        // What the batch prints: a newline and the marker before each step and after the last;
        // the first step ends without a newline, the second with one, the third prints nothing.
        let stream = b"\n@@m-1f 0\nfirst\n@@m-1f 1\nsecond\n\n@@m-1f 2\n\n@@m-1f 3\n";
        let expected = vec!["first".to_string(), "second\n".to_string(), String::new()];
        assert_eq!(split(3, &[stream]), (expected.clone(), 4));
        // The same, a byte at a time: markers are found across reads.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split(3, &bytes), (expected, 4));
    }

    #[test]
    fn only_the_next_marker_of_the_batch_counts() {
        // Another step's marker, another batch's, a marker inside a line, a longer index, the
        // start of the marker: none counts, and each stays in the step's output.
        let noise = "@@m-1f 2\n@@m-00 1\nsay @@m-1f 1\n@@m-1f 10\n@@m-1f\n@\n";
        let stream = format!("\n@@m-1f 0\n{noise}\n@@m-1f 1\ndone");
        let (parts, seen) = split(2, &[stream.as_bytes()]);
        assert_eq!(seen, 2, "step 1 started, and did not end");
        assert_eq!(parts, vec![noise.to_string(), "done".to_string()]);
        // After the last marker, a marker line is only output.
        let (parts, seen) = split(1, &[b"\n@@m-1f 0\n\n@@m-1f 1\n@@m-1f 2\n"]);
        assert_eq!((parts, seen), (vec!["@@m-1f 2\n".to_string()], 2));
    }

    #[test]
    fn each_part_is_bounded_and_what_was_held_back_is_kept_at_the_end() {
        let mut split = Split::new("@@m-1f", 2, 4, 4);
        split.feed(b"\n@@m-1f 0\n");
        for _ in 0..100 {
            split.feed(&[b'y'; 1000]);
        }
        split.feed(b"\n\n@@m-1f 1\n\n\n@@m-");
        split.finish();
        let first = split.text(0);
        // The last 4 bytes of the stream before the marker's line hold the newline printed
        // before it, which is not the step's.
        assert!(first.starts_with("yyyy\n[xtask-deploy: 99994 bytes of output dropped here;"), "{first}");
        assert!(first.ends_with("]\nyy\n"), "{first}");
        // Two empty lines, then the start of a line cut off by the stream's end.
        assert_eq!(split.text(1), "\n\n@@m-");
    }
}
