#!/usr/bin/env bash
# What: the numbers of examples/tiny.yaml (40 steps, micro_batch 8, evals at 20 and 40) at np 1,
# dp 2, tp 2, dp 2 x tp 2 and ZeRO-1 (dp 2, and dp 2 x tp 2) must be BITWISE those recorded in
# tests/e2e/golden/tiny_numbers.json for this machine: every per-step loss, every eval loss (as
# hex floats) and every rank's param_checksum in summary.json. The record set is cores.<variant>
# when the file has one for this machine's build.blas_variant of `meshtrain info --json` (the
# OpenBLAS core plus the L2 cache size per core, e.g. "SkylakeX/l2=2097152"), else cores.<core>
# (build.blas_core, the core of the banner); each run's banner is checked to name the core. A
# machine with neither record fails, naming both keys and how to record them.
# Why: issue #13 made the model a plug-in and split the trainer; the recorded numbers come from
# the commit before it (c9fd78c, core SkylakeX) and from commits verified bitwise against that
# record (see each set's "source"), so any change to the floating-point work of GPT-2 (op order,
# a reduction, init, the optimizer, the gradient sync) fails here. OpenBLAS's sgemm kernels
# differ per core (AVX-512 SkylakeX, AVX2 Haswell/Zen), hence one record set per core; and one
# core can give other bits on another machine (launch/blas_env.h, blas_variant_name: SkylakeX on
# a 2 MiB-L2 Xeon vs the machine of the SkylakeX record), hence the optional per-variant sets,
# which take precedence over their core's. A deliberate change of the numbers re-records the
# file (tests/e2e/golden/record_golden.sh) and says why in its commit.
source "$(dirname "$0")/lib.sh"
GOLDEN="$MT_SOURCE_DIR/tests/e2e/golden/tiny_numbers.json"
read -r core variant < <("$MESHTRAIN" info --json | python3 -c 'import json,sys
b = json.load(sys.stdin)["build"]; print(b["blas_core"], b.get("blas_variant", ""))') ||
  fail "no BLAS core from $MESHTRAIN info --json"
[[ -n $core ]] || fail "no BLAS core from $MESHTRAIN info --json"
# The record set: cores.<variant> if recorded, else cores.<core>; the key is the one line on stdout.
key=$(python3 - "$GOLDEN" "$core" "$variant" <<'PY'
import json, sys
path, core, variant = sys.argv[1:]
cores = json.load(open(path))["cores"]
if variant and variant in cores:
    key, why = variant, f"this machine's variant {variant}"
elif core in cores:
    key, why = core, (f"core {core} (no set for this machine's variant {variant}, recorded: {', '.join(cores)})"
                      if variant else f"core {core}")
else:
    print(f"tests/e2e/golden/tiny_numbers.json has no numbers for this machine: neither cores.{variant or '<variant>'} "
          f"(OpenBLAS core and L2 cache size) nor cores.{core} (the plain core) is recorded (recorded: "
          f"{', '.join(cores)}). Record them on this machine from a commit whose numbers pass on a recorded machine "
          "(never from the branch under test), as tests/e2e/golden/record_golden.sh's header says: "
          "MESHTRAIN=<that commit's build>/bin/meshtrain MT_SOURCE_DIR=<that commit's tree> "
          "bash tests/e2e/golden/record_golden.sh [--variant]; or set OPENBLAS_CORETYPE to a recorded core this CPU "
          "runs (e.g. Haswell on any AVX2 CPU).", file=sys.stderr)
    sys.exit(1)
print(f"OpenBLAS core {core}: comparing with cores.{key}, the set of {why}: {cores[key]['source']}", file=sys.stderr)
print(key)
PY
) || fail "no golden numbers for OpenBLAS core $core (machine variant ${variant:-unknown})"
if [[ $key == "$core" && -n $variant ]]; then
  differ_hint="; this machine's variant $variant has no set of its own: if a commit that passes on the machine"
  differ_hint+=" of cores.$core gives these numbers here too, the machine, not the code, differs; then record this"
  differ_hint+=" variant from that commit (tests/e2e/golden/record_golden.sh --variant, see its header)"
else
  differ_hint=""
fi
read -r -a cfg < <(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"])' "$GOLDEN")
cd "$MT_SOURCE_DIR"
for name in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["runs"]))' "$GOLDEN"); do
  read -r np overrides < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][sys.argv[2]]
print(r["np"], " ".join(r["overrides"]))' "$GOLDEN" "$name")
  # shellcheck disable=SC2086
  if [[ $np == 1 ]]; then
    "$MESHTRAIN" train "${cfg[@]}" $overrides run.dir="$WORK/$name" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name"; }
  else
    mpi -np "$np" "$MESHTRAIN" train "${cfg[@]}" $overrides run.dir="$WORK/$name" >"$WORK/$name.log" 2>&1 ||
      { cat "$WORK/$name.log"; fail "$name"; }
  fi
  grep -q "BLAS core $core " "$WORK/$name.log" || { cat "$WORK/$name.log"; fail "$name did not run on BLAS core $core"; }
  python3 - "$GOLDEN" "$key" "$name" "$WORK/$name" <<'PY' || fail "$name: numbers differ from the ones recorded in cores.$key$differ_hint"
import json, sys
g = json.load(open(sys.argv[1]))["cores"][sys.argv[2]]["runs"][sys.argv[3]]
recs = [json.loads(l) for l in open(sys.argv[4] + "/metrics.jsonl")]
got = {"losses": [r["loss"].hex() for r in recs if "loss" in r],
       "eval_losses": [r["eval_loss"].hex() for r in recs if "eval_loss" in r],
       "param_checksums": json.load(open(sys.argv[4] + "/summary.json"))["param_checksums"]}
bad = [k for k in got if got[k] != g[k]]
for k in bad:
    first = next((i for i, (a, b) in enumerate(zip(got[k], g[k])) if a != b), min(len(got[k]), len(g[k])))
    print(f"{sys.argv[3]}: {k} differ first at index {first}: got {got[k][first:first+2]}, recorded {g[k][first:first+2]}"
          f" ({len(got[k])} vs {len(g[k])} values)")
print(f"{sys.argv[3]}: {len(got['losses'])} losses, {len(got['eval_losses'])} eval losses, "
      f"{len(got['param_checksums'])} checksums: {'bitwise identical' if not bad else 'DIFFERENT'}")
sys.exit(1 if bad else 0)
PY
done
echo "PASS: golden numbers (OpenBLAS core $core, record set cores.$key)"
