# shellcheck shell=sh disable=SC2154,SC2086 # values set by the header before it; `checked_git` splits on purpose
# `git receive-pack` on `$d/$repo` (created bare first when `create` is 1) in the foreground of
# its exec channel, for `transport = "exec"`. Its process group is named in a pid file, so that
# the lock keeper can stop it (and a server-side hook it runs) when the deployer is gone, since
# receive-pack itself notices that only when it next reads.
# Expects: `d`, `repo`, `create`, `checked_git`. Sets: `pidfile`, `status`.
repo="$d/$repo"
if [ "$create" = 1 ]; then [ -d "$repo" ] || git init --quiet --bare "$repo" || exit 1; fi
pidfile="$d/.xtask-deploy/receive-pack.$$.pid"
echo "$$" > "$pidfile"
$checked_git receive-pack "$repo"
status=$?
rm -f "$pidfile"
exit $status
