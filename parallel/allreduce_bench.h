// What: an nccl-tests-style all-reduce benchmark: for message sizes from min_bytes to
// max_bytes it times the framework's Communicator::iall_reduce + Work::wait_stream() (on a
// host backend the same as all_reduce) and the backend's raw library call (MPI_Allreduce,
// ncclAllReduce) on the same buffers, checks both results against a closed form, and
// prints one table (rank 0). Buffers live on the communicator's device
// (host memory for MPI, GPU memory for NCCL and host staging).
// Why: the framework's collectives must not be slower than the library they wrap; this is
// the number to look at when changing mpi_communicator.cc, mpi_algorithms.cc or nccl_communicator.cc.
// `meshtrain bench allreduce [--device cuda] [--backend nccl|mpi]` calls it.
//
// Columns: bytes, count (f32 elements), then for the framework and for the raw call: time(us),
// algbw = bytes / time (GB/s), busbw = algbw x 2(n-1)/n (the bandwidth each link needs, as in
// nccl-tests); fw/raw = framework busbw / raw busbw; check = both results correct on every rank.
// Times are the max over ranks of each rank's mean time per iteration (a loop of `iters`
// calls, then one wait for the device: the framework's synchronize(), the raw stream's
// synchronize), in the median of `rounds` rounds that alternate which side runs first.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace mt::core {
class Device;
}

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
  double raw_us = 0, raw_algbw = 0, raw_busbw = 0;  // the baseline (MPI_Allreduce, ncclAllReduce)
  double ratio = 0;                                 // fw_busbw / raw_busbw
  bool fw_ok = false, raw_ok = false;               // closed-form check on every rank (raw_ok is true
                                                    // when the baseline does not use the buffer)
};

// The side-by-side baseline: the backend's own all-reduce (f32 sum, in place), as bare as
// the library allows. `run` may only enqueue (NCCL); `sync` waits for what it enqueued.
struct AllreduceBaseline {
  std::string name;                                   // "MPI_Allreduce", "ncclAllReduce", ...
  std::function<void(float* buf, size_t count)> run;  // buf is the framework's device buffer
  std::function<void()> sync;
  bool uses_buffer = true;  // false: works on its own host copy (staging's copy-free bound): not checked
};
// The baseline for `comm`'s backend (under any TimeoutCommunicator): MPI_Allreduce on its
// MPI communicator, ncclAllReduce on its NCCL comm and stream, or for host staging
// MPI_Allreduce on a host buffer (what staging costs over plain MPI). In communicator_factory.cc.
AllreduceBaseline make_allreduce_baseline(Communicator& comm);

// Collective over `comm` and `timing` (same ranks, same order: e.g. a communicator over the
// world and MPI_COMM_WORLD; `timing` carries the barriers and the max over ranks). `device`
// is where comm's buffers live. Prints on rank 0 only; returns the rows on every rank.
std::vector<AllreduceBenchRow> run_allreduce_bench(Communicator& comm, core::Device& device,
                                                   const AllreduceBaseline& raw, MPI_Comm timing,
                                                   const AllreduceBenchOptions& opt, std::ostream& out);

}  // namespace mt::parallel
