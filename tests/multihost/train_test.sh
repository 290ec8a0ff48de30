#!/usr/bin/env bash
# Training across simulated hosts equals one host, and the mesh is placed by host:
#  - dp 2 x tp 2 on 2 hosts x 2 slots, by slot and with `--map-by node` (the launcher numbers
#    ranks round-robin over the hosts; meshtrain reorders its world host by host so each tp
#    group still shares a host), dp 2 x pp 2 on 2 hosts (--map-by node) and dp 2 x tp 2 on
#    4 hosts x 1 slot: per-step losses bit-identical to the same layout on one host (the same
#    world rank computes the same shard in the same order wherever it runs);
#  - the banner and launch.jsonl name each host and local rank, and launch.jsonl's placement
#    shows the tp groups inside a host (--map-by node: reordered);
#  - layouts that force a tp group across hosts (tp 4 on 2 hosts x 2 slots; tp 2 on 4 hosts x
#    1 slot) run with a warning naming the group and hosts, in the banner, launch.jsonl's
#    job_warnings and `meshtrain info --tp`.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/simhosts.sh"
mh_require
MH_SLOTS=2 mh_up 4 > /dev/null
H1=$(mh_host 1) H2=$(mh_host 2) H3=$(mh_host 3) H4=$(mh_host 4)
printf '%s slots=2\n' "$H1" "$H2" > "$WORK/two"       # 2 hosts x 2 slots
printf '%s slots=1\n' "$H1" "$H2" "$H3" "$H4" > "$WORK/four"  # 4 hosts x 1 slot
CFG="$MT_SOURCE_DIR/examples/tiny.yaml"
common=(train.steps=6 train.eval_every=0 train.log_every=1 model.n_embd=32 model.seq_len=16
        train.batch_size=8 train.threads=1 checkpoint.every=0)
DPTP=(parallel.dp=2 parallel.tp=2) DPPP=(parallel.dp=2 parallel.pp=2 train.micro_batch=2)

train() {  # train NAME LAUNCH... -- OVERRIDES...
  local name=$1; shift
  local launch=(); while [ "$1" != -- ]; do launch+=("$1"); shift; done; shift
  "${launch[@]}" "$MESHTRAIN" train "$CFG" "${common[@]}" "$@" run.dir="$WORK/$name" > "$WORK/$name.log" 2>&1 ||
    { tail -20 "$WORK/$name.log"; fail "$name: training failed"; }
}
same_losses() {  # same_losses REF RUN: per-step losses bit-identical
  diff <(step_losses "$WORK/$1") <(step_losses "$WORK/$2") > /dev/null || {
    paste <(step_losses "$WORK/$1") <(step_losses "$WORK/$2"); fail "$2: losses differ from $1"; }
  [ "$(step_losses "$WORK/$2" | wc -l)" = 6 ] || fail "$2: expected 6 steps"
  echo "$2: 6 steps, losses bit-identical to $1 (last $(step_losses "$WORK/$2" | tail -1 | cut -d' ' -f2))"
}
# check_placement RUN REORDERED CROSSING HOSTS...: launch.jsonl's placement; HOSTS by world rank
check_placement() { python3 - "$WORK/$1/launch.jsonl" "$@" <<'PY' || fail "$1: launch.jsonl placement"
import json, sys
path, name, reordered, crossing, hosts = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5:]
j = json.loads(open(path).readlines()[-1]); p = j["placement"]
assert p["order"] == "host-major" and p["reordered"] == reordered, p
assert [r["host"] for r in p["ranks"]] == hosts, [r["host"] for r in p["ranks"]]
assert p["tp_groups_crossing_hosts"] == crossing, p["tp_groups"]
# every rank named with its host and local rank, in the launcher's view and in the placement
by_launcher = {r["rank"]: r for r in j["ranks"]}
for r in p["ranks"]:
    l = by_launcher[r["launcher_rank"]]
    assert l["host"] == r["host"] and l["local_rank"] == r["local_rank"], (l, r)
assert sorted(r["local_rank"] for r in p["ranks"] if r["host"] == hosts[0]) == list(range(hosts.count(hosts[0])))
assert [(h["host"], len(h["ranks"])) for h in j["hosts"]] == [(h, hosts.count(h)) for h in dict.fromkeys(hosts)], j["hosts"]
spanning = [g for g in p["tp_groups"] if len(g["hosts"]) > 1]
warned = [w for w in j["job_warnings"] if "span hosts" in w]
assert bool(warned) == bool(crossing), j["job_warnings"]
for g in spanning:
    assert "ranks {%s} on %s" % (",".join(map(str, g["ranks"])), " + ".join(g["hosts"])) in warned[0] or "more" in warned[0], warned
print(f"{name}: placement", [(g["ranks"], g["hosts"]) for g in p["tp_groups"]], "reordered" if reordered else "")
PY
}

# one host (the reference)
train ref-tp mpi -np 4 -- "${DPTP[@]}"
train ref-pp mpi -np 4 -- "${DPPP[@]}"

# dp 2 x tp 2 on 2 hosts, by slot: launcher order is already host by host
MH_HOSTFILE=$WORK/two train tp-slot mh_mpirun -np 4 -- "${DPTP[@]}"
same_losses ref-tp tp-slot
check_placement tp-slot 0 0 "$H1" "$H1" "$H2" "$H2"
grep -q "rank(s) on 2 host(s), 2 per host: $H1 \[0-1\], $H2 \[2-3\]" "$WORK/tp-slot.log" || fail "banner: hosts"
grep -q "placement: tp groups inside a host (2 of 2)" "$WORK/tp-slot.log" || fail "banner: placement line"

# --map-by node: launcher ranks 0,2 on host 1 and 1,3 on host 2; world reordered by host
MH_HOSTFILE=$WORK/two train tp-node mh_mpirun --map-by node -np 4 -- "${DPTP[@]}"
same_losses ref-tp tp-node
check_placement tp-node 1 0 "$H1" "$H1" "$H2" "$H2"
grep -q "placement: tp groups inside a host (2 of 2), dp groups spanning hosts 2 of 2 (world ranks reordered" \
  "$WORK/tp-node.log" || fail "banner: reordered placement"
grep -q "2 per host: $H1 \[0-1\], $H2 \[2-3\] (launcher ranks: $H1 \[0,2\], $H2 \[1,3\])" "$WORK/tp-node.log" ||
  fail "banner: world and launcher ranks per host: $(grep 'per host' "$WORK/tp-node.log")"
grep -q "span hosts" "$WORK/tp-node.log" && fail "tp-node: a warning although no tp group spans hosts"

# dp 2 x pp 2 on 2 hosts (--map-by node): a replica's two stages share a host
MH_HOSTFILE=$WORK/two train pp-node mh_mpirun --map-by node -np 4 -- "${DPPP[@]}"
same_losses ref-pp pp-node
check_placement pp-node 1 0 "$H1" "$H1" "$H2" "$H2"

# dp 2 x tp 2 on 4 hosts x 1 slot: each tp group must span two hosts (a warning), same losses
MH_HOSTFILE=$WORK/four train tp-four mh_mpirun -np 4 -- "${DPTP[@]}"
same_losses ref-tp tp-four
check_placement tp-four 0 2 "$H1" "$H2" "$H3" "$H4"
grep -q "warn.*placement: 2 of 2 tp group(s) span hosts.*ranks {0,1} on $H1 + $H2.*larger than the ranks of a host (1).*hint:" \
  "$WORK/tp-four.log" || fail "tp-four: no warning in the log: $(grep -i placement "$WORK/tp-four.log")"

# tp 4 on 2 hosts x 2 slots: `meshtrain info --tp 4` warns before any training (and the run does too)
out=$(MH_HOSTFILE=$WORK/two mh_mpirun -np 4 "$MESHTRAIN" info --tp 4 2>&1) || { echo "$out"; fail "info --tp 4"; }
grep -q "WARNING: placement: 1 of 1 tp group(s) span hosts.*ranks {0,1,2,3} on $H1 + $H2.*parallel.tp = 4 is larger than the ranks of a host (2)" \
  <<<"$out" || fail "info --tp 4: no warning: $out"
grep -q "tp group 0,1,2,3 *$H1 + $H2" <<<"$out" || fail "info --tp 4: placement table: $out"
MH_HOSTFILE=$WORK/two mh_mpirun --map-by node -np 4 "$MESHTRAIN" info --json --tp 2 > "$WORK/info.json" 2> "$WORK/info.err" ||
  { cat "$WORK/info.err"; fail "info --json --tp 2"; }
python3 - "$WORK/info.json" <<'PY' || { cat "$WORK/info.err"; fail "info --json --tp 2 --map-by node"; }
import json, sys
p = json.load(open(sys.argv[1]))["placement"]
assert p["reordered"] and p["tp_groups_crossing_hosts"] == 0, p
assert [r["launcher_rank"] for r in p["ranks"]] == [0, 2, 1, 3], p["ranks"]
PY
common[0]=train.steps=2
MH_HOSTFILE=$WORK/two train tp4 mh_mpirun -np 4 -- parallel.tp=4
check_placement tp4 0 1 "$H1" "$H1" "$H2" "$H2"
echo "PASS"
