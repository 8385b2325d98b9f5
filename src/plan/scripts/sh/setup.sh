# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# `deploy-setup`: creates `releases/`, `shared/` (with the directories given as positional
# parameters, relative to it: `linked_dirs` and the parents of `linked_files`) and the bare
# `repo/`; running it again changes nothing. Prints `created <what>` for each thing it made.
# `repo/` (the whole history) and `.xtask-deploy/` (the lock, its holder, the deploy's state)
# are made private to the deploy user, also when they exist already; releases and `shared/`
# keep the user's umask, as the app reads them.
# Expects: `d`, `require_git`, the positional parameters. Sets: `dir`.
require_git
for dir in "$d" "$d/releases" "$d/shared" "$d/.xtask-deploy"; do
  if [ ! -d "$dir" ]; then mkdir -p "$dir"; echo "created $dir"; fi
done
for dir in "$@"; do
  dir="$d/shared/$dir"
  if [ ! -d "$dir" ]; then mkdir -p "$dir"; echo "created $dir"; fi
done
if [ -e "$d/repo" ]; then
  if [ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" != true ]; then
    echo "\`$d/repo\` exists but is not a bare git repository: move it away and run deploy-setup again" >&2
    exit 1
  fi
else
  git init --quiet --bare "$d/repo"
  echo "created $d/repo"
fi
chmod go= "$d/repo" "$d/.xtask-deploy"
