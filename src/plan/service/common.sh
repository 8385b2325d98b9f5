# shellcheck shell=sh
# Shared by the service scripts. Expects nothing; defines `sc SCOPE ARGS...` (systemctl in the
# service's scope, read-only use), `privileged SCOPE ARGS...` (a restart or start: in system scope
# through `sudo -n`, which fails at once instead of asking for a password), `journal SCOPE UNIT
# ARGS...` and `unit_dir SCOPE`.
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
export XDG_RUNTIME_DIR
sc() {
  _scope=$1
  shift
  if [ "$_scope" = user ]; then systemctl --user "$@"; else systemctl "$@"; fi
}
privileged() {
  _scope=$1
  shift
  if [ "$_scope" = user ] || [ "$(id -u)" -eq 0 ]; then
    sc "$_scope" "$@"
  else
    # The exact program the sudo rule names: never one found on the deploy user's PATH.
    sudo -n /usr/bin/systemctl "$@"
  fi
}
journal() {
  _scope=$1
  _unit=$2
  shift 2
  if [ "$_scope" = user ]; then
    # A user's units log to the user's journal; where the journal is not split by user, the
    # system's holds them under the user's unit.
    if journalctl --user -q -n 1 -u "$_unit" 2>/dev/null | grep -q .; then
      journalctl --user -u "$_unit" "$@"
    else
      journalctl --user-unit "$_unit" "$@"
    fi
  else
    journalctl -u "$_unit" "$@"
  fi
}
unit_dir() {
  if [ "$1" = user ]; then echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; else echo /etc/systemd/system; fi
}
