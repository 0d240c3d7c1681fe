#!/bin/sh
# Entry point of the Tribune image. It honours the environment variables of
# Consul's official image, so a container definition written for
# `consul agent` works with `tribune agent`:
#
#   CONSUL_DATA_DIR          data directory given to `agent` (/consul/data)
#   CONSUL_CONFIG_DIR        configuration directory given to `agent`
#                            (/consul/config)
#   CONSUL_LOCAL_CONFIG      JSON configuration written to
#                            $CONSUL_CONFIG_DIR/local.json before the start
#   CONSUL_BIND_INTERFACE    network interface whose first IPv4 address
#                            becomes -bind
#   CONSUL_CLIENT_INTERFACE  network interface whose first IPv4 address
#                            becomes -client
#   CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...  read by the CLI commands
#                            themselves (tribune leave, tribune members, ...)
#
# The image runs as the unprivileged user tribune (uid 100, gid 1000) and
# never as root, so Consul's CONSUL_DISABLE_PERM_MGMT (skip the chown done
# as root) has nothing to do, and CONSUL_ALLOW_PRIVILEGED_PORTS (setcap on
# the binary) is refused: grant NET_BIND_SERVICE to the container instead.
#
# Arguments: `agent ...` runs the agent with the directories above; a first
# argument starting with "-" means `agent` with those flags; any other
# Tribune subcommand runs as `tribune <subcommand> ...`; anything else
# (a shell, say) runs as it is.
set -e

: "${CONSUL_DATA_DIR:=/consul/data}"
: "${CONSUL_CONFIG_DIR:=/consul/config}"
: "${TRIBUNE_BIN:=tribune}"

if [ -n "$CONSUL_ALLOW_PRIVILEGED_PORTS" ]; then
  echo "docker-entrypoint: CONSUL_ALLOW_PRIVILEGED_PORTS is not supported (the image does not run as root); add the NET_BIND_SERVICE capability to the container instead" >&2
  exit 1
fi

# iface_ipv4 prints the first IPv4 address of interface $1.
iface_ipv4() {
  ip -o -4 addr list "$1" 2>/dev/null | head -n 1 | awk '{print $4}' | cut -d/ -f1
}

BIND_FLAG=
if [ -n "$CONSUL_BIND_INTERFACE" ]; then
  addr=$(iface_ipv4 "$CONSUL_BIND_INTERFACE")
  if [ -z "$addr" ]; then
    echo "docker-entrypoint: no IPv4 address on interface '$CONSUL_BIND_INTERFACE' (CONSUL_BIND_INTERFACE)" >&2
    exit 1
  fi
  echo "==> Found address '$addr' for interface '$CONSUL_BIND_INTERFACE', setting bind option..."
  BIND_FLAG="-bind=$addr"
fi

CLIENT_FLAG=
if [ -n "$CONSUL_CLIENT_INTERFACE" ]; then
  addr=$(iface_ipv4 "$CONSUL_CLIENT_INTERFACE")
  if [ -z "$addr" ]; then
    echo "docker-entrypoint: no IPv4 address on interface '$CONSUL_CLIENT_INTERFACE' (CONSUL_CLIENT_INTERFACE)" >&2
    exit 1
  fi
  echo "==> Found address '$addr' for interface '$CONSUL_CLIENT_INTERFACE', setting client option..."
  CLIENT_FLAG="-client=$addr"
fi

if [ -n "$CONSUL_LOCAL_CONFIG" ]; then
  printf '%s\n' "$CONSUL_LOCAL_CONFIG" > "$CONSUL_CONFIG_DIR/local.json"
fi

# A first argument that is a flag means the agent.
case "$1" in
  -*) set -- agent "$@" ;;
esac

if [ "$1" = agent ]; then
  shift
  # The flags given last win: the container's own arguments override the
  # interface-derived addresses.
  set -- agent -data-dir="$CONSUL_DATA_DIR" -config-dir="$CONSUL_CONFIG_DIR" $BIND_FLAG $CLIENT_FLAG "$@"
  exec "$TRIBUNE_BIN" "$@"
fi

# Any other Tribune subcommand (version, members, kv, ...).
if [ -n "$1" ] && "$TRIBUNE_BIN" --help 2>&1 | awk '/^    /{print $1}' | grep -qxF -- "$1"; then
  exec "$TRIBUNE_BIN" "$@"
fi

exec "$@"
