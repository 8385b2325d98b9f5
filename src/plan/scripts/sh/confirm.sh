# shellcheck shell=sh disable=SC2154,SC2034,SC2015 # its values are set, and `unmark` read, by the script it is part of
# `confirm_deploy`: forgets the `unconfirmed` marker when it holds this deploy's token (so
# nothing goes back), prunes the releases beyond `keep_releases` (the ones marked bad first,
# then the oldest; never the current one), drops their marks, releases the lock, and prints
# `$answer_prune <name>` for each release pruned and `$answer_confirmed`; or, when the server
# went back by itself first, `$answer_not_confirmed` (and returns 1). Pruning renames a release
# to `releases/.pruned-<name>`; the keeper removes those once the deployer is gone.
# Expects: `d`, `state`, `ours`, `keep_releases`, the three `answer_` words, the lock helpers,
# `drop_lock`, `hold_switch`, `drop_switch` and `rewrite_marks`.
confirm_deploy() {
  # Not once the server went back by itself (the keeper's watch): then nothing is confirmed.
  hold_switch
  if ! has_line "$ours" "$state/unconfirmed"; then
    drop_switch
    echo "$answer_not_confirmed"
    return 1
  fi
  rm -f "$state/unconfirmed"
  drop_switch
  keep=$keep_releases
  count=0
  for r in "$d"/releases/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do [ -d "$r" ] && count=$((count + 1)); done
  excess=$((count - keep))
  now=$(readlink "$d/current" 2>/dev/null || true)
  # Release names are 14 digits, so the shell's sorted glob lists them oldest first.
  for pass in bad any; do
    for r in "$d"/releases/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
      [ "$excess" -gt 0 ] || break
      [ -d "$r" ] && [ "${now##*/}" != "${r##*/}" ] || continue
      if [ "$pass" = bad ] && ! has_line "${r##*/}" "$state/bad"; then continue; fi
      excess=$((excess - 1))
      mv "$r" "$d/releases/.pruned-${r##*/}" 2>/dev/null || rm -rf "$r"
      rm -f "$state/tree.${r##*/}"
      echo "$answer_prune ${r##*/}"
    done
  done
  # Marks of the releases just pruned go with them.
  unmark=""
  rewrite_marks
  lock="$state/lock"
  if has_line "$ours" "$lock/info"; then drop_lock; fi
  echo "$answer_confirmed"
}
