// What: memory accounting by category. Every allocation a Device makes is booked under the
// category of the calling thread's innermost MemoryScope (Other when there is none):
//   params       fp32 master parameters and the working copy (bf16), Model's constructor
//   grads        the flat gradient buffer (and, with ZeRO-2/3, the gradient shard and slots)
//   optimizer    AdamW m and v, SGD momentum
//   activations  everything a forward/backward allocates: activations, backward scratch,
//                logits, token buffers (the trainer scopes its forward/backward calls)
//   comm         GradSync's buffers (ZeRO shard, bf16 wire copy), gather buffers
//   other        untagged (kernels' workspaces, the norm partials, ...)
// A MemoryLedger (one per Device, updated under the device's allocator lock) keeps the bytes
// in use per category and two high-water marks of the TOTAL: over the device's life (the
// run's peak) and over a window the trainer restarts each step (the step's peak). With each
// peak it keeps the per-category bytes AT THAT MOMENT, so a breakdown always sums to its
// peak (what a user sizing a GPU needs: what was resident when memory was tightest), rather
// than per-category maxima reached at different times.
// Why: issue #16 asks for the true peak per rank and its breakdown (metrics.jsonl, summary.json)
// and `meshtrain plan` is validated against it. Cost: one thread-local read per allocation
// and a copy of six counters when a new peak is reached.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace mt::core {

enum class MemCat : uint8_t { Other = 0, Params, Grads, Optimizer, Activations, Comm };
constexpr int kNumMemCats = 6;
// "other", "params", "grads", "optimizer", "activations", "comm" (the metrics keys)
const char* memcat_name(MemCat c);

// The category the calling thread's allocations are booked under now.
MemCat current_memcat();

// Sets this thread's category until destruction (scopes nest; the inner one wins).
class MemoryScope {
 public:
  explicit MemoryScope(MemCat c);
  ~MemoryScope();
  MemoryScope(const MemoryScope&) = delete;
  MemoryScope& operator=(const MemoryScope&) = delete;

 private:
  MemCat prev_;
};

// Bytes per category (index: static_cast<int>(MemCat)) and their total.
struct MemoryBreakdown {
  std::array<size_t, kNumMemCats> bytes{};
  size_t total() const;
  size_t operator[](MemCat c) const { return bytes[static_cast<size_t>(c)]; }
};

struct MemoryStats {
  MemoryBreakdown now;           // in use now
  MemoryBreakdown peak;          // at the moment of the highest total since the device was made
  MemoryBreakdown window_peak;   // at the moment of the highest total since reset_window()
};

// Not synchronised: the owner (a Device) calls it under its allocator lock.
class MemoryLedger {
 public:
  // Books `bytes` under the calling thread's category; returns the category (keep it with the
  // allocation and pass it to remove()).
  MemCat add(size_t bytes);
  void remove(size_t bytes, MemCat c);
  // Starts a new window: its peak is what is in use now.
  void reset_window();
  const MemoryStats& stats() const { return s_; }
  size_t in_use() const { return total_; }
  size_t peak() const { return peak_total_; }

 private:
  MemoryStats s_;
  size_t total_ = 0, peak_total_ = 0, window_total_ = 0;
};

// "1.23 GiB" / "45.6 MiB" / "789 KiB" / "12 B"
std::string format_bytes(double bytes);

}  // namespace mt::core
