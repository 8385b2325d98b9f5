# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Writes this server's unit files (setup, and every deploy before it switches), or, in system
# scope without root, checks that root installed them and that the sudo rule is there; in check
# mode (deploy-check) it changes nothing and says what a deploy would find.
# Expects (set before it): `d`, `mode` (`setup`, `deploy` or `check`), `sudoers` (the file name a
# rule goes in), the positional parameters as triples: scope, unit file name (`web.service`), its
# text; and common.sh's functions.
# Prints `unit-written SCOPE FILE` for each unit it changed. What needs doing first: in setup mode
# as `warning ...` lines, in check mode as `problem ...` lines; in deploy mode on stderr, status 1.
say() {
  case "$mode" in
    setup) while IFS= read -r line; do echo "warning $line"; done ;;
    check) while IFS= read -r line; do echo "problem $line"; done ;;
    *) cat >&2 ;;
  esac
}
# After `... | say` (a subshell): a deploy stops there.
stop_deploy() {
  if [ "$mode" = deploy ]; then exit 1; fi
}
if ! command -v systemctl >/dev/null 2>&1; then
  echo "this server has no systemctl: services need systemd (remove \`services\` for it)" | say
  exit 1
fi
stale=
systemctl_path=$(command -v systemctl)
me=$(id -un)
reload_user=0
reload_system=0
enable_user=
enable_system=
root_units=
unit_steps=
sudo_units=
while [ $# -ge 3 ]; do
  scope=$1
  file=$2
  text=$3
  shift 3
  dir=$(unit_dir "$scope")
  if [ "$scope" = user ] || [ "$(id -u)" -eq 0 ]; then
    if [ "$mode" = check ]; then
      [ "$(cat "$dir/$file" 2>/dev/null)" = "$text" ] || stale="$stale $file"
    elif [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
      mkdir -p "$dir" || exit 1
      printf '%s\n' "$text" >"$dir/.$file.new" && mv -f "$dir/.$file.new" "$dir/$file" || exit 1
      echo "unit-written $scope $file"
      if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
    fi
    if [ "$scope" = user ]; then enable_user="$enable_user $file"; else enable_system="$enable_system $file"; fi
  else
    # The deploy user cannot write the unit: root installs it, from text printed whole in the
    # command (not from a file the deploy user, or an app running as it, could change first).
    if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
      root_units="$root_units $file"
      unit_steps="$unit_steps
cat > /etc/systemd/system/$file <<'XTASK_DEPLOY_UNIT'
$text
XTASK_DEPLOY_UNIT"
    fi
    case "$file" in
      *.service)
        sudo -n -l "$systemctl_path" restart "$file" >/dev/null 2>&1 || sudo_units="$sudo_units $file"
        ;;
    esac
  fi
done
if [ -n "$stale" ]; then
  echo "the units$stale differ from the config: a deploy rewrites them" | say
fi
if [ "$reload_user" -eq 1 ]; then systemctl --user daemon-reload || exit 1; fi
if [ "$reload_system" -eq 1 ]; then systemctl daemon-reload || exit 1; fi
# shellcheck disable=SC2086 # the lists are unit file names, which hold no blanks
if [ -n "$enable_user" ] && [ "$mode" != check ]; then systemctl --user enable --quiet $enable_user || exit 1; fi
# shellcheck disable=SC2086
if [ -n "$enable_system" ] && [ "$mode" != check ]; then systemctl enable --quiet $enable_system || exit 1; fi
if [ -n "$enable_user" ] && [ "$(loginctl show-user "$me" -p Linger --value 2>/dev/null)" != yes ]; then
  if [ "$mode" = check ] || ! loginctl enable-linger "$me" >/dev/null 2>&1; then
    echo "linger is off for \`$me\`, so its services stop when its last login ends: as root run \`loginctl enable-linger $me\`" | say
    stop_deploy
  fi
fi
if [ -n "$root_units" ] || [ -n "$sudo_units" ]; then
  {
    echo "the system-scope units need root once on this server; as root run the lines below:"
    if [ -n "$root_units" ]; then
      printf '%s\n' "${unit_steps#?}"
      echo "systemctl daemon-reload"
      for file in $root_units; do echo "systemctl enable $file"; case "$file" in *.socket) echo "systemctl start $file" ;; esac; done
      echo "usermod -a -G systemd-journal $me"
    fi
    if [ -n "$sudo_units" ]; then
      rule="$me ALL=(root) NOPASSWD:"
      sep=
      for file in $sudo_units; do
        rule="$rule$sep $systemctl_path restart $file"
        sep=,
      done
      echo "echo '$rule' > /etc/sudoers.d/$sudoers && chmod 0440 /etc/sudoers.d/$sudoers && visudo -c"
    fi
  } | say
  stop_deploy
fi
exit 0
