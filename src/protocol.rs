//! The lock keeper's protocol: the lines the deployer writes on the keeper's channel
//! ([`Say`], one encoder) and the lines the keeper answers with on its stdout ([`Answer`], one
//! parser). Each word is written here once: the keeper's shell (`plan::scripts::lock` and
//! `keeper`) is given its words from these types, and a test reads the keeper's `case` arms
//! back against [`Say::WORDS`], so a word nobody sends or nobody reads fails it.
//!
//! The keeper's stderr carries one more answer: [`BEAT_ANSWER`], the byte it writes for each
//! [`Say::Beat`].

use std::time::Duration;

/// What the deployer tells a server's lock keeper: one line each (a batch's text follows its
/// line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say<'a> {
    /// The deployer is still there; answered with [`BEAT_ANSWER`] on stderr.
    Beat,
    /// Run a batch of steps whose end line is `end`: its text follows, base64-encoded on one
    /// line (the length counts that line's newline).
    Run {
        /// The batch's end marker.
        end: &'a str,
        /// The batch's text.
        script: &'a str,
    },
    /// Run a batch given as runs of the kept file's lines (`shell::kept`), which follow.
    Kept {
        /// The batch's end marker.
        end: &'a str,
        /// The runs, the last line ending with a newline.
        runs: &'a str,
    },
    /// Stop the batch that runs.
    Stop,
    /// A push is under way, with this time limit: the deployer's beats may wait behind it.
    Pushing(Duration),
    /// The push ended, with or without success: the daemon may stop.
    Pushed {
        /// Whether it succeeded.
        ok: bool,
    },
    /// Confirm the deploy: answered with [`Answer::Confirmed`] or [`Answer::NotConfirmed`].
    Confirm,
}

impl Say<'_> {
    /// Every first word of a line the deployer sends, as the keeper matches it.
    pub const WORDS: [&'static str; 7] = ["beat", "run", "kept", "stop", "pushing", "pushed", "confirm"];

    /// The line's first word.
    pub fn word(&self) -> &'static str {
        let index = match self {
            Say::Beat => 0,
            Say::Run { .. } => 1,
            Say::Kept { .. } => 2,
            Say::Stop => 3,
            Say::Pushing(_) => 4,
            Say::Pushed { .. } => 5,
            Say::Confirm => 6,
        };
        Say::WORDS[index]
    }

    /// The bytes to write on the keeper's stdin.
    pub fn encode(&self) -> Vec<u8> {
        let word = self.word();
        let text = match self {
            Say::Beat | Say::Stop | Say::Confirm => format!("{word}\n"),
            Say::Run { end, script } => {
                let encoded = crate::shell::base64(script);
                format!("{word} {end} {}\n{encoded}\n", encoded.len() + 1)
            }
            Say::Kept { end, runs } => format!("{word} {end} {}\n{runs}", runs.len()),
            Say::Pushing(limit) => format!("{word} {}\n", limit.as_secs()),
            Say::Pushed { ok } => format!("{word} {}\n", if *ok { "ok" } else { "failed" }),
        };
        text.into_bytes()
    }
}

/// The byte the keeper writes on stderr for each [`Say::Beat`].
pub const BEAT_ANSWER: u8 = 6;

/// A line the lock keeper prints on stdout about the deploy (besides the state lines of the
/// preflight, `plan::parse_state`, and the batches' own output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It holds the lock and has reported the server's state.
    Ready,
    /// How the deploy's git daemon started.
    Daemon(DaemonStarted),
    /// It took the confirmation.
    Confirmed,
    /// The release was not live and unconfirmed any more when the confirmation came: the
    /// server had gone back by itself.
    NotConfirmed,
    /// An old release the confirmation chose to remove (once the lock is released).
    Prune(String),
}

impl Answer {
    /// [`Answer::Ready`]'s line.
    pub const READY: &'static str = "@@xtask-deploy-ready";
    /// [`Answer::Confirmed`]'s line.
    pub const CONFIRMED: &'static str = "@@xtask-deploy-confirmed";
    /// [`Answer::NotConfirmed`]'s line.
    pub const NOT_CONFIRMED: &'static str = "@@xtask-deploy-not-confirmed";
    /// The first word of the line of [`DaemonStarted::Port`].
    pub const DAEMON: &'static str = "daemon";
    /// The first word of the line of [`DaemonStarted::NoPort`].
    pub const DAEMON_NO_PORT: &'static str = "daemon-no-port";
    /// The first word of the line of [`DaemonStarted::Failed`].
    pub const DAEMON_FAILED: &'static str = "daemon-failed";
    /// The first word of [`Answer::Prune`]'s line.
    pub const PRUNE: &'static str = "prune";

    /// The answer a line is, if it is one.
    pub fn parse(line: &str) -> Option<Answer> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            Answer::READY if rest.is_empty() => Some(Answer::Ready),
            Answer::CONFIRMED if rest.is_empty() => Some(Answer::Confirmed),
            Answer::NOT_CONFIRMED if rest.is_empty() => Some(Answer::NotConfirmed),
            Answer::DAEMON => rest.trim().parse().ok().map(|port| Answer::Daemon(DaemonStarted::Port(port))),
            Answer::DAEMON_NO_PORT => Some(Answer::Daemon(DaemonStarted::NoPort(rest.to_string()))),
            Answer::DAEMON_FAILED => Some(Answer::Daemon(DaemonStarted::Failed(rest.to_string()))),
            Answer::PRUNE if !rest.is_empty() => Some(Answer::Prune(rest.to_string())),
            _ => None,
        }
    }

    /// Every answer among `text`'s lines, in order.
    pub fn all(text: &str) -> impl Iterator<Item = Answer> + '_ {
        text.lines().filter_map(Answer::parse)
    }

    /// How the daemon started, if `text` says.
    pub fn daemon(text: &str) -> Option<DaemonStarted> {
        Answer::all(text).find_map(|answer| match answer {
            Answer::Daemon(started) => Some(started),
            _ => None,
        })
    }

    /// The old releases a confirmation chose to remove, as `text` names them.
    pub fn pruned(text: &str) -> Vec<String> {
        Answer::all(text)
            .filter_map(|answer| match answer {
                Answer::Prune(release) => Some(release),
                _ => None,
            })
            .collect()
    }
}

/// How the deploy's git daemon started, as its keeper said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonStarted {
    /// It listens on this port of the server's 127.0.0.1.
    Port(u16),
    /// Every port tried was taken; what git daemon said last.
    NoPort(String),
    /// It could not start for another reason; what it said.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_is_one_line_led_by_its_word_and_a_batch_follows_its_length() {
        let lines = [
            (Say::Beat, "beat\n".to_string()),
            (Say::Stop, "stop\n".to_string()),
            (Say::Confirm, "confirm\n".to_string()),
            (Say::Pushing(Duration::from_secs(900)), "pushing 900\n".to_string()),
            (Say::Pushed { ok: true }, "pushed ok\n".to_string()),
            (Say::Pushed { ok: false }, "pushed failed\n".to_string()),
            (Say::Kept { end: "@@m-end", runs: "r 1 2\n" }, "kept @@m-end 6\nr 1 2\n".to_string()),
        ];
        for (say, line) in lines {
            assert_eq!(String::from_utf8(say.encode()).unwrap(), line);
        }
        let run = String::from_utf8(Say::Run { end: "@@m-end", script: "echo hi" }.encode()).unwrap();
        let (head, body) = run.split_once('\n').unwrap();
        let length: usize = head.strip_prefix("run @@m-end ").unwrap().parse().unwrap();
        assert_eq!(length, body.len(), "the length counts the encoded line and its newline");
        let words: Vec<&str> = [
            Say::Beat,
            Say::Run { end: "", script: "" },
            Say::Kept { end: "", runs: "" },
            Say::Stop,
            Say::Pushing(Duration::ZERO),
            Say::Pushed { ok: true },
            Say::Confirm,
        ]
        .iter()
        .map(Say::word)
        .collect();
        assert_eq!(words, Say::WORDS, "each command has its own word");
    }

    #[test]
    fn the_keepers_lines_are_read_back_and_other_lines_are_not_answers() {
        let text = "release 1 a\n@@xtask-deploy-ready\ndaemon 9418\nprune 20261201000000\n\
                    @@xtask-deploy-confirmed\ndaemon-failed no git\ndaemon-no-port taken\n\
                    @@xtask-deploy-not-confirmed\ndaemon x\nprune\n@@xtask-deploy-ready now\n";
        let answers: Vec<Answer> = Answer::all(text).collect();
        assert_eq!(
            answers,
            [
                Answer::Ready,
                Answer::Daemon(DaemonStarted::Port(9418)),
                Answer::Prune("20261201000000".into()),
                Answer::Confirmed,
                Answer::Daemon(DaemonStarted::Failed("no git".into())),
                Answer::Daemon(DaemonStarted::NoPort("taken".into())),
                Answer::NotConfirmed,
            ]
        );
        assert_eq!(Answer::daemon(text), Some(DaemonStarted::Port(9418)));
        assert_eq!(Answer::pruned(text), ["20261201000000"]);
    }
}
