//! Remote shell scripts and the quoting of every value put into them.
//!
//! **Architecture Invariant:** a [`RemoteScript`] is the only thing [`crate::ssh`] will execute,
//! and values enter one only through [`quote`], so nothing reaches a remote shell unquoted.

use std::fmt;

/// A POSIX `sh` script to run on a server, with a short name for messages and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteScript {
    /// What the script does, in a few words (`deploy-setup`, `release`...).
    pub name: &'static str,
    /// The script text, every interpolated value already quoted.
    pub text: String,
}

impl fmt::Display for RemoteScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "# {}\n{}", self.name, self.text)
    }
}

/// Quotes `value` as one word for a POSIX shell (via the `shlex` crate). A shell cannot receive
/// a NUL byte at all; config validation refuses one earlier, and here such a value becomes the
/// empty word, so that it fails closed instead of being cut short.
pub fn quote(value: &str) -> String {
    match shlex::try_quote(value) {
        Ok(quoted) => quoted.into_owned(),
        Err(_) => "''".to_string(),
    }
}

/// The command line sent to the server's login shell to run `script` under `sh`.
pub fn exec_line(script: &RemoteScript) -> String {
    format!("exec sh -c {}", quote(&script.text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What `sh` makes of `quote(value)`: the value itself, if quoting is right.
    fn round_trip(value: &str) -> String {
        let script = format!("printf '%s' {}", quote(value));
        let out = Command::new("sh").arg("-c").arg(&script).output().expect("run sh");
        assert!(out.status.success(), "sh failed on {script:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_reach_the_shell_unchanged() {
        for value in [
            "plain",
            "with space",
            "it's",
            "double \" quote",
            "$(touch /tmp/xtask-deploy-pwned)",
            "`id`",
            "line\nbreak",
            "-leading-dash",
            "back\\slash",
            "*?[glob]~",
            "",
            "semi;colon&amp|pipe",
        ] {
            assert_eq!(round_trip(value), value, "value {value:?}");
        }
        assert!(!std::path::Path::new("/tmp/xtask-deploy-pwned").exists());
    }

    #[test]
    fn exec_line_runs_the_script_text_through_sh() {
        let script = RemoteScript { name: "test", text: "x='a b'; printf '%s' \"$x\"".to_string() };
        let out = Command::new("sh").arg("-c").arg(exec_line(&script)).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b");
    }
}
