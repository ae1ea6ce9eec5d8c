#!/bin/sh
# Remake the scamper fixtures of this folder (needs root, iproute2, nftables, scamper).
# Loopback runs, then client ── router ── server namespaces like the tests' `paths` fixture
# (10.231.1.0/24 and 10.231.2.0/24; 10.231.3.0/24 unreachable at the router; 10.231.2.3
# silently dropped by the server).  Nothing leaves this machine.
set -eu
cd "$(dirname "$0")"
P="${NVT_TEST_TAG:-nvt}-sc"
C="$P-client" R="$P-router" S="$P-server"
cleanup() { for n in "$C" "$R" "$S"; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup

# 1. loopback: one ping of 5 and one Paris ICMP trace
scamper -O warts -o loopback.warts \
  -c "ping -c 5 -i 0.2" -i 127.0.0.1
scamper -O warts -o loopback-trace.warts \
  -c "trace -P icmp-paris -q 2" -i 127.0.0.1

# 2. namespaces
for n in "$C" "$R" "$S"; do
  ip netns add "$n"; ip -n "$n" link set lo up
  ip netns exec "$n" sysctl -qw net.ipv4.icmp_ratelimit=0
done
ip link add to-router netns "$C" type veth peer name to-client netns "$R"
ip link add to-server netns "$R" type veth peer name to-router netns "$S"
ip -n "$C" addr add 10.231.1.2/24 dev to-router; ip -n "$C" link set to-router up
ip -n "$R" addr add 10.231.1.1/24 dev to-client; ip -n "$R" link set to-client up
ip -n "$R" addr add 10.231.2.1/24 dev to-server; ip -n "$R" link set to-server up
ip -n "$S" addr add 10.231.2.2/24 dev to-router; ip -n "$S" addr add 10.231.2.3/24 dev to-router
ip -n "$S" link set to-router up
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
ip -n "$C" route add 10.231.0.0/16 via 10.231.1.1
ip -n "$S" route add 10.231.0.0/16 via 10.231.2.1
ip -n "$R" route add unreachable 10.231.3.0/24
printf 'table inet nvt {\n chain inbound {\n  type filter hook input priority 0;\n  ip daddr 10.231.2.3 drop\n }\n}\n' \
  | ip netns exec "$S" nft -f -

# reached in 2 hops / unreachable at the router / silent after the router;
# a ping that is answered and one that is not
ip netns exec "$C" scamper -O warts -o paths.warts -p 50 -c "trace -P icmp-paris -q 2 -g 3 -w 1" \
  -f - <<LIST
10.231.2.2
10.231.3.9
10.231.2.3
LIST
ip netns exec "$C" scamper -O warts -o paths-ping.warts -c "ping -c 4 -i 0.2" -f - <<LIST
10.231.2.2
10.231.2.3
LIST

for w in loopback loopback-trace paths paths-ping; do
  sc_warts2json "$w.warts" > "$w.json"
done
