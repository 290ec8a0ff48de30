#!/usr/bin/env bash
# GPU first light in one call (issue: GPU first light). On a lent GPU machine, in this order,
# each step under its own time limit so that one hang cannot eat the device budget:
#   1. binaries: unpack .gpu-bundle/ (made here by scripts/gpu_bundle.sh: sm_90, Debian's
#      MPI/HDF5/BLAS libraries beside it) or, without one, build build-cuda there
#      (-DCMAKE_CUDA_ARCHITECTURES=90, all cores)
#   2. the CUDA tests (tests/cuda, and the NCCL tests at one rank: NCCL needs a GPU per rank)
#   3. bench step: GPT-2 124M bf16 and fp32 at micro_batch 16 x seq_len 1024, a Llama of
#      similar size in bf16, and a per-op time breakdown (bench step --profile)
#   4. bench allreduce --device cuda --backend nccl (framework vs raw ncclAllReduce) at np 1
#      (and np = GPU count where the machine has more than one GPU)
#   5. 50 training steps of examples/tiny.yaml on CPU, CUDA fp32 and CUDA bf16, losses compared
#   6. writes the logs and summary.txt under $OUT (8 files at most)
# Without a GPU (a rehearsal on the CPU machine) it runs what it can and marks each GPU step
# SKIPPED with the reason. The whole script stays under 8 minutes (the limits below add up to
# 7.5 and each step usually takes a fraction of its limit).
#
# Usage, from the CPU machine (device tool):  scripts/gpu_bundle.sh, then
#   run  command="bash scripts/gpu_check.sh"  carry=[".gpu-bundle"]  timeout_s=540
# Environment: OUT (log folder, default ./gpu-check-out), MT_GPU_BUILD=1 (build there even
# with a bundle), MT_GPU_BUILD_DIR (default build-cuda), MT_GPU_ARCH (default 90).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
START=$SECONDS
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME LIMIT_S LOG CMD...: runs CMD under `timeout`, appending to LOG; one summary line.
run_step() {
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS rc
  { echo; echo "===== $name (limit ${limit}s): $*"; } >> "$log"
  timeout -k 10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  local status=PASS
  ((rc == 124 || rc == 137)) && status="TIMEOUT after ${limit}s"
  ((rc == 77)) && status="SKIPPED"
  ((rc != 0 && rc != 77 && rc != 124 && rc != 137)) && status="FAIL (rc $rc)"
  note "$(printf '%-34s %-22s %4ds  %s' "$name" "$status" $((SECONDS - t0)) "$(basename "$log")")"
  return $rc
}

# ---------------------------------------------------------------- 0. the machine
ENV_LOG=$OUT/1-env.log
{
  echo "date: $(date -u +%FT%TZ)"; uname -a
  (. /etc/os-release 2>/dev/null && echo "os: $PRETTY_NAME"); echo "glibc: $(ldd --version 2>&1 | head -1)"
  echo "cores: $(nproc)"; free -g | head -2
  nvidia-smi 2>&1 | head -20
  command -v nvcc && nvcc --version | tail -2
} > "$ENV_LOG" 2>&1
if GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); ((GPUS > 0)); then
  HAVE_GPU=1; note "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1) x $GPUS"
else
  HAVE_GPU=0; GPUS=0; note "GPU: none (nvidia-smi finds no GPU): the GPU steps below are SKIPPED"
fi

# The CUDA libraries on this machine: the toolkit's, the system's, or the Python wheels'
# (PyTorch's image ships NCCL and cuDNN only as nvidia-* wheels).
cuda_lib_dirs=()
add_lib_dir_for() {  # add_lib_dir_for SONAME: first folder holding it, unless one we have does
  local d
  for d in "${cuda_lib_dirs[@]}"; do [[ -e "$d/$1" ]] && return 0; done
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu \
           $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | xargs -I{} sh -c 'ls -d {}/nvidia/*/lib 2>/dev/null'); do
    [[ -e "$d/$1" ]] && { cuda_lib_dirs+=("$d"); return 0; }
  done
  echo "cuda library $1: not found" >> "$ENV_LOG"; return 1
}
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do add_lib_dir_for "$so"; done
CUDA_LIB_PATH=$(IFS=:; echo "${cuda_lib_dirs[*]}")
echo "cuda library folders: $CUDA_LIB_PATH" >> "$ENV_LOG"

# ---------------------------------------------------------------- 1. binaries
BUILD_LOG=$OUT/2-build.log
: > "$BUILD_LOG"
BIN=""
if [[ -f .gpu-bundle/bundle.tar.xz && "${MT_GPU_BUILD:-0}" != 1 ]]; then
  B=${TMPDIR:-/tmp}/mt-gpu-bundle
  rm -rf "$B"; mkdir -p "$B"
  if run_step "1. unpack .gpu-bundle" 60 "$BUILD_LOG" tar -C "$B" -xJf .gpu-bundle/bundle.tar.xz; then
    cat "$B/BUNDLE_INFO" >> "$BUILD_LOG"
    export LD_LIBRARY_PATH="$B/lib${CUDA_LIB_PATH:+:$CUDA_LIB_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export OPAL_PREFIX="$B/ompi/usr"              # Open MPI's plugins and help texts, relocated
    export OMPI_MCA_ess_singleton_isolated=1      # one process, no mpirun: no daemon to start
    { echo "ldd meshtrain:"; ldd "$B/bin/meshtrain"; } >> "$BUILD_LOG" 2>&1
    if ldd "$B/bin/meshtrain" | grep -q "not found"; then
      note "   bundle: libraries not found: $(ldd "$B/bin/meshtrain" | awk '/not found/{print $1}' | tr '\n' ' ')"
    elif run_step "1. bundle's meshtrain runs" 30 "$BUILD_LOG" "$B/bin/meshtrain" info; then
      BIN=$B/bin
    fi
  fi
  [[ -n "$BIN" ]] || note "   the bundle does not run here: building instead"
fi
if [[ -z "$BIN" ]]; then
  BD=${MT_GPU_BUILD_DIR:-build-cuda}
  # NCCL and cuDNN from wheels lack the unversioned .so names CMake's find_library wants.
  hints=()
  for pkg in nccl cudnn; do
    for d in "${cuda_lib_dirs[@]}"; do
      if [[ "$d" == */nvidia/$pkg/lib ]]; then
        root=$(dirname "$d"); lnk=${TMPDIR:-/tmp}/mt-$pkg; mkdir -p "$lnk/lib"
        ln -sfn "$root/include" "$lnk/include"
        for f in "$d"/lib"$pkg"*.so.*; do ln -sf "$f" "$lnk/lib/$(basename "$f")"; ln -sf "$f" "$lnk/lib/$(basename "$f" | sed 's/\.so\..*/.so/')"; done
        hints+=("-D$(echo "$pkg" | tr a-z A-Z)_ROOT=$lnk")
      fi
    done
  done
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  [[ -f "$BD/CMakeCache.txt" ]] && gen=()
  if run_step "1. configure $BD" 60 "$BUILD_LOG" cmake -S . -B "$BD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
       -DMT_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${MT_GPU_ARCH:-90}" "${hints[@]}" &&
     run_step "1. build $BD (-j$(nproc))" "${MT_GPU_BUILD_LIMIT:-240}" "$BUILD_LOG" cmake --build "$BD" -j"$(nproc)" --target \
       meshtrain cuda_device_test cuda_ops_test cuda_llama_ops_test cuda_train_test nccl_bootstrap_test nccl_communicator_test; then
    BIN=$ROOT/$BD/bin
    export LD_LIBRARY_PATH="${CUDA_LIB_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
if [[ -z "$BIN" ]]; then
  note "no binaries: see $(basename "$BUILD_LOG"); nothing else can run"
  note "total $((SECONDS - START)) s"; exit 1
fi
MT=$BIN/meshtrain
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
"$MT" info >> "$ENV_LOG" 2>&1

# ---------------------------------------------------------------- 2. CUDA tests
TEST_LOG=$OUT/3-tests.log
: > "$TEST_LOG"
gtest_step() {  # gtest_step BINARY LIMIT: a GoogleTest binary; its passed/skipped/failed counts
  local t=$1 limit=$2 before rc part
  before=$(wc -l < "$TEST_LOG")
  run_step "2. $t" "$limit" "$TEST_LOG" "$BIN/$t" --gtest_color=no
  rc=$?
  part=$(tail -n +"$((before + 1))" "$TEST_LOG")
  local n_ok n_skip n_fail why
  n_ok=$(grep -oP '^\[  PASSED  \] \K[0-9]+' <<<"$part" | head -1)
  n_skip=$(grep -oP '^\[  SKIPPED \] \K[0-9]+(?= test)' <<<"$part" | head -1)
  n_fail=$(grep -oP '^\[  FAILED  \] \K[0-9]+(?= test)' <<<"$part" | head -1)
  why=$(grep -m1 -A1 ': Skipped$' <<<"$part" | tail -1 | sed 's/^ *//' | cut -c1-120)
  note "   passed ${n_ok:-0}, skipped ${n_skip:-0}, failed ${n_fail:-0}${why:+ (skip reason: $why)}"
  return $rc
}
for t in cuda_device_test cuda_ops_test cuda_llama_ops_test cuda_train_test; do gtest_step "$t" 60; done
# NCCL at one rank: a singleton MPI process (one GPU: NCCL refuses two ranks on one device)
for t in nccl_bootstrap_test nccl_communicator_test; do gtest_step "$t" 45; done
if ((HAVE_GPU)); then
  run_step "2. train_gpu_test.sh (20 steps)" 90 "$TEST_LOG" env MESHTRAIN="$MT" MT_SOURCE_DIR="$ROOT" \
    bash tests/cuda/train_gpu_test.sh
else
  note "2. train_gpu_test.sh                SKIPPED: no GPU"
fi
grep -E '^\[  FAILED  \]' "$TEST_LOG" | sort -u | head -20 | sed 's/^/   /' | tee -a "$SUMMARY" >/dev/null

# ---------------------------------------------------------------- 3. bench step
BENCH_LOG=$OUT/4-bench-step.log
: > "$BENCH_LOG"
GPT=(examples/gpt2-124m.yaml train.device=cuda train.micro_batch=16 train.batch_size=16 model.seq_len=1024)
LLAMA=(examples/llama-tiny.yaml train.device=cuda model.n_layer=12 model.n_embd=768 model.n_head=12
       model.n_kv_head=4 model.ffn_dim=2048 model.vocab_size=32000 model.seq_len=1024
       train.micro_batch=16 train.batch_size=16)
bench_figures() {  # the summary lines of the last bench step in the log
  grep -E '^  (ms/step|tokens/s|model GFLOP/s|MFU|memory per rank|peak)' "$BENCH_LOG" | tail -6 | sed 's/^/   /' >> "$SUMMARY"
}
if ((HAVE_GPU)); then
  run_step "3. bench step gpt2-124m bf16" 75 "$BENCH_LOG" "$MT" bench step "${GPT[@]}" train.precision=bf16 --warmup 3 --steps 10 && bench_figures
  run_step "3. bench step gpt2-124m fp32" 75 "$BENCH_LOG" "$MT" bench step "${GPT[@]}" train.precision=fp32 --warmup 2 --steps 5 && bench_figures
  run_step "3. bench step llama ~124M bf16" 60 "$BENCH_LOG" "$MT" bench step "${LLAMA[@]}" train.precision=bf16 --warmup 3 --steps 10 && bench_figures
else
  note "3. bench step (GPU)                 SKIPPED: no GPU; the CPU figures for tiny instead"
  run_step "3. bench step tiny (cpu)" 60 "$BENCH_LOG" "$MT" bench step examples/tiny.yaml --warmup 1 --steps 3 && bench_figures
fi
PROFILE_LOG=$OUT/7-profile.log
: > "$PROFILE_LOG"
if ((HAVE_GPU)); then
  run_step "3. op profile gpt2-124m bf16" 60 "$PROFILE_LOG" "$MT" bench step "${GPT[@]}" train.precision=bf16 --warmup 2 --steps 3 --profile
else
  run_step "3. op profile tiny (cpu)" 45 "$PROFILE_LOG" "$MT" bench step examples/tiny.yaml --warmup 1 --steps 2 --profile
fi
grep -A8 "^  op " "$PROFILE_LOG" | head -9 | sed 's/^/   /' >> "$SUMMARY"

# ---------------------------------------------------------------- 4. all-reduce
AR_LOG=$OUT/5-allreduce.log
: > "$AR_LOG"
if ((HAVE_GPU)); then
  run_step "4. bench allreduce nccl np 1" 45 "$AR_LOG" "$MT" bench allreduce --device cuda --backend nccl \
    --min-bytes 1048576 --max-bytes 268435456 --iters 20
  tail -12 "$AR_LOG" | sed 's/^/   /' >> "$SUMMARY"
  if ((GPUS > 1)) && command -v mpirun >/dev/null; then
    run_step "4. bench allreduce nccl np $GPUS" 60 "$AR_LOG" mpirun --allow-run-as-root -np "$GPUS" \
      -x LD_LIBRARY_PATH -x OPAL_PREFIX "$MT" bench allreduce --device cuda --backend nccl --min-bytes 1048576
    tail -12 "$AR_LOG" | sed 's/^/   /' >> "$SUMMARY"
  fi
else
  note "4. bench allreduce nccl             SKIPPED: no GPU"
fi

# ---------------------------------------------------------------- 5. losses, CUDA vs CPU
LOSS_LOG=$OUT/6-losses.log
: > "$LOSS_LOG"
COMMON=(examples/tiny.yaml train.steps=50 train.eval_every=0 train.log_every=10 run.tensorboard=false)
R=${TMPDIR:-/tmp}/mt-gpu-runs; rm -rf "$R"
run_step "5. train tiny 50 steps cpu" 90 "$LOSS_LOG" "$MT" train "${COMMON[@]}" run.dir="$R/cpu"
if ((HAVE_GPU)); then
  run_step "5. train tiny 50 steps cuda fp32" 45 "$LOSS_LOG" "$MT" train "${COMMON[@]}" train.device=cuda train.precision=fp32 run.dir="$R/fp32"
  run_step "5. train tiny 50 steps cuda bf16" 45 "$LOSS_LOG" "$MT" train "${COMMON[@]}" train.device=cuda train.precision=bf16 run.dir="$R/bf16"
  # fp32: same maths, another summation order (1e-3 relative after 50 steps); bf16 mixed
  # precision: 8-bit mantissas in the products, fp32 master weights (3e-2 relative).
  python3 - "$R" >> "$LOSS_LOG" 2>&1 <<'XEOF'
import json, sys
def load(d):
    try: return [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l]
    except OSError: return []
cpu = load(sys.argv[1] + "/cpu")
for name, tol in (("fp32", 1e-3), ("bf16", 3e-2)):
    gpu = load(sys.argv[1] + "/" + name)
    if not cpu or len(gpu) != len(cpu):
        print(f"{name}: cannot compare ({len(gpu)} vs {len(cpu)} steps)"); continue
    worst = max(abs(a - b) / abs(b) for a, b in zip(gpu, cpu))
    print(f"{name}: {len(cpu)} steps, max relative loss difference vs cpu {worst:.2e} "
          f"(tolerance {tol:g}) {'PASS' if worst <= tol else 'FAIL'}; final cpu {cpu[-1]:.5f} {name} {gpu[-1]:.5f}")
XEOF
  grep -E '^(fp32|bf16):' "$LOSS_LOG" | sed 's/^/   /' >> "$SUMMARY"
else
  note "5. cuda fp32/bf16 runs              SKIPPED: no GPU"
fi

note "total $((SECONDS - START)) s; logs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
echo; cat "$SUMMARY"
