# shellcheck shell=sh disable=SC2154,SC2034 # its values are set, and `went_back` read, by the script it is part of
# Going back to the release a server had (see `GO_BACK` in confirm.rs for what each function
# does). Expects: `d`, `state`, `release`, `previous`, `user`, and `self` if set (else `$$`).
# Defines `hold_switch`, `drop_switch`, `forget_marker`, `go_back`, `switch_back`; sets
# `went_back`, `waited`, `unnamed`, `holder`, `gone`, `link`, `status`.
hold_switch() {
  [ -d "$state/lock" ] || return 0
  waited=0
  unnamed=0
  until mkdir "$state/lock/switching" 2>/dev/null; do
    [ -d "$state/lock" ] || return 0
    holder=""
    { read -r holder < "$state/lock/switching/pid"; } 2>/dev/null
    case "$holder" in
      # Taken a moment ago, its pid not written yet; or by one killed right then.
      ''|*[!0-9]*) unnamed=$((unnamed + 1)); gone=$([ "$unnamed" -ge 20 ] && echo 1) ;;
      *) unnamed=0; gone=$(kill -0 "$holder" 2>/dev/null || echo 1) ;;
    esac
    if [ -n "$gone" ]; then
      # One at a time: the rename succeeds for one of those who found it stale.
      if mv "$state/lock/switching" "$state/lock/switching.stale.${self:-$$}" 2>/dev/null; then
        rm -rf "$state/lock/switching.stale.${self:-$$}"
      fi
      continue
    fi
    waited=$((waited + 1))
    # A minute at most: then it goes on (as it did before the lock had this).
    [ "$waited" -lt 600 ] || return 0
    sleep 0.1 2>/dev/null || sleep 1
  done
  { echo "${self:-$$}" > "$state/lock/switching/pid"; } 2>/dev/null
  return 0
}
drop_switch() {
  holder=""
  { read -r holder < "$state/lock/switching/pid"; } 2>/dev/null
  if [ "$holder" = "${self:-$$}" ]; then rm -rf "$state/lock/switching"; fi
}
forget_marker() {
  if grep -qxF "release=$release" "$state/unconfirmed" 2>/dev/null; then rm -f "$state/unconfirmed"; fi
}
go_back() {
  hold_switch
  switch_back
  status=$?
  drop_switch
  return "$status"
}
switch_back() {
  went_back=0
  case "$(readlink "$d/current" 2>/dev/null)" in
    */releases/"$release") ;;
    *) forget_marker; echo "not-switched $release"; return 0 ;;
  esac
  if [ -z "$previous" ] || [ ! -d "$d/releases/$previous" ]; then
    # It stays live, but it failed: marked bad, so that nothing takes it for a good release.
    if ! grep -qxF "$release" "$state/bad" 2>/dev/null; then echo "$release" >> "$state/bad"; fi
    echo "cannot-revert no earlier release to go back to"; return 1
  fi
  link="$d/releases/.current.$$"
  rm -f "$link"
  if ! { ln -s "$d/releases/$previous" "$link" && mv -T "$link" "$d/current"; }; then
    rm -f "$link"; echo "cannot-revert the switch failed"; return 1
  fi
  forget_marker
  echo "$release" >> "$state/bad"
  printf '%s rolled back to release %s\n' "$user" "$previous" >> "$d/revisions.log"
  went_back=1
  echo "reverted $release $previous"
}
