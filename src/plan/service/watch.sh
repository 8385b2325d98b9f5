# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# For the health check: `services_down` prints the first service that is not active and succeeds,
# or fails when every one is; `services_state NAME` says how the service is. Expects `services`
# (words `name:scope:socket`) and common.sh's functions.
services_down() {
  for entry in $services; do
    IFS=: read -r name scope _ <<END
$entry
END
    if ! sc "$scope" is-active --quiet "$name.service"; then
      echo "$name"
      return 0
    fi
  done
  return 1
}
services_state() {
  for entry in $services; do
    IFS=: read -r name scope _ <<END
$entry
END
    if [ "$name" = "$1" ]; then
      echo "$(sc "$scope" show -p ActiveState --value "$name.service") ($(sc "$scope" show -p SubState --value "$name.service")), exit status $(sc "$scope" show -p ExecMainStatus --value "$name.service")"
    fi
  done
}
