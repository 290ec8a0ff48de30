// What: MetricsWriter and the small file helpers of the run directory.
#include "io/metrics.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

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
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw core::Error("cannot rename the file into place").with_file(path).with_library(ec.message());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot open the file").with_file(path).with_library(std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void truncate_metrics(const std::string& dir, int64_t step) {
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
      if (j.contains("eval_loss") ? s > step : s >= step) continue;
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
