#!/usr/bin/env bash
# The second README command: install what is missing, build, and run every test with ctest
# (unit tests, multi-rank MPI tests under mpirun, end-to-end runs of the meshtrain binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure -j2 --timeout 900 "$@"
