#!/usr/bin/env bash
# The second README command: install what is missing, build, and run every test with ctest
# (unit tests, multi-rank MPI tests under mpirun, end-to-end runs of the meshtrain binary).
# Then, where the CUDA toolkit is installed (nvcc at $NVCC, default /usr/local/cuda/bin/nvcc),
# the CUDA build: build-cuda with -DMT_WITH_CUDA=ON (NCCL and cuDNN follow), compiled in full
# so GPU code cannot rot, and its CUDA tests (ctest label cuda, plus the two CPU communicator
# tests whose code depends on the GPU flags). Without a GPU the GPU tests skip;
# their reasons are printed after the run. MT_SKIP_CUDA_BUILD=1 leaves the CUDA build out.
# Extra arguments go to the CPU build's ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd build && ctest --output-on-failure -j2 --timeout 900 "$@")

NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
if [[ "${MT_SKIP_CUDA_BUILD:-0}" == 1 ]]; then
  echo "== CUDA build: skipped (MT_SKIP_CUDA_BUILD=1)"
  exit 0
fi
if [[ ! -x "$NVCC" ]]; then
  echo "== CUDA build: SKIPPED, no CUDA toolkit here ($NVCC not found): the GPU code was NOT compiled"
  exit 0
fi
echo "== CUDA build: build-cuda, -DMT_WITH_CUDA=ON, $("$NVCC" --version | tail -1)"
start=$SECONDS
BUILD_DIR=build-cuda bash scripts/build.sh -DMT_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC"
echo "== CUDA build: compiled in $((SECONDS - start)) s"
cd build-cuda
# The CPU tests whose code differs with the GPU flags on (the backend choice of the factory).
ctest -R '^(communicator_test|staging_communicator_test)_np2$' --output-on-failure -j2 --timeout 900
ctest -L cuda --output-on-failure -j2 --timeout 900
# ctest counts a GPU test that skipped as "Skipped" without saying why: print gtest's reason
# (the line after "...: Skipped") once per ctest test.
awk '
  / Testing: / { name = $NF }
  /: Skipped$/ { getline reason; key = name ": " reason; if (!(key in seen)) { seen[key] = 1; order[++n] = key }; count[key]++ }
  END {
    if (n == 0) exit
    print "== CUDA tests that skipped, and why:"
    for (i = 1; i <= n; ++i) printf "   %s (%d test%s)\n", order[i], count[order[i]], (count[order[i]] > 1 ? "s" : "")
  }' Testing/Temporary/LastTest.log
