// What: DirLock, an exclusive lock on a directory that a run writes (a run.dir, a prep
// --out): flock(2) on <dir>/.meshtrain.lock, held for the lock object's life, with this
// process's host and PID written into the file so that a refused second process can name
// the holder.
// Why: two runs on one run.dir move each other's checkpoints aside, interleave
// metrics.jsonl and mix one run's config.yaml with the other's summary.json. flock is
// released by the kernel when the holder dies (SIGKILL, node reboot of a local disk), so a
// crashed run never leaves a stale lock behind; the file itself stays and is harmless.
// On NFS, Linux implements flock with byte-range locks (NFSv4: server-side), so the lock holds
// across nodes there too.
#pragma once

#include <string>

namespace mt::io {

class DirLock {
 public:
  DirLock() = default;
  DirLock(DirLock&& o) noexcept;
  DirLock& operator=(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();  // releases the lock (the file stays)

  // Creates `dir` if needed and takes the lock without waiting. If another process holds it,
  // returns an empty DirLock and sets *holder to its "host <h> pid <p>" (or "an unknown
  // process" if it has not written them yet); other failures throw core::Error naming the file.
  static DirLock try_acquire(const std::string& dir, std::string* holder);

  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

  static constexpr const char* kFileName = ".meshtrain.lock";

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace mt::io
