# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Restarts this server's services from the release `current` points at, then watches them: each
# must stay up, its main process the same, for `settle` tenths of a second. A socket unit keeps
# its listener through the restart, so connections wait in its backlog instead of being refused;
# a socket whose unit changed (or that is not listening) is stopped and started with its service.
# Expects (set before it): `services`, words `name:scope:socket` (`socket` is `-` for a service
# without one), `system_services` (those of system scope), `settle`, `units_out` (a file holding
# what units.sh printed, removed here); and common.sh's functions. A system-scope service is only
# restarted (through the sudo rule): root manages its socket.
# Prints nothing on success; on failure, what the service did and its journal lines since the
# restart on stderr, and exits 1.
changed_sockets=$(sed -n 's/^socket-changed //p' "$units_out" | tr '\n' ' ')
kept=$(sed -n 's/^kept-service //p' "$units_out" | tr '\n' ' ')
rm -f "$units_out"
# Going back put back the kept units (user scope): those services, and the system-scope ones.
if [ -n "$kept" ]; then
  for word in $system_services; do
    case " $kept " in *" $word "*) ;; *) kept="$kept $word" ;; esac
  done
  services=$kept
fi
since=$(date '+%Y-%m-%d %H:%M:%S')
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
  echo "service \`$name\` did not stay up after its restart: it is $state ($sub); its process $how; its lines since the restart:" >&2
  journal "$scope" "$name.service" --since "$since" -n 15 --no-pager -o cat >&2 2>/dev/null
}
watched=
for entry in $services; do
  IFS=: read -r name scope socket <<END
$entry
END
  if [ "$scope" = user ] && [ "$socket" != - ]; then
    case " $changed_sockets " in
      *" $name "*) renew=1 ;;
      *) if sc user is-active --quiet "$name.socket"; then renew=0; else renew=1; fi ;;
    esac
    if [ "$renew" -eq 1 ]; then
      # A listener that changed (or is new) takes the service's restart with it: systemd keeps
      # no open socket for a socket unit changed while it ran, and refuses to start one beside
      # a service already running.
      sc user stop "$name.service" "$name.socket" 2>/dev/null
      if ! sc user start "$name.socket"; then
        echo "service \`$name\`: its socket \`$name.socket\` did not start:" >&2
        journal user "$name.socket" --since "$since" -n 5 --no-pager -o cat >&2 2>/dev/null
        exit 1
      fi
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
