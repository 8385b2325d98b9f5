# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Restarts this server's services from the release `current` points at, then watches them: each
# must stay up, its main process the same, for `settle` tenths of a second. A socket unit keeps
# its listener through the restart, so connections wait in its backlog instead of being refused.
# Expects (set before it): `services`, words `name:scope:socket` (`socket` is `-` for a service
# without one), `settle`; and common.sh's functions.
# Prints nothing on success; on failure, what the service did and its last journal lines on stderr,
# and exits 1.
explain() {
  name=$1
  scope=$2
  state=$(sc "$scope" show -p ActiveState --value "$name.service" 2>/dev/null)
  sub=$(sc "$scope" show -p SubState --value "$name.service" 2>/dev/null)
  code=$(sc "$scope" show -p ExecMainCode --value "$name.service" 2>/dev/null)
  status=$(sc "$scope" show -p ExecMainStatus --value "$name.service" 2>/dev/null)
  case "$code" in
    1) how="exited with status $status" ;;
    2 | 3) how="was killed by signal $status" ;;
    *) how="ended (code $code, status $status)" ;;
  esac
  echo "service \`$name\` did not stay up after its restart: it is $state ($sub); its process $how; its last lines:" >&2
  journal "$scope" "$name.service" -n 15 --no-pager -o cat >&2 2>/dev/null
}
watched=
for entry in $services; do
  IFS=: read -r name scope socket <<END
$entry
END
  if [ "$socket" != - ] && ! sc "$scope" is-active --quiet "$name.socket"; then
    if ! privileged "$scope" start "$name.socket"; then
      echo "service \`$name\`: its socket \`$name.socket\` did not start" >&2
      exit 1
    fi
  fi
  if ! privileged "$scope" restart "$name.service"; then
    explain "$name" "$scope"
    exit 1
  fi
  pid=$(sc "$scope" show -p MainPID --value "$name.service")
  watched="$watched $name:$scope:$pid"
done
tick=0
while [ "$tick" -lt "$settle" ]; do
  sleep 0.1
  tick=$((tick + 1))
  for entry in $watched; do
    IFS=: read -r name scope pid <<END
$entry
END
    now=$(sc "$scope" show -p MainPID --value "$name.service")
    if [ "$now" != "$pid" ] || [ "$now" = 0 ] || ! sc "$scope" is-active --quiet "$name.service"; then
      explain "$name" "$scope"
      exit 1
    fi
  done
done
exit 0
