#!/usr/bin/env bash
# Simulated hosts, the basics: `meshtrain info` over mpirun on 2 hosts x 2 slots names each
# host and local rank as a real 2-node job would show them (hosts h1 = ranks 0,1 and h2 =
# ranks 2,3; local ranks 0,1 on each; 2 nodes), and the harness removes exactly what it made
# (no namespace, link, /etc/hosts line or process of ours left), also when a check fails.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 2
H1=$(mh_host 1) H2=$(mh_host 2)

mh_mpirun -np 4 "$MESHTRAIN" info --json > "$WORK/info.json" 2> "$WORK/info.err" ||
  { cat "$WORK/info.err"; fail "meshtrain info across 2 simulated hosts"; }
python3 - "$WORK/info.json" "$H1" "$H2" <<'PY' || fail "info across hosts"
import json, sys
j = json.load(open(sys.argv[1])); h1, h2 = sys.argv[2], sys.argv[3]
assert j["num_nodes"] == 2, j["num_nodes"]
assert [(h["host"], h["ranks"]) for h in j["hosts"]] == [(h1, [0, 1]), (h2, [2, 3])], j["hosts"]
got = [(r["rank"], r["host"], r["local_rank"], r["local_size"], r["num_nodes"]) for r in j["ranks"]]
want = [(0, h1, 0, 2, 2), (1, h1, 1, 2, 2), (2, h2, 0, 2, 2), (3, h2, 1, 2, 2)]
assert got == want, got
assert not j["job_warnings"] and all(not r["warnings"] and not r["errors"] for r in j["ranks"]), j
print("info: hosts", [(h["host"], h["ranks"]) for h in j["hosts"]])
PY

# teardown, checked from the outside: a subshell that ups 2 hosts, starts a process on one and
# fails; afterwards nothing of it is left.
P2=${MH_PREFIX}t
( MH_PREFIX=$P2 MH_DIR=$WORK/sim2 MH_TAG="# meshtrain-simhosts:$P2" MH_BR=${P2}br MH_NET=
  mh_up 2 > /dev/null
  ip netns exec "${P2}2" sleep 300 &
  sleep 0.2
  false ) && fail "the failing subshell succeeded"
sleep 0.2
ip netns list | grep -q "^${P2}[0-9]" && fail "namespaces left: $(ip netns list | grep "^${P2}")"
ip link show "${P2}br" > /dev/null 2>&1 && fail "bridge ${P2}br left"
ip -br link | grep -q "^${P2}v" && fail "veths left"
grep -q "meshtrain-simhosts:$P2\$" /etc/hosts && fail "/etc/hosts lines left"
pgrep -f "^sleep 300$" > /dev/null && pgrep -f "^sleep 300$" | while read -r p; do
  [ "$(readlink /proc/$p/ns/net)" != "$(readlink /proc/1/ns/net)" ] && fail "process $p left in a namespace"; done
echo "teardown after a failure: nothing left"
echo "PASS"
