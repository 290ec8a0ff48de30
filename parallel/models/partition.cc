// What: Partition's arithmetic (see partition.h).
#include "parallel/models/partition.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"

namespace mt::parallel {

Partition Partition::rows(std::vector<int64_t> blocks, int64_t unit) {
  MT_CHECK(unit >= 0, "rows partition unit {} < 0", unit);
  Partition p;
  p.kind_ = Kind::Rows;
  p.blocks_ = std::move(blocks);
  p.unit_ = unit;
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
    case Kind::Rows: {
      std::string d = blocks_.empty() ? "rows" : fmt::format("rows[{}]", fmt::join(blocks_, "|"));
      return unit_ > 0 ? fmt::format("{} by units of {}", d, unit_) : d;
    }
  }
  return "?";
}

namespace {
// The fused blocks of a Rows partition over dim 0 of `full` (one block if none were given).
std::vector<int64_t> row_blocks(const std::vector<int64_t>& blocks, const core::Shape& full) {
  return blocks.empty() ? std::vector<int64_t>{shape_rows(full)} : blocks;
}
}  // namespace

// Even split when possible; with units, u units over tp > u ranks (u divides tp): one unit per
// rank, each on tp/u ranks. piece = 0 marks a block that does not split.
Partition::Split Partition::split(int64_t s, int tp) const {
  if (unit_ == 0) return s % tp == 0 ? Split{s / tp, 1} : Split{};
  if (s % unit_ != 0) return {};
  const int64_t u = s / unit_;
  if (u % tp == 0) return {s / tp, 1};
  if (u > 0 && tp % u == 0) return {unit_, static_cast<int>(tp / u)};
  return {};
}

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
      for (int64_t s : b) {
        if (split(s, tp).piece > 0) continue;
        if (unit_ > 0)
          return fmt::format("a block of {} units of {} rows neither splits over {} ranks nor divides them", s / unit_,
                             unit_, tp);
        return fmt::format("a block of {} rows does not split over {} ranks", s, tp);
      }
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
    case Kind::Rows: {
      s[0] = 0;
      for (int64_t b : row_blocks(blocks_, full)) s[0] += split(b, tp).piece;
      break;
    }
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
        const Split sp = split(s, tp);
        if (r < local0 + sp.piece) return {full0 + (rank / sp.replicas) * sp.piece + (r - local0), 0};
        local0 += sp.piece;
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
        const Split sp = split(s, tp);
        if (row < full0 + s) {
          const int64_t within = row - full0;
          return {static_cast<int>(within / sp.piece) * sp.replicas, local0 + within % sp.piece, col, sp.replicas};
        }
        local0 += sp.piece;
        full0 += s;
      }
      MT_FAIL("full row {} is outside a tensor of {} rows", row, full0);
    }
  }
  return {-1, row, col};
}

bool Partition::has_replicas(const core::Shape& full, int tp) const {
  if (kind_ == Kind::Replicated) return tp > 1;
  if (kind_ != Kind::Rows) return false;
  for (int64_t s : row_blocks(blocks_, full))
    if (split(s, tp).replicas > 1) return true;
  return false;
}

std::vector<std::pair<int64_t, int64_t>> Partition::counted_rows(const core::Shape& full, int tp, int rank) const {
  const int64_t rows = shape_rows(local_shape(full, tp));
  if (kind_ == Kind::Replicated) return rank == 0 ? std::vector<std::pair<int64_t, int64_t>>{{0, rows}}
                                                  : std::vector<std::pair<int64_t, int64_t>>{};
  if (kind_ != Kind::Rows) return {{0, rows}};
  std::vector<std::pair<int64_t, int64_t>> v;
  int64_t local0 = 0;
  for (int64_t s : row_blocks(blocks_, full)) {
    const Split sp = split(s, tp);
    if (rank % sp.replicas == 0) {
      if (!v.empty() && v.back().second == local0) v.back().second += sp.piece;
      else v.push_back({local0, local0 + sp.piece});
    }
    local0 += sp.piece;
  }
  return v;
}

std::vector<Partition::ReplicatedRun> Partition::replicated_runs(const core::Shape& full, int tp, int rank) const {
  std::vector<ReplicatedRun> v;
  if (kind_ != Kind::Rows) return v;
  int64_t local0 = 0, full0 = 0;
  for (int64_t s : row_blocks(blocks_, full)) {
    const Split sp = split(s, tp);
    if (sp.replicas > 1)
      v.push_back({local0, sp.piece, full0 + (rank / sp.replicas) * sp.piece, full0, s, rank % sp.replicas == 0});
    local0 += sp.piece;
    full0 += s;
  }
  return v;
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
      if (to.held_by(dst_rank)) {
        std::memcpy(dst + to.row * dcols + to.col, src + r * scols + c, static_cast<size_t>(n) * sizeof(float));
      }
      c += n;
    }
  }
}

}  // namespace mt::parallel
