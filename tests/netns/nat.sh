#!/usr/bin/env bash
# NAT traversal behind real Linux NAT: network namespaces joined by veth pairs, routers doing
# NAT with nftables, every address inside the namespaces (198.18.0.0/15 on the public side,
# 10.0.0.0/8 behind the routers). Run as root: tests/netns/nat.sh [path/to/macula]
#
#   wan     a bridge, the public segment: the bootstrap node (198.18.0.10) and a gateway
#           (198.18.0.11), each at its own address
#   r<k>    a router: 198.18.0.<k> on the bridge, 10.0.<k>.1 towards its host, doing NAT
#   h<k>    a host behind router k: 10.0.<k>.2
#
# Router kinds: prc (port-restricted cone: plain masquerade), sym (symmetric: masquerade
# random,fully-random), full (full cone: masquerade plus a DNAT of every UDP port to the host).
# Every router drops unsolicited new packets to itself from the public side, as home routers
# do: without that rule, Linux conntrack confirms an early inbound punch, holds the port, and
# masquerade then picks another port for the outbound packet, which breaks simultaneous open.
# Everything is torn down on exit, also on failure.
set -euo pipefail

MACULA=${1:-./target/debug/macula}
MACULA=$(realpath "$MACULA")
PREFIX=mnat$$
NAMESPACES=()
WORK=$(mktemp -d)

cleanup() {
  # Every process started in a namespace, however it was started.
  for ns in "${NAMESPACES[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.2
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

ns() { ip netns exec "$PREFIX-$1" "${@:2}"; }

add_ns() {
  ip netns add "$PREFIX-$1"
  NAMESPACES+=("$PREFIX-$1")
  ns "$1" ip link set lo up
}

# The public segment.
add_ns wan
ns wan ip link add br0 type bridge
ns wan ip link set br0 up
ns wan ip addr add 198.18.0.10/24 dev br0
ns wan ip addr add 198.18.0.11/24 dev br0

# router <k> <kind>: a router on the bridge and a host behind it.
router() {
  local k=$1 kind=$2 r=r$1 h=h$1
  add_ns "$r"
  add_ns "$h"
  ip link add "$PREFIX-w$k" type veth peer name wan0 netns "$PREFIX-$r"
  ip link set "$PREFIX-w$k" netns "$PREFIX-wan"
  ns wan ip link set "$PREFIX-w$k" master br0 up
  ns "$r" ip addr add "198.18.0.$k/24" dev wan0
  ns "$r" ip link set wan0 up
  ip link add "$PREFIX-l$k" type veth peer name eth0 netns "$PREFIX-$h"
  ip link set "$PREFIX-l$k" netns "$PREFIX-$r"
  ns "$r" ip link set "$PREFIX-l$k" name lan0
  ns "$r" ip addr add "10.0.$k.1/24" dev lan0
  ns "$r" ip link set lan0 up
  ns "$r" sysctl -qw net.ipv4.ip_forward=1
  ns "$h" ip addr add "10.0.$k.2/24" dev eth0
  ns "$h" ip link set eth0 up
  ns "$h" ip route add default via "10.0.$k.1"
  local masquerade="masquerade"
  [ "$kind" = sym ] && masquerade="masquerade random,fully-random"
  local dnat=""
  [ "$kind" = full ] && dnat="iifname \"wan0\" meta l4proto udp dnat to 10.0.$k.2"
  ns "$r" nft -f - <<NFT
table ip nat {
  chain prerouting {
    type nat hook prerouting priority -100;
    $dnat
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "wan0" $masquerade
  }
}
table inet filter {
  chain input {
    type filter hook input priority 0;
    iifname "wan0" ct state new drop
  }
}
NFT
}

# start <ns> <name> <args...>: runs `macula node` in a namespace; waits for its first line.
start() {
  local where=$1 name=$2
  mkdir -p "$WORK/$name.d"
  ns "$where" "$MACULA" node --data-dir "$WORK/$name.d" "${@:3}" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  for _ in $(seq 100); do
    [ -s "$WORK/$name.out" ] && break
    sleep 0.1
  done
  head -1 "$WORK/$name.out"
}

field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

fail() { echo "FAILED: $*"; for f in "$WORK"/*.err; do echo "--- $f"; tail -5 "$f"; done; exit 1; }

router 2 prc
router 3 sym
router 4 full
router 5 prc
router 6 sym

REALM=io.netns.test
start wan bootstrap --listen 198.18.0.10:4433 --realm $REALM > /dev/null
start wan gateway --listen 198.18.0.11:4433 --realm $REALM --gateway \
  --bootstrap 198.18.0.10:4433 > /dev/null
sleep 1

# macula nat behind each kind of router.
check_nat() {
  local k=$1 want=$2
  local got
  got=$(ns "h$k" "$MACULA" nat --bootstrap 198.18.0.10:4433 --realm $REALM 2> "$WORK/nat$k.err") \
    || fail "macula nat behind router $k"
  echo "router $k: $got"
  case "$got" in
    "$want"*) ;;
    *) fail "router $k: expected $want" ;;
  esac
}
check_nat 2 "mapping=endpoint-independent filtering=address-and-port-dependent allocation=preserving hairpin=no public=198.18.0.2:"
check_nat 3 "mapping=address-and-port-dependent filtering=address-and-port-dependent allocation=random hairpin=no public=198.18.0.3:"
check_nat 4 "mapping=endpoint-independent filtering=endpoint-independent allocation=preserving"
# Long-running nodes behind NAT: they detect their NAT, keep a reservation at the gateway and
# publish where they are. A short-lived client behind another router then pings each by its
# id: two port-restricted cones end up on a punched path, two symmetric NATs stay relayed.
node_id() { start "$1" "$2" --listen "10.0.$3.2:4433" --realm $REALM --bootstrap 198.18.0.10:4433 | field node_id; }
A=$(node_id h5 cone5 5)
B=$(node_id h6 sym6 6)
sleep 3

ping_path() {
  local from=$1 target=$2 want=$3
  local out
  for _ in $(seq 10); do
    out=$(ns "$from" "$MACULA" ping "$target" --bootstrap 198.18.0.10:4433 --realm $REALM \
      --count 8 --interval 500 2>> "$WORK/ping.err") && break
    sleep 1
  done
  echo "$out" | sed "s/^/  $from → ${target:0:8}: /"
  echo "$out" | tail -1 | grep -q "path=$want" || fail "$from → $target: expected path=$want at the end"
}
ping_path h2 "$A" punched
ping_path h3 "$B" relayed

# RPC and pub/sub across the NATs: a server and a subscriber behind a port-restricted cone
# (h5) and behind a symmetric NAT (h6), each called and published to from behind a router of
# the same kind (h2, h3). No address in their DHT records leads through their NATs: callers
# and publishers reach them by their ids (punched between the cones, relayed between the
# symmetric NATs).
# wait_for <file> <text>: waits up to 30 s for a line containing text.
wait_for() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2> /dev/null && return 0
    sleep 0.1
  done
  return 1
}
across() {
  local srv=$1 cli=$2 name=$3
  ns "$srv" "$MACULA" serve "netns.$name" --count 1 --bootstrap 198.18.0.10:4433 --realm $REALM \
    > "$WORK/serve-$name.out" 2> "$WORK/serve-$name.err" &
  # The subscriber keeps running (the teardown stops it): one that exits on its message may
  # close its links before its acknowledgement has left.
  ns "$srv" "$MACULA" sub "news.$name" --bootstrap 198.18.0.10:4433 --realm $REALM \
    > "$WORK/sub-$name.out" 2> "$WORK/sub-$name.err" &
  wait_for "$WORK/serve-$name.out" "serving=" || fail "$name: the server did not start"
  # Time to detect the NAT, reserve at the gateway and publish where they are.
  sleep 5
  local out
  out=$(ns "$cli" "$MACULA" call "netns.$name" "hello-$name" --timeout 30000 \
    --bootstrap 198.18.0.10:4433 --realm $REALM 2> "$WORK/call-$name.err") \
    || fail "$name: the call failed"
  echo "  $cli → $srv: call $out"
  echo "$out" | grep -q "payload=hello-$name" || fail "$name: wrong reply"
  out=$(ns "$cli" "$MACULA" pub "news.$name" "hi-$name" --qos 1 \
    --bootstrap 198.18.0.10:4433 --realm $REALM 2> "$WORK/pub-$name.err") \
    || fail "$name: the publish failed"
  echo "  $cli → $srv: pub $out"
  wait_for "$WORK/sub-$name.out" "payload=hi-$name" || fail "$name: the subscriber got nothing"
  echo "  $srv: sub $(head -1 "$WORK/sub-$name.out")"
}
across h5 h2 cones
across h6 h3 symmetric
echo "netns NAT: all checks passed"
