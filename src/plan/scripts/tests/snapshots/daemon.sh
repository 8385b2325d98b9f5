set -u
d=/srv/app
pidfile="$d/.xtask-deploy/daemon.40123.pid"
[ -d "$d"/repo/modules/lib ] || git init --quiet --bare "$d"/repo/modules/lib || exit 1
# The user this daemon runs as (the effective uid), read without starting a process.
uid=""
{ while read -r key real effective rest; do [ "$key" = Uid: ] && uid=$effective; done < /proc/self/status; } 2>/dev/null
if [ -z "$uid" ]; then echo "cannot read /proc/self/status: the daemon could not tell this deploy's connections" >&2; exit 1; fi
exec 3<&0
# git daemon runs its access hook through a shell, which finds the hook's text in the
# environment (no file, no second layer of quoting); the environment of another user's process
# cannot be read.
export XTASK_DEPLOY_ACCESS_HOOK='refuse() { echo "not a connection of this deploy"; exit 1; }
if [ "$1" != receive-pack ]; then echo "this daemon only receives a deploy'"'s push\"; exit 1; fi
case \""'${REMOTE_PORT:-}" in '"''|*["'!0-9]*) refuse ;; esac
[ "${REMOTE_ADDR:-}" = 127.0.0.1 ] || refuse
awk -v from="$REMOTE_PORT" -v to="${XTASK_DEPLOY_PORT:-}" -v uid="${XTASK_DEPLOY_UID:-}" '"'
function port(e, hex, n, i) {
  hex = substr(e, index(e, \":\") + 1)
  n = 0
  for (i = 1; i <= length(hex); i++) n = n * 16 + index(\"0123456789ABCDEF\", substr(hex, i, 1)) - 1
  return n
}
function loopback(e) { e = substr(e, 1, index(e, \":\") - 1); return e == \"0100007F\" || e == \"7F000001\" }
NR > 1 && "'$4 == "01" && port($2) == from + 0 && port($3) == to + 0 && loopback($2) && loopback($3) {
  if (uid != "" && $8 == uid) mine = 1
}
END { exit mine ? 0 : 1 }'"' /proc/net/tcp 2>/dev/null || refuse
exit 0" XTASK_DEPLOY_PORT=40123 XTASK_DEPLOY_UID="$uid"
timeout -k 1 900 git -c receive.fsckObjects=true -c receive.shallowUpdate=true daemon --verbose --listen=127.0.0.1 --port=40123 --strict-paths \
  --export-all --enable=receive-pack --disable=upload-pack --disable=upload-archive \
  --forbid-override=receive-pack --forbid-override=upload-pack --forbid-override=upload-archive \
  --access-hook='sh -c "$XTASK_DEPLOY_ACCESS_HOOK" xtask-deploy-access' --informative-errors --init-timeout=30 \
  --timeout=900 "$d/repo" "$d"/repo/modules/lib </dev/null &
daemon=$!
echo "$daemon" > "$pidfile"
# `timeout` leads its own process group: the daemon, its per-connection children, receive-pack
# and the repository's hooks. At the channel's EOF (the normal end of every deploy) the group
# gets SIGTERM; `timeout -k 1` SIGKILLs the daemon if it is still there a second later, and
# once `timeout` is gone this shell SIGKILLs the rest of the group: a connection's children
# ignore SIGTERM (git daemon's doing), and may outlive the daemon (SIGPIPE on its log once
# the channel is closed). No `sleep` here: it would outlive the deploy.
( while read -r _; do :; done <&3; kill -TERM -"$daemon" "$daemon" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
# The daemon keeps the channel's stderr; this shell must not write to it once the deployer may be
# gone (`wait` reports a killed daemon on stderr, and SIGPIPE would stop the clean-up below).
exec 3<&- >/dev/null 2>&1
wait "$daemon"
status=$?
# git dies with 128 when it cannot listen on its port (another process holds it): a status of
# its own tells the deployer to try another port.
if [ "$status" = 128 ]; then status=6; fi
kill "$watchdog" 2>/dev/null
kill -KILL -"$daemon" 2>/dev/null
rm -f "$pidfile"
exit $status
