//! Several scripts run as one remote command (one round trip), each step marked on both streams
//! so that the deployer tells each step's output and time apart.

use crate::shell::RemoteScript;

/// Joins `scripts` into one, run as one remote command: each in its own subshell (its `set -e`,
/// `cd` and traps stay its own), stopping at the first that fails. Before each it prints
/// [`mark_step`] with its index, and after the last one with their count. Run it with
/// `Connection::output_steps(batch, scripts.len(), marker, ...)`, which keeps each step's
/// output apart and gives each its own step time.
pub fn batch_script(scripts: &[&RemoteScript], marker: &str) -> RemoteScript {
    let mut text = marking(marker);
    for (index, script) in scripts.iter().enumerate() {
        text.push_str(&mark_step(index));
        // Not `( ... ) || exit`: a subshell on the left of `||` would ignore its own `set -e`.
        text.push_str(&["(\n", script.text.trim_end(), "\n)\n", STEP_END].concat());
    }
    text.push_str(&mark_step(scripts.len()));
    let name = if scripts.len() == 1 { scripts[0].name } else { "batch" };
    RemoteScript { name, text }
}

/// What ends each step of a batch: the batch stops at the first that failed, with its status.
const STEP_END: &str = "status=$?\nif [ \"$status\" -ne 0 ]; then exit \"$status\"; fi\n";

/// The header and the function `mark` (see the file's header) that a script marking its steps
/// with `marker` starts with.
pub fn marking(marker: &str) -> String {
    [crate::shell::header(&[("step_marker", marker)]), MARK.to_string()].concat()
}

/// The line that marks where step `index` of a batch starts (or, after the last step, where the
/// batch ended well), calling the function [`marking`] defines.
pub fn mark_step(index: usize) -> String {
    ["mark ", &index.to_string(), "\n"].concat()
}

/// `mark` (see the file's header).
const MARK: &str = include_str!("sh/mark.sh");
