# shellcheck shell=sh disable=SC2154 # `d` is set by the script it is part of
# The server's readiness for a deploy: `require_git` exits 3 (`EXIT_NO_GIT`) without git, with
# the fix; `require_setup` exits 4 (`EXIT_NOT_SET_UP`) when `deploy-setup` did not run. Expects:
# `d`.
require_git() {
  if ! command -v git >/dev/null 2>&1; then
    echo "git is not installed on the server: install it (for example \`apt-get install git\`)" >&2
    exit 3
  fi
}
require_setup() {
  if [ ! -d "$d/releases" ] || [ ! -f "$d/repo/HEAD" ] || [ ! -d "$d/repo/objects" ] || [ ! -d "$d/repo/refs" ]; then
    echo "\`$d\` is not set up for deploys: run \`cargo xtask deploy-setup\` first" >&2
    exit 4
  fi
}
