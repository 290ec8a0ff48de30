// What: the run directory's machine-readable outputs: metrics.jsonl (one JSON object per
// line, appended and flushed per step, so a crashed run keeps every finished step),
// summary.json (written atomically at the end) and the resolved config.
// Why: scripts and plots read these; names are stable once an issue names them.
#pragma once

#include <cstdio>
#include <memory>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/memory.h"

namespace mt::io {

// A FILE* that closes itself (shared by the run-directory writers).
using FilePtr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
// Opens `path` with fopen mode `mode`; throws Error naming the file on failure.
FilePtr open_file(const std::string& path, const char* mode);

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Opens <dir>/metrics.jsonl for appending (append = resume) or truncating.
  MetricsWriter(const std::string& dir, bool append);

  // One line, in one write(2) (O_APPEND): whole or not at all; a failed write (a full disk)
  // is truncated back to the previous record and throws naming ENOSPC.
  void write(const nlohmann::json& record);
  bool is_open() const { return fd_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<int> fd_;  // the open descriptor (closed with the last copy)
  std::string path_;
};

// The "mem" record of a memory breakdown (metrics.jsonl per step, summary.json for the run):
// {"peak": total bytes, "params", "grads", "optimizer", "activations", "comm", "other": bytes
// of each category at the moment of that peak (they sum to "peak"; core/memory.h)}.
nlohmann::json memory_json(const core::MemoryBreakdown& m);

// Keeps only the records of <dir>/metrics.jsonl from before `step` steps were done (a resumed
// run rewrites the steps after its checkpoint), via a temporary file and rename. The eval
// record of step `step` itself (an eval done before that checkpoint) is kept unless
// keep_eval_at_step is false (the resumed run redoes it).
void truncate_metrics(const std::string& dir, int64_t step, bool keep_eval_at_step = true);
// Creates the directory (and parents); throws mt::core::Error naming it on failure.
void ensure_directory(const std::string& dir);
// Writes `text` to `path` via a temporary file, fsync and rename (then fsyncs the directory),
// so readers never see half a file and a node crash after the call cannot lose it. On a
// failure the temporary is removed and the error names ENOSPC when the disk is full.
void write_file_atomic(const std::string& path, const std::string& text);
// "ENOSPC: no space left on device (DIR has X MiB free)" when err is ENOSPC or the file system
// holding `path` has no space left; "" otherwise. For error messages of failed writes.
std::string disk_full_note(const std::string& path, int err);
// fsync(2) of a file or a directory (a directory after renames in it); throws naming it.
void fsync_path(const std::string& path);
// FNV-1a 64 of a file's bytes, read in blocks (bounded memory whatever the file's size).
uint64_t file_checksum(const std::string& path);
// Reads a whole file (throws with the path on failure).
std::string read_file(const std::string& path);

}  // namespace mt::io
