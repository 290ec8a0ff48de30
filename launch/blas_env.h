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
// "<core>/l2=<bytes>" (e.g. "SkylakeX/l2=2097152"; "l2=unknown" where the C library cannot tell):
// the OpenBLAS core plus the per-core L2 cache size, from sysconf(_SC_LEVEL2_CACHE_SIZE).
// Why: the same core name, library (Debian's OpenBLAS 0.3.21) and binary give different sgemm
// bits on different machines: the SkylakeX golden record (made on another AVX-512 machine) and an
// Intel Xeon with 2 MiB L2 per core differ from the first backward step on, at 1 and 2 threads
// alike. A bitwise record (tests/e2e/golden_numbers_test.sh) therefore needs a finer key than the
// core. Which machine fact OpenBLAS's sgemm follows is not pinned down; the L2 size is the one
// it reads at run time to size its GEMM blocks (kernel/setparam-ref.c, get_l2_size(), on the
// cores whose blocking depends on it), and it separates the CPU families met so far (Zen 4/5:
// 1 MiB, Sapphire/Emerald Rapids: 2 MiB, Ice Lake SP: 1.25 MiB, Skylake SP: 1 MiB). The L3 size
// and the model name are left out: they vary between SKUs and VM shapes of one
// micro-architecture and would split records that are bitwise the same. glibc's sysconf reads
// the CPUID cache leaves, so `getconf LEVEL2_CACHE_SIZE` gives scripts the same number
// (tests/e2e/golden/record_golden.sh uses it for binaries that predate this field).
std::string blas_variant_name();
// Measured single-precision GEMM rate (GFLOP/s) for an n x n x n product with the current
// BLAS threads: best of `reps` after one warm-up.
double measure_sgemm_gflops(int n, int reps);

}  // namespace mt::launch
