# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# Keeps `repo/` from growing without bound. Every deploy brings a release commit; a push of
# fewer than 100 objects arrives loose, each binary whole, and nothing removed them.
# `tidy_repo` runs in the lock's keeper after a confirmed deploy, once its deployer is gone (off
# the deploy's path): when loose objects or packs have piled up, it points refs
# (`refs/xtask-kept/{release,source}/<release>`) at the commits of each release still on disk
# (what the next release reuses, and the subjects `releases` shows), drops the refs of releases
# that are gone, and runs `git gc --prune=now` at the lowest priority: whatever no ref reaches
# goes. (Rollback reads nothing from `repo/`: a release directory is whole.)
# It never runs beside a deploy. It holds `$state/tidying`, not the lock, and starts only while
# nobody holds the lock; a deploy that takes the lock stops it (`stop_tidying`, in the
# preflight). Each makes its own directory first and then looks for the other's, so one of them
# always sees the other. A git gc cut short leaves lock and temporary files, which are removed,
# and objects as they were (it deletes a pack or a loose object only once a new pack holds it,
# or when no ref reaches it).
# Expects: `d`, `state`, and the lock helpers (`start_time`, `alive`, `has_line`).
tidy_repo() {
  repo="$d/repo"
  loose=0 size=0 packs=0
  while IFS=': ' read -r key value; do
    case "$key" in count) loose=$value ;; size) size=$value ;; packs) packs=$value ;; esac
  done <<EOF
$(git --git-dir="$repo" count-objects -v 2>/dev/null)
EOF
  # Due at a MiB of loose objects (a binary or two), 256 of them, or 8 packs.
  [ "$size" -ge 1024 ] || [ "$loose" -ge 256 ] || [ "$packs" -ge 8 ] || return 0
  # It runs in a process group of its own, so that stopping it stops every git it starts;
  # without `setsid` it could not be stopped whole, and it does not run.
  command -v setsid >/dev/null 2>&1 || return 0
  tidying="$state/tidying"
  mine="tidying=$$ $(start_time "$$")"
  # Made whole, its `info` in it, by one rename: who finds the directory finds who holds it.
  rm -rf "$tidying.$$"
  mkdir -m 700 "$tidying.$$" 2>/dev/null || return 0
  echo "$mine" > "$tidying.$$/info"
  if ! mv -T "$tidying.$$" "$tidying" 2>/dev/null; then
    holder=""
    { read -r holder < "$tidying/info"; } 2>/dev/null
    # shellcheck disable=SC2086 # pid and start time
    if alive ${holder#tidying=}; then rm -rf "$tidying.$$"; return 0; fi
    # Left by a keeper that died (a reboot, a kill): its git gc, if it still runs, stops too;
    # by the next deploy's preflight, if one holds the lock.
    if [ -d "$state/lock" ]; then rm -rf "$tidying.$$"; return 0; fi
    stop_tidying
    mv -T "$tidying.$$" "$tidying" 2>/dev/null || { rm -rf "$tidying.$$"; return 0; }
  fi
  if [ -d "$state/lock" ]; then rm -rf "$tidying"; return 0; fi
  # Kept: each release's commit as its tree was recorded (the build output's, with `reuse`),
  # and its REVISION (the deployed commit, whose subject `releases` shows).
  if ! {
    git --git-dir="$repo" for-each-ref --format='%(refname)' refs/xtask-kept/ | while IFS= read -r ref; do
      [ -d "$d/releases/${ref##*/}" ] || echo "delete $ref"
    done
    for r in "$d"/releases/[0-9]*; do
      name=${r##*/}
      case "$name" in *[!0-9]*) continue ;; esac
      for kind in release source; do
        commit=""
        case "$kind" in
          release) { read -r commit < "$state/tree.$name"; } 2>/dev/null ;;
          source) { read -r commit < "$r/REVISION"; } 2>/dev/null ;;
        esac
        case "$commit" in *[!0-9a-f]*|'') continue ;; esac
        # Only a commit the repository has: a release an older tool made may name none.
        if git --git-dir="$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
          echo "update refs/xtask-kept/$kind/$name $commit"
        fi
      done
    done
  } | git --git-dir="$repo" update-ref --stdin 2>/dev/null; then
    # Without every ref, git gc could take what a kept release needs.
    rm -rf "$tidying"
    return 0
  fi
  low=""
  command -v nice >/dev/null 2>&1 && low="nice -n 19"
  command -v ionice >/dev/null 2>&1 && low="ionice -c 3 $low"
  # Not once a deploy took the lock (it waits for the line below, or for this process to end).
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; return 0; fi
  setsid sh -c "exec $low git --git-dir=\"\$1\" gc --prune=now --quiet" sh "$repo" </dev/null >/dev/null 2>&1 &
  gc=$!
  echo "gc=$gc $(start_time "$gc")" >> "$tidying/info"
  # A deploy that took the lock between the look above and the start stops it (it waits for
  # the line just written); this stops it too, whatever that deploy saw.
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then kill -KILL -"$gc" 2>/dev/null; fi
  wait "$gc"
  # Unless a deploy stopped it (and removed it).
  if has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; fi
}
# Stops the tidying of `repo/` under way, if any, and removes what a git gc cut short leaves.
# Called by a deploy once it holds the lock.
stop_tidying() {
  tidying="$state/tidying"
  [ -d "$tidying" ] || return 0
  tries=0
  while :; do
    holder=""
    gc=""
    [ -d "$tidying" ] || return 0
    { while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in tidying=*) holder=${line#tidying=} ;; gc=*) gc=${line#gc=} ;; esac
    done < "$tidying/info"; } 2>/dev/null
    # Between making its directory and starting git gc, the tidying writes nothing else, and
    # gives up when it sees the lock: a moment (its refs' update at most).
    # shellcheck disable=SC2086 # pid and start time
    if [ -n "$gc" ] || [ -z "$holder" ] || ! alive $holder || [ "$tries" -ge 300 ]; then break; fi
    sleep 0.1 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  rm -rf "$tidying"
  [ -n "$gc" ] || return 0
  # shellcheck disable=SC2086 # pid and start time
  set -- $gc
  if alive "$1" "${2:-}"; then
    # At once (git takes a second or more to act on TERM mid-repack, which the deploy would
    # wait for); what git leaves then, its lock and temporary files, goes below.
    kill -KILL -"$1" 2>/dev/null
    tries=0
    while group_runs "$1" && [ "$tries" -lt 40 ]; do
      sleep 0.05 2>/dev/null || sleep 1
      tries=$((tries + 1))
    done
  fi
  # Nothing else works in `repo/` without the lock: every lock file there is one git gc left.
  find "$d/repo/" -name '*.lock' -type f -exec rm -f {} + 2>/dev/null
  rm -f "$d/repo"/objects/pack/.tmp-* "$d/repo"/objects/pack/tmp_* "$d/repo/gc.pid" 2>/dev/null
  return 0
}
# Whether a process of group $1 still runs (not a zombie: git's children, orphaned when it
# dies, wait for init to reap them, which some inits do late or never).
group_runs() {
  for stat in /proc/[0-9]*/stat; do
    { read -r line < "$stat"; } 2>/dev/null || continue
    # shellcheck disable=SC2086 # the fields after the command's name
    set -- "$1" ${line##*) }
    [ "${4:-}" = "$1" ] && [ "${2:-}" != Z ] && return 0
  done
  return 1
}
