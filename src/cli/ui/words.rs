//! The words and figures of the status lines: durations, sizes, what a push sent, and text a
//! server sent made printable.

use std::time::Duration;

pub(super) fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

pub(super) fn bytes(count: u64) -> String {
    if count >= 1024 * 1024 {
        format!("{:.1} MiB", count as f64 / (1024.0 * 1024.0))
    } else if count >= 10 * 1024 {
        format!("{:.1} KiB", count as f64 / 1024.0)
    } else {
        format!("{count} bytes")
    }
}

/// How often a long push prints its progress where its server has no line of its own to show
/// it in (not a terminal).
pub(super) const PUSH_LINE_EVERY: Duration = Duration::from_secs(10);

/// What a push sent: bytes, objects, and the build output's share when there was one; and what
/// came down first as delta bases, if anything did.
pub(super) fn pushed(bytes_sent: u64, build_bytes: Option<u64>, objects: u64, bytes_received: u64) -> String {
    let objects = if objects == 1 { "1 object".to_string() } else { format!("{objects} objects") };
    let sent = match build_bytes {
        Some(0) => format!("{}, {objects}", bytes(bytes_sent)),
        Some(build) => format!("{}, {objects}, {} of them build output", bytes(bytes_sent), bytes(build)),
        None => format!("{}, {objects}, build output not counted apart", bytes(bytes_sent)),
    };
    match bytes_received {
        0 => sent,
        down => format!("{sent}; {} down first: its release commit, as delta bases", bytes(down)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_push_is_told_in_words_that_fit_its_numbers() {
        assert_eq!(super::pushed(300, Some(0), 1, 0), "300 bytes, 1 object");
        assert_eq!(super::pushed(300, Some(0), 4, 0), "300 bytes, 4 objects");
        assert_eq!(
            super::pushed(300, Some(100), 4, 20480),
            "300 bytes, 4 objects, 100 bytes of them build output; 20.0 KiB down first: its release commit, as delta bases"
        );
    }
}

/// `text` with every control character but newline and tab shown as `\u{..}`: what a server
/// prints (a hook's output, an error) cannot move the cursor or repaint lines to pass for the
/// tool's own (a fake block of root's steps, say).
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_a_server_sends_are_shown_not_obeyed() {
        assert_eq!(super::printable("ok\n\tnext"), "ok\n\tnext");
        assert_eq!(super::printable("\u{1b}[2Jroot\r"), "\\u{1b}[2Jroot\\u{d}");
    }
}
