# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Sets, removes or lists the secrets: `NAME="value"` lines in `$d/shared/.secrets.env`, mode 0600,
# which systemd reads as every service's `EnvironmentFile`. A value arrives on stdin, never on a
# command line. Expects (set before it): `d`, `action` (`set`, `unset` or `list`), `name`.
# Prints the names (`list`), then `@@xtask-deploy-secrets-done`.
file="$d/shared/.secrets.env"
if [ ! -d "$d/shared" ]; then
  echo "\`$d/shared\` does not exist: run \`cargo xtask deploy-setup\` first" >&2
  exit 4
fi
umask 077
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
    new="$file.new"
    {
      if [ -f "$file" ]; then grep -v "^$name=" "$file"; fi
      if [ "$action" = set ]; then printf '%s\n' "$line"; fi
    } >"$new" && chmod 600 "$new" && mv -f "$new" "$file" || exit 1
    ;;
esac
echo "@@xtask-deploy-secrets-done"
