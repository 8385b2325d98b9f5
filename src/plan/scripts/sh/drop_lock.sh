# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `drop_lock`: releases the lock `$lock` at once, by a rename, then removes it: a write into it
# that races with the removal (the keeper notes every line it reads there) cannot keep a
# directory named `lock`, without its `info`, in place.
# Expects: `state`, `lock`. Sets: `gone`.
drop_lock() {
  gone="$state/.lock-gone.${self:-$$}"
  if mv -T "$lock" "$gone" 2>/dev/null; then rm -rf "$gone"; else rm -rf "$lock"; fi
}
