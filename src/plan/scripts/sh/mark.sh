# shellcheck shell=sh disable=SC2154 # `step_marker` is set by the header before it
# `mark INDEX`: where step INDEX of a batch starts (or, after the last step, where the batch
# ended well): `<step_marker> <index>` on a line of its own, after an empty line (so it starts a
# line whatever the step before printed last), on stdout and on stderr, so that each stream
# tells exactly which of its bytes are which step's. Expects: `step_marker`.
mark() {
  printf '\n%s %s\n' "$step_marker" "$1"
  printf '\n%s %s\n' "$step_marker" "$1" >&2
}
