// What: MPI initialisation and finalisation, and job abort. See mpi_env.h.
#include "parallel/mpi_env.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"

namespace mt::parallel {

namespace {
constexpr int kAbortGraceS = 10;  // abort_job(): seconds MPI_Abort may take before the rank exits itself
}  // namespace

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  std::string s;
  if (MPI_Error_string(code, buf, &len) == MPI_SUCCESS) s.assign(buf, static_cast<size_t>(len));
  else s = "unknown MPI error";
  int cls = 0;
  if (MPI_Error_class(code, &cls) == MPI_SUCCESS) s += fmt::format(" (MPI error code {}, class {})", code, cls);
  return s;
}

const char* MpiEnv::level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "MPI_THREAD_(unknown)";
  }
}

bool MpiEnv::active() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (fin) MT_FAIL("MPI was already finalised in this process; it cannot be initialised again");
  if (!init) {
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_);
    if (rc != MPI_SUCCESS) {
      throw core::Error("MPI_Init_thread failed")
          .with_library(mpi_error_string(rc))
          .with_hint("run under mpirun/srun, or check the MPI installation (ompi_info)")
          .with_where(__FILE__, __LINE__);
    }
    owns_ = true;
  } else {
    MPI_Query_thread(&thread_level_);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  core::set_process_rank(rank_, size_);
  MPI_Comm node = MPI_COMM_NULL;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    int leader = local_rank_ == 0 ? 1 : 0;
    MPI_Allreduce(&leader, &num_nodes_, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  }

  if (thread_level_ < MPI_THREAD_FUNNELED) {
    const int got = thread_level_;
    if (owns_) {
      MPI_Finalize();  // every rank gets the same level, so every rank finalises here
      owns_ = false;
    }
    throw core::Error(fmt::format("the MPI library provides only {}; meshtrain needs at least "
                                  "MPI_THREAD_FUNNELED (MPI calls from the main thread while "
                                  "OpenMP/BLAS threads run)",
                                  level_name(got)))
        .with_hint("use an MPI built with thread support (Open MPI: ompi_info | grep 'Thread support')")
        .with_where(__FILE__, __LINE__);
  }
}

MpiEnv::~MpiEnv() {
  if (owns_ && active()) MPI_Finalize();
}

void MpiEnv::abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (active()) {
    // Watchdog: MPI_Abort asks the launcher to end the job, and a launcher that cannot be
    // reached (its daemon dead, its host cut off) may never answer; this rank must not
    // outlive the abort in any case (Open MPI 4.1 returns from its request and exits at once;
    // the watchdog is for launchers that block).
    std::thread([code] {
      std::this_thread::sleep_for(std::chrono::seconds(kAbortGraceS));
      std::fprintf(stderr, "meshtrain: MPI_Abort did not end this rank within %d s: exiting\n", kAbortGraceS);
      std::_Exit(code);
    }).detach();
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is a fallback for broken launchers
  }
  std::exit(code);
}

}  // namespace mt::parallel
