//! Several scripts run as one remote command (one round trip), each step marked on both streams
//! so that the deployer tells each step's output and time apart.

use crate::shell::{quote, RemoteScript};

/// Joins `scripts` into one, run as one remote command: each in its own subshell (its `set -e`,
/// `cd` and traps stay its own), stopping at the first that fails. Before each it prints
/// [`mark_step`] with its index, and after the last one with their count. Run it with
/// `Connection::output_steps(batch, scripts.len(), marker, ...)`, which keeps each step's
/// output apart and gives each its own step time.
pub fn batch_script(scripts: &[&RemoteScript], marker: &str) -> RemoteScript {
    let mut text = String::new();
    for (index, script) in scripts.iter().enumerate() {
        text.push_str(&mark_step(marker, index));
        // Not `( ... ) || exit`: a subshell on the left of `||` would ignore its own `set -e`.
        text.push_str(&format!(
            "(\n{}\n)\nstatus=$?\nif [ \"$status\" -ne 0 ]; then exit \"$status\"; fi\n",
            script.text.trim_end()
        ));
    }
    text.push_str(&mark_step(marker, scripts.len()));
    let name = if scripts.len() == 1 { scripts[0].name } else { "batch" };
    RemoteScript { name, text }
}

/// The shell line that marks where step `index` of a batch starts (or, after the last step,
/// where the batch ended well): `<marker> <index>` on a line of its own, after an empty line
/// (so it starts a line whatever the step before printed last), on stdout and on stderr, so
/// that each stream tells exactly which of its bytes are which step's.
pub fn mark_step(marker: &str, index: usize) -> String {
    let marker = quote(marker);
    format!("printf '\\n%s %s\\n' {marker} {index}; printf '\\n%s %s\\n' {marker} {index} >&2\n")
}
