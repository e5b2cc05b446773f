# Sourced by e2e.sh and bench.sh: runs a command inside a network namespace of its own.
#
# Chromium ignores the loopback interface for WebRTC, so the pages need a real interface to
# gather candidates on; the namespace gives them one (a veth pair with both ends inside, and a
# default route, without which Chromium gathers no candidates at all) while no traffic can
# leave the machine. The namespace and everything left running in it are removed on exit.
# Everything must be built before: the namespace has no route to package registries.

netns_name=""

netns_cleanup() {
  if [ -n "$netns_name" ] && ip netns list | grep -qw "$netns_name"; then
    pids=$(ip netns pids "$netns_name" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    ip netns del "$netns_name"
  fi
}

# run_in_netns NAME COMMAND [ARGS...]
run_in_netns() {
  netns_name="$1-$$"
  shift
  trap netns_cleanup EXIT
  ip netns add "$netns_name"
  ip -n "$netns_name" link set lo up
  ip -n "$netns_name" link add v0 type veth peer name v1
  ip -n "$netns_name" addr add 10.77.0.1/24 dev v0
  ip -n "$netns_name" addr add 10.77.0.2/24 dev v1
  ip -n "$netns_name" link set v0 up
  ip -n "$netns_name" link set v1 up
  ip -n "$netns_name" route add default via 10.77.0.2 dev v0
  ip netns exec "$netns_name" "$@"
}
