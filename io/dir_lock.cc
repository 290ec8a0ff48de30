// What: DirLock (see dir_lock.h).
#include "io/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "io/metrics.h"

namespace mt::io {

DirLock::DirLock(DirLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

DirLock DirLock::try_acquire(const std::string& dir, std::string* holder) {
  ensure_directory(dir);
  DirLock lock;
  lock.path_ = dir + "/" + kFileName;
  // O_CLOEXEC: a child process (none today) must not keep the lock after this one ends
  const int fd = ::open(lock.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw core::Error("cannot open the lock file").with_file(lock.path_).with_library(std::strerror(errno))
        .with_hint("the directory must be writable");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      ::close(fd);
      throw core::Error("cannot lock the directory").with_file(lock.path_).with_library(std::strerror(err))
          .with_hint("the file system must support flock(2)");
    }
    char buf[256] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    std::string who = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    if (holder) *holder = who.empty() ? "an unknown process" : who;
    lock.path_.clear();
    return lock;  // not held
  }
  lock.fd_ = fd;
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "?");
  const std::string me = fmt::format("host {} pid {}\n", host, static_cast<long>(::getpid()));
  // (a failure here only loses the holder's name in a refusal message: the lock is held)
  if (::ftruncate(fd, 0) == 0) {
    [[maybe_unused]] const ssize_t w = ::pwrite(fd, me.data(), me.size(), 0);
  }
  return lock;
}

}  // namespace mt::io
