# shellcheck shell=sh disable=SC2154,SC2034,SC2010 # values set by the header, and `unmark` read by rewrite_marks; the names listed are filtered to 14 digits
# `cargo xtask rollback`'s switch: `current` goes to `$to`, or (`to` empty) to the newest older
# release not marked bad; the release it left is marked bad when `mark_left` is 1 (always when
# `to` is empty), the mark of the one it goes to is cleared, an unconfirmed deploy's marker is
# forgotten (this rollback holds the lock and decides which release is current), and
# `revisions.log` says who rolled back. Prints `rolled-back <from> <to>`, `revision <sha>`,
# `marked <from>` and `unmarked <to>`.
# Expects: `d`, `state`, `to`, `mark_left`, `user`, `switch_current`, `rewrite_marks`. Sets:
# `from`, `rel`, `candidate`, `unmark`, `rev`.
cd "$d" || exit 1
if [ ! -L current ]; then echo "\`$d/current\` does not exist: nothing to roll back" >&2; exit 1; fi
from=$(basename "$(readlink current)")
if [ -n "$to" ]; then
  rel=$to
  if [ ! -d "releases/$rel" ]; then echo "release \`$rel\` does not exist in \`$d/releases\`: \`cargo xtask releases\` lists them" >&2; exit 1; fi
  if [ "$rel" = "$from" ]; then echo "release \`$rel\` is already current" >&2; exit 1; fi
else
  rel=""
  for candidate in $(ls -1 releases | grep -E '^[0-9]{14}$' | sort -r); do
    [ "$candidate" -lt "$from" ] || continue
    if grep -qxF "$candidate" "$state/bad" 2>/dev/null; then continue; fi
    rel=$candidate
    break
  done
  if [ -z "$rel" ]; then
    echo "no earlier release that is not marked bad to roll back to (current: $from): pass --to <release>; \`cargo xtask releases\` lists them" >&2
    exit 1
  fi
fi
switch_current
if [ "$mark_left" = 1 ]; then
  echo "$from" >> "$state/bad"
  echo "marked $from"
fi
unmark=$rel
rewrite_marks
if [ -e "$state/unconfirmed" ]; then rm -f "$state/unconfirmed"; fi
printf '%s rolled back to release %s\n' "$user" "$rel" >> revisions.log
rev=-
{ read -r rev < "releases/$rel/REVISION"; } 2>/dev/null || true
echo "rolled-back $from $rel"
echo "revision ${rev:--}"
