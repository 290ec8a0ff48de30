// What: formatting of mt::core::Error's message with its context, and the process rank.
#include "core/error.h"

#include <atomic>

namespace mt::core {

namespace {
std::atomic<int> g_rank{-1};
std::atomic<int> g_world{1};
}  // namespace

void set_process_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}
int process_rank() { return g_rank.load(); }
int process_world_size() { return g_world.load(); }

Error::Error(std::string message, ErrorContext ctx)
    : std::runtime_error(message), message_(std::move(message)), ctx_(std::move(ctx)) {
  if (ctx_.rank < 0) ctx_.rank = process_rank();
  rebuild();
}

Error& Error::with_file(const std::string& file) {
  if (ctx_.file.empty()) ctx_.file = file;
  rebuild();
  return *this;
}
Error& Error::with_yaml(const std::string& path, int line) {
  if (ctx_.yaml_path.empty()) ctx_.yaml_path = path;
  if (ctx_.line < 0) ctx_.line = line;
  rebuild();
  return *this;
}
Error& Error::with_rank(int rank) {
  ctx_.rank = rank;
  rebuild();
  return *this;
}
Error& Error::with_library(const std::string& lib) {
  if (ctx_.library.empty()) ctx_.library = lib;
  rebuild();
  return *this;
}
Error& Error::with_hint(const std::string& hint) {
  if (ctx_.hint.empty()) ctx_.hint = hint;
  rebuild();
  return *this;
}
Error& Error::with_where(const char* src_file, int src_line) {
  if (ctx_.where.empty()) ctx_.where = fmt::format("{}:{}", src_file, src_line);
  rebuild();
  return *this;
}

void Error::rebuild() {
  std::string s;
  if (!ctx_.file.empty()) {
    s += ctx_.file;
    if (ctx_.line > 0) s += fmt::format(":{}", ctx_.line);
    s += ": ";
  }
  if (!ctx_.yaml_path.empty()) {
    s += "'" + ctx_.yaml_path + "'";
    if (ctx_.file.empty() && ctx_.line > 0) s += fmt::format(" (line {})", ctx_.line);
    s += ": ";
  }
  s += message_;
  if (!ctx_.library.empty()) s += " [" + ctx_.library + "]";
  if (ctx_.rank >= 0) s += fmt::format(" (rank {})", ctx_.rank);
  if (!ctx_.hint.empty()) s += "\n  hint: " + ctx_.hint;
  full_ = std::move(s);
}

}  // namespace mt::core
