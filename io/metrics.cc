// What: MetricsWriter and the small file helpers of the run directory.
#include "io/metrics.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/error.h"
#include "core/hash.h"

namespace mt::io {

namespace fs = std::filesystem;

void ensure_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw core::Error("cannot create the directory").with_file(dir).with_library(ec.message())
        .with_hint("check run.dir and permissions");
  }
}

std::string disk_full_note(const std::string& path, int err) {
  std::error_code ec;
  fs::path dir = fs::path(path);
  while (!dir.empty() && !fs::is_directory(dir, ec)) dir = dir.parent_path();
  struct statvfs st {};
  const bool known = ::statvfs(dir.empty() ? "." : dir.c_str(), &st) == 0;
  const double free_mib = known ? static_cast<double>(st.f_bavail) * st.f_frsize / 1048576.0 : -1;
  if (err != ENOSPC && !(known && st.f_bavail == 0)) return "";
  return fmt::format("ENOSPC: no space left on device ({} has {:.1f} MiB free)", dir.empty() ? "." : dir.string(),
                     free_mib);
}

namespace {
// The library text of a failed write: strerror, and for a full disk the ENOSPC note.
std::string write_error(const std::string& path, int err) {
  const std::string full = disk_full_note(path, err);
  return full.empty() ? std::string(std::strerror(err)) : full;
}

// write(2) until all of [p, p + n) is written; false (errno set) on a failure or a short write.
bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = ENOSPC;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  // on any failure the temporary goes (a full disk must not keep a partial or empty one)
  const auto fail = [&](const char* what, int err, const std::string& file) {
    ::unlink(tmp.c_str());
    return core::Error(what).with_file(file).with_library(write_error(file, err))
        .with_hint("free space on the file system (or point run.dir / checkpoint.dir elsewhere) and resume");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw fail("cannot write the file", err, tmp);
  }
  int err = write_all(fd, text.data(), text.size()) ? 0 : errno;
  if (err == 0 && ::fsync(fd) != 0 && errno != EINVAL) err = errno;  // (EINVAL: fsync unsupported, data written)
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) throw fail("write failed", err, tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    throw core::Error("cannot rename the file into place").with_file(path).with_library(ec.message());
  }
  const fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? std::string(".") : parent.string());
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw core::Error("cannot open for fsync").with_file(path).with_library(std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // EINVAL: the file system does not support fsync on this object (some network file systems
  // for directories): nothing more can be done, and the data was written
  if (rc != 0 && err != EINVAL) {
    throw core::Error("fsync failed").with_file(path).with_library(std::strerror(err))
        .with_hint("the storage may be full or failing; the previous checkpoints are kept");
  }
}

uint64_t file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot open the file").with_file(path).with_library(std::strerror(errno));
  std::vector<char> buf(4 << 20);  // reused: no first-touch cost per block
  uint64_t h = core::kFnv1aOffset;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h = core::fnv1a64(buf.data(), static_cast<size_t>(in.gcount()), h);
  }
  if (in.bad()) throw core::Error("read failed").with_file(path).with_library(std::strerror(errno));
  return h;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot open the file").with_file(path).with_library(std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json memory_json(const core::MemoryBreakdown& m) {
  nlohmann::json j{{"peak", m.total()}};
  for (int c = 0; c < core::kNumMemCats; ++c) j[core::memcat_name(static_cast<core::MemCat>(c))] = m.bytes[c];
  return j;
}

void truncate_metrics(const std::string& dir, int64_t step, bool keep_eval_at_step) {
  const std::string path = dir + "/metrics.jsonl";
  if (!fs::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      // step records are 0-based steps; eval records are labelled with the steps done
      const int64_t s = j.value("step", int64_t{0});
      if (j.contains("eval_loss") ? (keep_eval_at_step ? s > step : s >= step) : s >= step) continue;
    } catch (const nlohmann::json::exception&) {
      continue;  // a line cut short by a crash
    }
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

FilePtr open_file(const std::string& path, const char* mode) {
  FilePtr f(std::fopen(path.c_str(), mode), std::fclose);
  if (!f) throw core::Error("cannot open the file").with_file(path).with_library(std::strerror(errno));
  return f;
}

MetricsWriter::MetricsWriter(const std::string& dir, bool append) : path_(dir + "/metrics.jsonl") {
  ensure_directory(dir);
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_APPEND | (append ? 0 : O_TRUNC), 0644);
  if (fd < 0) throw core::Error("cannot open the file").with_file(path_).with_library(std::strerror(errno));
  fd_ = std::shared_ptr<int>(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!fd_) return;
  const int fd = *fd_;
  const std::string line = record.dump() + "\n";
  // one write(2) of the whole line: a reader sees the record whole or not at all; a short or
  // failed write (a full disk) is cut back to the record boundary
  const off_t before = ::lseek(fd, 0, SEEK_END);
  const ssize_t w = ::write(fd, line.data(), line.size());
  if (w == static_cast<ssize_t>(line.size())) return;
  const int err = w < 0 ? errno : ENOSPC;  // (a short write: the file system is full)
  if (before >= 0) {
    [[maybe_unused]] const int rc = ::ftruncate(fd, before);
  }
  throw core::Error("cannot append to the metrics file").with_file(path_).with_library(write_error(path_, err))
      .with_hint("the records up to the previous step are intact; free space and resume from the last checkpoint");
}

}  // namespace mt::io
