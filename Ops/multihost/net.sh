#!/usr/bin/env bash
# The multi-host test's network: Linux network namespaces joined by veth pairs to a bridge in a "switch" namespace.
#   Ops/multihost/net.sh up [RATE] [DELAY]  → create the hosts; shape every host link (netem delay, else tbf rate)
#   Ops/multihost/net.sh down               → delete every namespace it made (and with them the veths)
#   Ops/multihost/net.sh cut HOST           → take HOST's switch port down (unplug its cable)
#   Ops/multihost/net.sh restore HOST       → bring it back
# Hosts: bfmh-pg 10.77.0.1 (PostgreSQL), bfmh-http 10.77.0.2 (input server), bfmh-w1..3 10.77.0.11–13 (workers).
# Traffic stays inside these namespaces: 10.77.0.0/24 is routed nowhere else.
set -euo pipefail
prefix=bfmh
switch=$prefix-sw
hosts=("pg:10.77.0.1" "http:10.77.0.2" "w1:10.77.0.11" "w2:10.77.0.12" "w3:10.77.0.13")

up() {
  local rate=${1:-1gbit} delay=${2:-1ms}
  down
  ip netns add "$switch"
  ip -n "$switch" link set lo up
  ip -n "$switch" link add br0 type bridge
  ip -n "$switch" link set br0 up
  local shaping=""
  for entry in "${hosts[@]}"; do
    local name=${entry%%:*} address=${entry#*:}
    local ns=$prefix-$name
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are made in the switch namespace, then the host end moves into the host as eth0.
    ip -n "$switch" link add "sw-$name" type veth peer name eth0 netns "$ns"
    ip -n "$switch" link set "sw-$name" master br0 up
    ip -n "$ns" addr add "$address/24" dev eth0
    ip -n "$ns" link set eth0 up
    # Shape both directions of the host's link: the host's eth0 (egress) and its switch port (ingress to the host).
    for side in "$ns eth0" "$switch sw-$name"; do
      set -- $side
      if tc -n "$1" qdisc add dev "$2" root netem delay "$delay" rate "$rate" 2>/dev/null; then
        shaping="netem delay $delay rate $rate"
      elif tc -n "$1" qdisc add dev "$2" root tbf rate "$rate" burst 64kb latency 50ms 2>/dev/null; then
        shaping="tbf rate $rate (netem unavailable in this kernel: no added delay)"
      else
        shaping="none (tc qdiscs unavailable)"
      fi
    done
  done
  echo "$shaping"
}

down() {
  for entry in "${hosts[@]}"; do
    ip netns del "$prefix-${entry%%:*}" 2>/dev/null || true
  done
  ip netns del "$switch" 2>/dev/null || true
}

case "${1:-}" in
  up) up "${2:-}" "${3:-}" ;;
  down) down ;;
  cut) ip -n "$switch" link set "sw-${2:?host}" down ;;
  restore) ip -n "$switch" link set "sw-${2:?host}" up ;;
  *) echo "usage: Ops/multihost/net.sh up [RATE] [DELAY] | down | cut HOST | restore HOST" >&2; exit 2 ;;
esac
