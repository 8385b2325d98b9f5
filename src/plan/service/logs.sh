# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Prints the journal of this server's services, oldest first. Expects (set before it): `services`
# (words `name:scope:socket`), `lines` (how many of the last lines), `since` (empty, or a time
# journalctl reads), `follow` (1 to go on printing until the channel closes); and common.sh's
# functions.
scope=
units=
user_units=
for entry in $services; do
  IFS=: read -r name each _ <<END
$entry
END
  if [ -n "$scope" ] && [ "$scope" != "$each" ]; then
    echo "service logs cannot show user and system units of one server together: pick some with --service" >&2
    exit 2
  fi
  scope=$each
  units="$units -u $name.service"
  user_units="$user_units --user-unit $name.service"
done
set -- -o short-iso --no-pager -n "$lines"
[ -z "$since" ] || set -- "$@" --since "$since"
[ "$follow" != 1 ] || set -- "$@" -f
# shellcheck disable=SC2086 # unit names hold no blanks
if [ "$scope" = system ]; then
  exec journalctl $units "$@"
fi
# A user's units log to the user's journal; where the journal is not split by user, the system's
# holds their lines, under the user's units.
# shellcheck disable=SC2086
if journalctl --user -q -n 1 $units 2>/dev/null | grep -q .; then exec journalctl --user $units "$@"; fi
# shellcheck disable=SC2086
exec journalctl $user_units "$@"
