// What: memory accounting by category (see memory.h).
#include "core/memory.h"

#include <fmt/format.h>

namespace mt::core {

namespace {
// The calling thread's current category: set by MemoryScope, read by every allocation.
thread_local MemCat t_current = MemCat::Other;
}  // namespace

const char* memcat_name(MemCat c) {
  switch (c) {
    case MemCat::Params: return "params";
    case MemCat::Grads: return "grads";
    case MemCat::Optimizer: return "optimizer";
    case MemCat::Activations: return "activations";
    case MemCat::Comm: return "comm";
    case MemCat::Other: break;
  }
  return "other";
}

MemCat current_memcat() { return t_current; }

MemoryScope::MemoryScope(MemCat c) : prev_(t_current) { t_current = c; }
MemoryScope::~MemoryScope() { t_current = prev_; }

size_t MemoryBreakdown::total() const {
  size_t t = 0;
  for (size_t b : bytes) t += b;
  return t;
}

MemCat MemoryLedger::add(size_t bytes) {
  const MemCat c = t_current;
  s_.now.bytes[static_cast<size_t>(c)] += bytes;
  total_ += bytes;
  if (total_ > window_total_) {
    window_total_ = total_;
    s_.window_peak = s_.now;
  }
  if (total_ > peak_total_) {
    peak_total_ = total_;
    s_.peak = s_.now;
  }
  return c;
}

void MemoryLedger::remove(size_t bytes, MemCat c) {
  s_.now.bytes[static_cast<size_t>(c)] -= bytes;
  total_ -= bytes;
}

void MemoryLedger::reset_window() {
  window_total_ = total_;
  s_.window_peak = s_.now;
}

std::string format_bytes(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.0f} KiB", b / 1024.0);
  return fmt::format("{:.0f} B", b);
}

}  // namespace mt::core
