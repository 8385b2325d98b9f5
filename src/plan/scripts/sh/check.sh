# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# What `deploy-check` judges, changing nothing (a probe directory is made and removed at once to
# learn whether `deploy_to`, or its nearest existing parent, is writable). Prints
# `writable yes|no <dir>`, `git [<version>]`, `unset <part>` for each part setup makes that is
# missing, `missing-file <index>` and `missing-dir <index>` for linked paths absent from
# `shared/`, `disk <free KiB> <current release KiB> <repo KiB>`, and the current release as
# `current <path>` and `release <name> <sha>` (for the health check).
# Expects: `d`, `state`, the lock helpers, `report_lock`, and the linked paths as positional parameters, two each: `file` or `dir`, and the
# path relative to `shared/`. Sets: `p`, `probe`, `files`, `dirs`, `free`, `size`, `repo`,
# `target`, `rev`.
report_lock
p="$d"
while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done
if [ -d "$p" ] && probe=$(mktemp -d "$p/.xtask-deploy-check.XXXXXX" 2>/dev/null); then
  rmdir "$probe"; echo "writable yes $p"
else
  echo "writable no $p"
fi
if command -v git >/dev/null 2>&1; then echo "git $(git --version 2>&1 | head -n 1)"; else echo git; fi
[ -d "$d/releases" ] || echo "unset releases/"
[ -d "$d/shared" ] || echo "unset shared/"
[ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" = true ] || echo "unset repo/"
files=0
dirs=0
while [ "$#" -ge 2 ]; do
  case "$1" in
    file) [ -e "$d/shared/$2" ] || echo "missing-file $files"; files=$((files + 1)) ;;
    dir) [ -d "$d/shared/$2" ] || echo "missing-dir $dirs"; dirs=$((dirs + 1)) ;;
  esac
  shift 2
done
free=$(df -Pk "$p" 2>/dev/null | awk 'NR == 2 { print $4 }')
size=0
if [ -d "$d/current/" ]; then
  size=$(du -sk --apparent-size "$d/current/" 2>/dev/null || du -sk "$d/current/" 2>/dev/null)
  size=${size%%[!0-9]*}
fi
repo=$(du -sk "$d/repo" 2>/dev/null)
repo=${repo%%[!0-9]*}
echo "disk ${free:-unknown} ${size:-0} ${repo:-unknown}"
# Shell builtins only (no `readlink`): where `current` leads, and that release's REVISION.
if [ -L "$d/current" ] && target=$(cd -P "$d/current" 2>/dev/null && pwd -P); then
  echo "current $target"
  rev=-
  { read -r rev < "$target/REVISION"; } 2>/dev/null || true
  echo "release ${target##*/} ${rev:--}"
fi
exit 0
