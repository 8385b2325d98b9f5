# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Reports this server's services, read-only. Expects (set before it): `d`, `services` (words
# `name:scope:socket`, as restart.sh); and common.sh's functions.
# Prints `current NAME` (the release `current` points at), then per service `service NAME KEY=VALUE`
# lines: systemd's ActiveState, SubState, MainPID, ActiveEnterTimestamp, MemoryCurrent and
# NRestarts, `Release=` (the release its process runs from) and `Socket=` (the socket's state).
current=$(readlink "$d/current" 2>/dev/null) && echo "current ${current##*/}"
for entry in $services; do
  IFS=: read -r name scope socket <<END
$entry
END
  sc "$scope" show -p ActiveState -p SubState -p MainPID -p ActiveEnterTimestamp -p MemoryCurrent -p NRestarts \
    "$name.service" 2>/dev/null | while IFS= read -r line; do echo "service $name $line"; done
  pid=$(sc "$scope" show -p MainPID --value "$name.service" 2>/dev/null)
  if [ -n "$pid" ] && [ "$pid" != 0 ]; then
    # A service started through `current` keeps the release it started in as its directory.
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) && echo "service $name Release=${cwd##*/}"
  fi
  if [ "$socket" != - ]; then echo "service $name Socket=$(sc "$scope" is-active "$name.socket" 2>/dev/null)"; fi
done
exit 0
