// What: MetricsWriter and the small file helpers of the run directory.
#include "io/metrics.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fcntl.h>
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

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw core::Error("cannot write the file").with_file(tmp).with_library(std::strerror(errno));
    out << text;
    out.flush();
    if (!out) throw core::Error("write failed").with_file(tmp).with_library(std::strerror(errno));
  }
  fsync_path(tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw core::Error("cannot rename the file into place").with_file(path).with_library(ec.message());
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
  f_ = open_file(path_, append ? "a" : "w");
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!f_) return;
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_.get()) != line.size() || std::fflush(f_.get()) != 0) {
    throw core::Error("cannot append to the metrics file").with_file(path_).with_library(std::strerror(errno));
  }
}

}  // namespace mt::io
