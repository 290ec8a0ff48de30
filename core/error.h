// What: meshtrain's one exception type, carrying the context a user needs to fix the cause:
// the file, the YAML path and line, the rank, the underlying library's message, and a hint.
// Why: "errors are exceptions with context" (DEVELOPERS.md). Code throws mt::core::Error,
// adds context as it unwinds (`e.with_file(...)`), and launch/ prints it and aborts the job.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace mt::core {

struct ErrorContext {
  std::string file;       // file being read or written, if any
  std::string yaml_path;  // e.g. "model.n_head"
  int line = -1;          // 1-based line in `file`, -1 if unknown
  int rank = -1;          // MPI world rank, -1 if unknown
  std::string library;    // the underlying library's own message (MPI, HDF5, yaml-cpp, ...)
  std::string hint;       // what the user can do about it
  std::string where;      // source location in meshtrain (file:line) for developers
};

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, ErrorContext ctx = {});

  const std::string& message() const { return message_; }
  const ErrorContext& context() const { return ctx_; }
  const char* what() const noexcept override { return full_.c_str(); }

  // Builders: fill in context while unwinding; fields already set are kept.
  Error& with_file(const std::string& file);
  Error& with_yaml(const std::string& path, int line = -1);
  Error& with_rank(int rank);
  Error& with_library(const std::string& lib_message);
  Error& with_hint(const std::string& hint);
  Error& with_where(const char* src_file, int src_line);

 private:
  void rebuild();
  std::string message_;
  ErrorContext ctx_;
  std::string full_;
};

// A device allocation that did not fit (CUDA: cudaMalloc; CPU: the allocator, or the
// MT_CPU_MEMORY_LIMIT cap). The trainer turns it into a message with the measured and the
// predicted memory per rank and the `meshtrain plan` command to run.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// The rank stamped on errors and log lines. Set once by launch/ after MPI_Init; this is the
// process's identity, not parallel state (groups and meshes are passed explicitly).
void set_process_rank(int rank, int world_size);
int process_rank();
int process_world_size();

}  // namespace mt::core

// MT_CHECK(cond, "format {}", args...): throw mt::core::Error with the source location.
#define MT_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      throw ::mt::core::Error(::fmt::format(__VA_ARGS__)).with_where(__FILE__, __LINE__); \
    }                                                                              \
  } while (0)

#define MT_FAIL(...) throw ::mt::core::Error(::fmt::format(__VA_ARGS__)).with_where(__FILE__, __LINE__)
