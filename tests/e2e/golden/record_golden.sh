#!/usr/bin/env bash
# What: records the golden numbers of tests/e2e/golden_numbers_test.sh for the OpenBLAS core that
# $MESHTRAIN uses on this machine (build.blas_core of `meshtrain info --json`; OPENBLAS_CORETYPE=
# forces one, e.g. Haswell on an AVX-512 or Zen machine). It runs every run of the golden file's
# "runs" with its "config", in $MT_SOURCE_DIR, and writes the per-step losses, eval losses (hex
# floats) and summary.json's param_checksums under "cores".<core>, replacing that core's set.
# With --variant it writes them under "cores".<variant> instead: this machine's
# build.blas_variant ("<core>/l2=<L2 bytes per core>", launch/blas_env.h), or, for a $MESHTRAIN
# that predates that field, the same string made here from `getconf LEVEL2_CACHE_SIZE` (glibc's
# sysconf, as meshtrain does). The test takes a variant's set before its core's.
# Why: OpenBLAS's sgemm kernels differ per core (AVX-512 SkylakeX, AVX2 Haswell/Zen), so the
# bitwise numbers do too, and each core a test machine may have needs its own record. One core
# can also give other bits on another machine (SkylakeX on a 2 MiB-L2 Xeon vs the machine of the
# SkylakeX record); such a machine gets a variant set, so the core's set stays that of the
# machines it was verified on. Use --variant only when a commit that passes on the machine of the
# core's set fails here with that same core (that is, the machine differs, not the code).
# Record from a commit whose numbers passed the test bitwise on an already recorded core, never
# from the branch under test (recording from it would hide the change the test is there to see):
#   git worktree add /tmp/golden-base <commit>          # detached
#   (cd /tmp/golden-base && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target meshtrain)
#   MESHTRAIN=/tmp/golden-base/build/bin/meshtrain MT_SOURCE_DIR=/tmp/golden-base \
#     bash tests/e2e/golden/record_golden.sh            # run from the branch that holds the golden file
# then commit tests/e2e/golden/tiny_numbers.json saying which commit and machine recorded it.
#   ... bash tests/e2e/golden/record_golden.sh --variant   # this machine's variant set instead
# Usage: record_golden.sh [--variant] [GOLDEN_JSON]   (default: tiny_numbers.json beside this script)
variant=0
if [[ ${1:-} == --variant ]]; then variant=1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
GOLDEN=$(realpath "${1:-$here/tiny_numbers.json}")
source "$here/../lib.sh"
info=$("$MESHTRAIN" info --json) || fail "$MESHTRAIN info --json"
core=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["build"]["blas_core"])' "$info")
openblas=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["build"]["openblas"])' "$info")
l2=$(getconf LEVEL2_CACHE_SIZE 2>/dev/null || true)
l3=$(getconf LEVEL3_CACHE_SIZE 2>/dev/null || true)
[[ $l2 =~ ^[1-9][0-9]*$ ]] || l2=unknown
[[ $l3 =~ ^[1-9][0-9]*$ ]] || l3=unknown
key=$core
if ((variant)); then
  key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["build"].get("blas_variant", ""))' "$info")
  [[ -n $key ]] || key="$core/l2=$l2"  # a meshtrain older than build.blas_variant: the same string
  [[ $key == "$core/"* ]] || fail "variant $key does not start with the core $core"
fi
commit=$(git -C "$MT_SOURCE_DIR" rev-parse --short HEAD)
[[ -z $(git -C "$MT_SOURCE_DIR" status --porcelain --untracked-files=no) ]] || commit="$commit+uncommitted changes"
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "recording OpenBLAS core $core as cores.$key from meshtrain $commit ($MT_SOURCE_DIR) into $GOLDEN"
read -r -a cfg < <(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"])' "$GOLDEN")
cd "$MT_SOURCE_DIR"
for name in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["runs"]))' "$GOLDEN"); do
  read -r np overrides < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["runs"][sys.argv[2]]
print(r["np"], " ".join(r["overrides"]))' "$GOLDEN" "$name")
  echo "  $name: np $np ${overrides:-(no overrides)}"
  # shellcheck disable=SC2086
  if [[ $np == 1 ]]; then
    "$MESHTRAIN" train "${cfg[@]}" $overrides run.dir="$WORK/$name" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name"; }
  else
    mpi -np "$np" "$MESHTRAIN" train "${cfg[@]}" $overrides run.dir="$WORK/$name" >"$WORK/$name.log" 2>&1 ||
      { cat "$WORK/$name.log"; fail "$name"; }
  fi
  grep -q "BLAS core $core " "$WORK/$name.log" || { cat "$WORK/$name.log"; fail "$name did not run on BLAS core $core"; }
done
python3 - "$GOLDEN" "$WORK" "$key" "meshtrain $commit, recorded by tests/e2e/golden/record_golden.sh on $(date -u +%F)\
 (CPU: $cpu; L2 $l2 bytes per core, L3 $l3 bytes; ${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; }$openblas)" <<'PY'
import json, sys
path, work, key, source = sys.argv[1:]
g = json.load(open(path))
runs = {}
for name in g["runs"]:
    recs = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl")]
    runs[name] = {"losses": [r["loss"].hex() for r in recs if "loss" in r],
                  "eval_losses": [r["eval_loss"].hex() for r in recs if "eval_loss" in r],
                  "param_checksums": json.load(open(f"{work}/{name}/summary.json"))["param_checksums"]}
g.setdefault("cores", {})[key] = {"source": source, "runs": runs}
with open(path, "w") as f:
    json.dump(g, f, indent=1)
    f.write("\n")
print(f"wrote cores.{key} ({len(runs)} runs): {source}")
PY
