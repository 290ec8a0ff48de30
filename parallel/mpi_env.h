// What: MpiEnv, the RAII owner of the MPI library in a process (MPI_Init_thread ...
// MPI_Finalize), and abort_job(), the one way a failing rank ends the whole job.
// Why: MPI must be initialised once, before any communicator exists, and finalised after the
// last one is gone; a rank that fails while peers sit in a collective must take the job down
// (MPI_Abort) or the peers wait forever.
//
// MpiEnv requests MPI_THREAD_MULTIPLE and records what the library provides; meshtrain
// needs at least MPI_THREAD_FUNNELED (MPI is called only from the thread that owns the
// communicators, which need not be the only thread: OpenMP/BLAS workers never call MPI).
// It sets MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF so MPI failures come back
// as codes that the communicator turns into mt::core::Error, and stamps the process rank
// on log lines and errors (core::set_process_rank).
#pragma once

#include <string>

namespace mt::parallel {

// MPI's message for a return code, with the code and its error class (the library part of
// every MPI error meshtrain reports).
std::string mpi_error_string(int code);

class MpiEnv {
 public:
  // Initialises MPI unless it already is (then this object neither initialises nor
  // finalises it). Throws mt::core::Error if the thread level is below FUNNELED.
  MpiEnv(int* argc, char*** argv);
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int thread_level() const { return thread_level_; }  // MPI_THREAD_* provided
  // Placement on the node, from MPI itself (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)), not
  // from launcher variables: ranks sharing this node, this rank's index among them, nodes.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  int num_nodes() const { return num_nodes_; }
  const char* thread_level_name() const { return level_name(thread_level_); }

  static const char* level_name(int level);  // "MPI_THREAD_FUNNELED", ...
  // MPI_Init has run and MPI_Finalize has not.
  static bool active();
  // Ends the job: MPI_Abort(MPI_COMM_WORLD, code) when MPI is active (every rank of the job
  // is killed), else std::exit(code). Flushes stdout/stderr first. A rank still alive 10 s
  // after MPI_Abort (a launcher that cannot be reached) exits by itself.
  [[noreturn]] static void abort_job(int code);

 private:
  bool owns_ = false;
  int rank_ = 0;
  int size_ = 1;
  int thread_level_ = 0;
  int local_rank_ = 0;
  int local_size_ = 1;
  int num_nodes_ = 1;
};

}  // namespace mt::parallel
