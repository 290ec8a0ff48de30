// What: Partition's arithmetic (see partition.h).
#include "parallel/models/partition.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"

namespace mt::parallel {

Partition Partition::rows(std::vector<int64_t> blocks) {
  Partition p;
  p.kind_ = Kind::Rows;
  p.blocks_ = std::move(blocks);
  return p;
}

Partition Partition::cols() {
  Partition p;
  p.kind_ = Kind::Cols;
  return p;
}

Partition Partition::vocab(int64_t align) {
  MT_CHECK(align >= 1, "vocab partition alignment {} < 1", align);
  Partition p;
  p.kind_ = Kind::Vocab;
  p.align_ = align;
  return p;
}

std::string Partition::describe() const {
  switch (kind_) {
    case Kind::Replicated: return "replicated";
    case Kind::Cols: return "cols";
    case Kind::Vocab: return fmt::format("vocab(align {})", align_);
    case Kind::Rows: return blocks_.empty() ? "rows" : fmt::format("rows[{}]", fmt::join(blocks_, "|"));
  }
  return "?";
}

namespace {
// The fused blocks of a Rows partition over dim 0 of `full` (one block if none were given).
std::vector<int64_t> row_blocks(const std::vector<int64_t>& blocks, const core::Shape& full) {
  return blocks.empty() ? std::vector<int64_t>{shape_rows(full)} : blocks;
}
}  // namespace

std::string Partition::check(const core::Shape& full, int tp) const {
  if (tp < 1) return fmt::format("tensor-parallel size {} < 1", tp);
  if (full.empty() || full.size() > 2) return fmt::format("shape {} is not 1-D or 2-D", core::shape_str(full));
  switch (kind_) {
    case Kind::Replicated:
    case Kind::Vocab: return "";
    case Kind::Cols:
      if (full.size() < 2) return "a 1-D tensor has no columns to split";
      if (full[1] % tp != 0) return fmt::format("its {} columns do not split over {} ranks", full[1], tp);
      return "";
    case Kind::Rows: {
      const auto b = row_blocks(blocks_, full);
      const int64_t sum = std::accumulate(b.begin(), b.end(), int64_t{0});
      if (sum != full[0]) return fmt::format("its blocks {} do not add up to its {} rows", describe(), full[0]);
      for (int64_t s : b)
        if (s % tp != 0) return fmt::format("a block of {} rows does not split over {} ranks", s, tp);
      return "";
    }
  }
  return "";
}

int64_t Partition::padded_rows(const core::Shape& full, int tp) const {
  if (kind_ != Kind::Vocab) return shape_rows(full);
  const int64_t a = align_ * tp;
  return (shape_rows(full) + a - 1) / a * a;
}

core::Shape Partition::local_shape(const core::Shape& full, int tp) const {
  const std::string bad = check(full, tp);
  MT_CHECK(bad.empty(), "partition {} of shape {}: {}", describe(), core::shape_str(full), bad);
  core::Shape s = full;
  switch (kind_) {
    case Kind::Replicated: break;
    case Kind::Rows: s[0] /= tp; break;  // every block splits evenly, so their sum does
    case Kind::Cols: s[1] /= tp; break;
    case Kind::Vocab: s[0] = padded_rows(full, tp) / tp; break;
  }
  return s;
}

Partition::Place Partition::to_full(const core::Shape& full, int tp, int rank, int64_t r) const {
  switch (kind_) {
    case Kind::Replicated: return {r, 0};
    case Kind::Cols: return {r, rank * (full[1] / tp)};
    case Kind::Vocab: return {rank * (padded_rows(full, tp) / tp) + r, 0};
    case Kind::Rows: {
      int64_t local0 = 0, full0 = 0;  // where the block starts in the slice and in the full tensor
      for (int64_t s : row_blocks(blocks_, full)) {
        const int64_t piece = s / tp;
        if (r < local0 + piece) return {full0 + rank * piece + (r - local0), 0};
        local0 += piece;
        full0 += s;
      }
      MT_FAIL("local row {} is outside a slice of {} rows", r, local0);
    }
  }
  return {r, 0};
}

Partition::Local Partition::to_local(const core::Shape& full, int tp, int64_t row, int64_t col) const {
  switch (kind_) {
    case Kind::Replicated: return {-1, row, col};
    case Kind::Cols: {
      const int64_t lc = full[1] / tp;
      return {static_cast<int>(col / lc), row, col % lc};
    }
    case Kind::Vocab: {
      const int64_t lr = padded_rows(full, tp) / tp;
      return {static_cast<int>(row / lr), row % lr, col};
    }
    case Kind::Rows: {
      int64_t local0 = 0, full0 = 0;
      for (int64_t s : row_blocks(blocks_, full)) {
        const int64_t piece = s / tp;
        if (row < full0 + s) {
          const int64_t within = row - full0;
          return {static_cast<int>(within / piece), local0 + within % piece, col};
        }
        local0 += piece;
        full0 += s;
      }
      MT_FAIL("full row {} is outside a tensor of {} rows", row, full0);
    }
  }
  return {-1, row, col};
}

void copy_shared_elements(const Partition& p, const core::Shape& full, int src_tp, int src_rank, const float* src,
                          int dst_tp, int dst_rank, float* dst) {
  const core::Shape sl = p.local_shape(full, src_tp), dl = p.local_shape(full, dst_tp);
  const int64_t scols = shape_cols(sl), dcols = shape_cols(dl), rows = shape_rows(sl);
  for (int64_t r = 0; r < rows; ++r) {
    const Partition::Place at = p.to_full(full, src_tp, src_rank, r);
    if (at.row >= shape_rows(full)) continue;  // vocab padding: storage only
    // the source row's columns in runs that one destination rank holds contiguously
    for (int64_t c = 0; c < scols;) {
      const Partition::Local to = p.to_local(full, dst_tp, at.row, at.col + c);
      const int64_t n = p.kind() == Partition::Kind::Cols ? std::min(scols - c, dcols - to.col) : scols - c;
      if (to.rank == dst_rank || to.rank < 0) {
        std::memcpy(dst + to.row * dcols + to.col, src + r * scols + c, static_cast<size_t>(n) * sizeof(float));
      }
      c += n;
    }
  }
}

}  // namespace mt::parallel
