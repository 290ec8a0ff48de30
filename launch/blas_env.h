// What: the BLAS set-up of a meshtrain process: the OpenBLAS core type and thread count.
// Why (measured, see docs/architecture.md): Debian's OpenBLAS 0.3.21 predates Zen 5 and picks
// its AVX2 "Haswell" sgemm kernel there (~205 GFLOP/s on 2 cores); its AVX-512 "SkylakeX"
// kernel runs correctly on Zen 5 and reaches ~390 GFLOP/s. OpenBLAS reads OPENBLAS_CORETYPE
// once, when the library is loaded, before main() runs, so meshtrain re-executes itself with
// OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512 (F, BW, DQ, VL) and the variable is not
// set. Set OPENBLAS_CORETYPE yourself to choose (e.g. Haswell), or MT_BLAS_REEXEC=0 to keep
// the library's own choice. The re-exec happens before MPI_Init, so it is safe under mpirun
// and srun (same PID, same environment plus the one variable).
#pragma once

#include <string>

namespace mt::launch {

void maybe_reexec_for_blas(int argc, char** argv);
std::string blas_core_name();
// Measured single-precision GEMM rate (GFLOP/s) for an n x n x n product with the current
// BLAS threads: best of `reps` after one warm-up.
double measure_sgemm_gflops(int n, int reps);

}  // namespace mt::launch
