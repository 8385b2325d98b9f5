# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Sets, removes or lists the secrets: `NAME="value"` lines in `$d/shared/.secrets.env`, mode 0600,
# which every service's own shell reads as environment when it starts. A value arrives on stdin, never on a
# command line. Expects (set before it): `d`, `action` (`set`, `unset` or `list`), `name`.
# Prints the names (`list`), `absent` (`unset` of a name not set), then `@@xtask-deploy-secrets-done`.
file="$d/shared/.secrets.env"
if [ ! -d "$d/shared" ]; then
  echo "\`$d/shared\` does not exist: run \`cargo xtask deploy-setup\` first" >&2
  exit 4
fi
umask 077
# One secrets command at a time on this server: two at once would each write the file without
# the other's change.
# (Without flock, util-linux's, there is no lock.)
if command -v flock >/dev/null 2>&1; then
  mkdir -p "$d/.xtask-deploy" || exit 1
  exec 9>"$d/.xtask-deploy/secrets.lock" || exit 1
  flock -w 30 9 || { echo "another secrets command held the lock for 30 s" >&2; exit 1; }
fi
case "$action" in
  list)
    if [ -f "$file" ]; then sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$file"; fi
    ;;
  set | unset)
    line=
    if [ "$action" = set ] && ! IFS= read -r line; then
      echo "no value arrived on stdin" >&2
      exit 1
    fi
    if [ "$action" = unset ] && ! grep -q "^$name=" "$file" 2>/dev/null; then echo "absent"; fi
    new=$(mktemp "$file.XXXXXX") || exit 1
    # grep exits 1 when it keeps no line (fine), 2 when it failed (the file is left as it was).
    status=0
    if [ -f "$file" ]; then grep -v "^$name=" "$file" >"$new" || status=$?; fi
    if [ "$status" -gt 1 ] || { [ "$action" = set ] && ! printf '%s\n' "$line" >>"$new"; } || ! mv -f "$new" "$file"; then
      rm -f "$new"
      exit 1
    fi
    ;;
esac
echo "@@xtask-deploy-secrets-done"
