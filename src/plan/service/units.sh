# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# The services' unit files on this server. What it does depends on `mode`:
# - `setup`: write the units the deploy user may write (user scope; any scope as root), remove
#   this app's units the config no longer has, reload systemd if one changed, enable them.
# - `apply` (a deploy's restart step, after the switch): the same, first keeping the units as
#   they were under `$state/units/<the release that was current>`, for going back.
# - `restore` (going back to release `$RELEASE`): put back the units kept for it, if any.
# - `verify` (a deploy, before the switch) and `check` (deploy-check): change nothing.
# Everything root must do (system scope) is only reported: the deployer writes root's steps
# itself, from the config, never from what a server says.
# Expects (set before it): `d`, `mode`, `app`, `user`; the positional parameters as triples:
# scope, unit file name (`web.service`), its text; and common.sh's functions.
# Prints tokens, one per line: `unit-written SCOPE FILE`, `unit-removed SCOPE FILE`,
# `socket-changed NAME` (a socket unit written or removed: its service must restart around it),
# `stale FILE` (would be rewritten), `unit-differs FILE` (system scope: root has not installed it
# as configured), `unit-foreign FILE` (a unit of that name is not this app's), `sudo-missing FILE`,
# `linger-off`, `no-systemctl`; in `restore` mode `kept-service NAME:SCOPE:SOCKET` for each service
# of the units put back. In `verify` mode, a problem is also a message on stderr, status 1.
state="$d/.xtask-deploy"
header="# Written by xtask-deploy for \`$app\` in \`$d\`:"
problems=
problem() {
  echo "$1"
  problems="$problems
$2"
}
if ! command -v systemctl >/dev/null 2>&1; then
  echo "no-systemctl"
  [ "$mode" != verify ] || echo "this server has no systemctl: services need systemd" >&2
  exit 1
fi
ours() {
  IFS= read -r first <"$1" 2>/dev/null && case "$first" in "$header"*) return 0 ;; esac
  return 1
}
keep=
# The release that was current before this deploy switched: the publish step's marker says it.
if [ "$mode" = apply ]; then
  previous=$(sed -n 's/^previous=//p' "$state/unconfirmed" 2>/dev/null)
  if [ -n "$previous" ]; then keep="$state/units/$previous"; fi
  # Kept units of releases that are gone go with them.
  for kept in "$state"/units/*; do
    [ -d "$kept" ] && [ ! -d "$d/releases/${kept##*/}" ] && rm -rf "$kept"
  done
fi
if [ "$mode" = restore ]; then
  keep="$state/units/$RELEASE"
  [ -f "$keep/.list" ] || exit 0
  # Go back to the units that were there when `$RELEASE` was current: those kept, and no other
  # of this app's (the loop below the next one removes those).
  set --
  # shellcheck disable=SC2094 # the list is only read, by the loop and by grep
  while IFS=' ' read -r scope file; do
    set -- "$@" "$scope" "$file" "$(cat "$keep/$file")"
    case "$file" in
      *.service)
        name=${file%.service}
        if grep -qxF "$scope $name.socket" "$keep/.list"; then socket=socket; else socket=-; fi
        echo "kept-service $name:$scope:$socket"
        ;;
    esac
  done <"$keep/.list"
fi
reload_user=0
reload_system=0
enable_user=
enable_system=
wanted=
while [ $# -ge 3 ]; do
  scope=$1
  file=$2
  text=$3
  shift 3
  wanted="$wanted $scope:$file"
  dir=$(unit_dir "$scope")
  if [ -e "$dir/$file" ] && ! ours "$dir/$file"; then
    problem "unit-foreign $file" "\`$dir/$file\` is not a unit of \`$app\` (its first line is not \`$header\`...): rename the service, or remove that unit"
    continue
  fi
  if [ "$scope" = system ] && [ "$(id -u)" -ne 0 ]; then
    if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
      problem "unit-differs $file" "the system unit \`$file\` is not installed as configured: \`cargo xtask deploy-setup\` prints the root steps"
    fi
    case "$file" in
      *.service)
        sudo -n -l /usr/bin/systemctl restart "$file" >/dev/null 2>&1 ||
          problem "sudo-missing $file" "no sudo rule lets \`$user\` run \`/usr/bin/systemctl restart $file\`: \`cargo xtask deploy-setup\` prints it"
        ;;
    esac
    continue
  fi
  if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
    case "$mode" in
      check | verify) echo "stale $file" ;;
      *)
        if [ -n "$keep" ] && [ ! -e "$keep/.list" ]; then
          # Keep what there was once per release, before the first change.
          mkdir -p "$keep" || exit 1
          : >"$keep/.list.new"
          for unit in "$(unit_dir user)"/* "$(unit_dir system)"/*; do
            if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
            case "$unit" in "$(unit_dir user)"/*) kind=user ;; *) kind=system ;; esac
            [ "$kind" = user ] || [ "$(id -u)" -eq 0 ] || continue
            cp "$unit" "$keep/${unit##*/}" && echo "$kind ${unit##*/}" >>"$keep/.list.new" || exit 1
          done
          mv "$keep/.list.new" "$keep/.list" || exit 1
        fi
        mkdir -p "$dir" || exit 1
        printf '%s\n' "$text" >"$dir/.$file.new" && mv -f "$dir/.$file.new" "$dir/$file" || exit 1
        echo "unit-written $scope $file"
        case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
        if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
        ;;
    esac
  fi
  if [ "$scope" = user ]; then enable_user="$enable_user $file"; else enable_system="$enable_system $file"; fi
done
# This app's units that the config (or the release gone back to) no longer has.
for scope in user system; do
  [ "$scope" = user ] || [ "$(id -u)" -eq 0 ] || continue
  for unit in "$(unit_dir "$scope")"/*.service "$(unit_dir "$scope")"/*.socket; do
    if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
    file=${unit##*/}
    case " $wanted " in *" $scope:$file "*) continue ;; esac
    case "$mode" in
      check | verify) echo "stale $file" ;;
      *)
        sc "$scope" disable --now --no-reload --quiet "$file" 2>/dev/null
        rm -f "$unit" || exit 1
        echo "unit-removed $scope $file"
        case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
        if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
        ;;
    esac
  done
done
if [ "$reload_user" -eq 1 ]; then systemctl --user daemon-reload || exit 1; fi
if [ "$reload_system" -eq 1 ]; then systemctl daemon-reload || exit 1; fi
# `--no-reload`: enabling makes links only; systemd was reloaded above if a unit changed.
# shellcheck disable=SC2086 # the lists are unit file names, which hold no blanks
if [ -n "$enable_user" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
  systemctl --user enable --no-reload --quiet $enable_user || exit 1
fi
# shellcheck disable=SC2086
if [ -n "$enable_system" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
  systemctl enable --no-reload --quiet $enable_system || exit 1
fi
if [ -n "$enable_user" ] && [ "$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null)" != yes ]; then
  if [ "$mode" = check ] || [ "$mode" = verify ] || ! loginctl enable-linger >/dev/null 2>&1; then
    problem "linger-off" "linger is off for \`$user\`, so its services stop when its last login ends: as root run \`loginctl enable-linger $user\`"
  fi
fi
if [ "$mode" = verify ] && [ -n "$problems" ]; then
  printf '%s\n' "${problems#?}" >&2
  exit 1
fi
exit 0
