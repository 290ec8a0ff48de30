// What: an nccl-tests-style all-reduce benchmark: for message sizes from min_bytes to
// max_bytes it times the framework's Communicator::all_reduce and the raw MPI_Allreduce on the
// same buffers, checks both results against a closed form, and prints one table (rank 0).
// Why: the framework's collectives must not be slower than the library they wrap; this is
// the number to look at when changing mpi_communicator.cc (and later to compare NCCL).
// `meshtrain bench allreduce` calls it.
//
// Columns: bytes, count (f32 elements), then for the framework and for raw MPI: time(us),
// algbw = bytes / time (GB/s), busbw = algbw x 2(n-1)/n (the bandwidth each link needs, as in
// nccl-tests); fw/raw = framework busbw / raw busbw; check = both results correct on every rank.
// Times are the max over ranks of each rank's mean time per iteration, in the median of
// `rounds` rounds that alternate which side runs first (VM noise is large here).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <ostream>
#include <vector>

#include "parallel/communicator.h"

namespace mt::parallel {

struct AllreduceBenchOptions {
  size_t min_bytes = 4096;
  size_t max_bytes = 64u << 20;
  int factor = 2;   // size step: bytes *= factor
  int iters = 20;   // timed iterations per round
  int warmup = 3;   // untimed iterations per size (of each side)
  int rounds = 5;   // timed rounds per size; the median round is reported
};

struct AllreduceBenchRow {
  size_t bytes = 0;
  size_t count = 0;
  double fw_us = 0, fw_algbw = 0, fw_busbw = 0;     // framework (Communicator::all_reduce)
  double raw_us = 0, raw_algbw = 0, raw_busbw = 0;  // MPI_Allreduce on `raw`
  double ratio = 0;                                 // fw_busbw / raw_busbw
  bool fw_ok = false, raw_ok = false;               // closed-form check on every rank
};

// Collective over `comm` and `raw` (same ranks, same order: e.g. the world communicator and
// MPI_COMM_WORLD). Prints on rank 0 only; returns the rows on every rank.
std::vector<AllreduceBenchRow> run_allreduce_bench(Communicator& comm, MPI_Comm raw, const AllreduceBenchOptions& opt,
                                                   std::ostream& out);

}  // namespace mt::parallel
