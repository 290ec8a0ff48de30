// What: Partition, how one parameter tensor is split over the ranks of a tensor-parallel
// group, as pure arithmetic on shapes and indices (no memory, no communicator). A tensor is
// seen as a matrix (rows, cols); a 1-D tensor (n) is (n, 1). Four kinds:
//   replicated    every rank holds the whole tensor (norms, row-parallel biases, positions)
//   rows(blocks)  dim 0 split: column-parallel linear weights (out, in) and their biases. Dim 0
//                 may be the concatenation of FUSED blocks of unequal sizes, each split evenly
//                 on its own, a rank's slice being its piece of every block in order:
//                   q|k|v with 8 query and 2 key/value heads of 64: blocks {512, 128, 128},
//                   at tp 2 each rank holds 256 | 64 | 64 rows; gate|up: {F, F}.
//                 With a `unit` (rows per head), a block of u units splits by whole units:
//                 evenly when tp divides u; when u divides tp (tp > u, e.g. 2 kv heads at
//                 tp 4) each unit is REPLICATED on tp/u consecutive ranks (Megatron's rule for
//                 k/v heads): rank r holds unit r / (tp/u). Replicas hold equal values; a
//                 model sums their gradients over the group (Model::sum_replicated_grad, called by ColumnLinear).
//   cols          dim 1 split: row-parallel linear weights (out, in)
//   vocab(align)  dim 0 is a vocabulary of V rows, padded up to a multiple of align * tp and
//                 split evenly; the padding rows are storage only (no token has them), and
//                 the padded size depends on tp (V = 50257: 50304 at tp 1 and 2 with align 64)
// Every kind keeps a row's local columns contiguous in the full row, so a local row maps to
// one (full row, first full column) place; Partition answers both directions (local -> full
// for layout-independent init and for export; full -> owner for resharding and import).
// Why: the slicing arithmetic was written four times (init, checkpoint resharding, tests,
// full-position lookups) and only knew equal q|k|v blocks. Init, checkpoints, the tests and
// Hugging Face import/export all use this one type now.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mt::parallel {

class Partition {
 public:
  enum class Kind { Replicated, Rows, Cols, Vocab };

  Partition() = default;  // replicated
  static Partition replicated() { return Partition(); }
  // blocks: the fused blocks' sizes along dim 0 (empty = one block, the whole dim 0); unit:
  // rows per indivisible unit (0 = single rows; > 0 allows replicated units, see above).
  static Partition rows(std::vector<int64_t> blocks = {}, int64_t unit = 0);
  static Partition cols();
  static Partition vocab(int64_t align);

  Kind kind() const { return kind_; }
  bool replicated_over_tp() const { return kind_ == Kind::Replicated; }
  const std::vector<int64_t>& blocks() const { return blocks_; }
  int64_t unit() const { return unit_; }
  int64_t align() const { return align_; }
  std::string describe() const;  // "replicated", "rows", "rows[512|128|128]", "cols", "vocab(align 64)"
  bool operator==(const Partition& o) const {
    return kind_ == o.kind_ && blocks_ == o.blocks_ && unit_ == o.unit_ && align_ == o.align_;
  }

  // "" if a tensor of shape `full` splits over tp ranks, else why not (for an error naming the
  // parameter and the config key that sets its size).
  std::string check(const core::Shape& full, int tp) const;
  // Rows of the full tensor including vocab padding at this tp (= full rows otherwise).
  int64_t padded_rows(const core::Shape& full, int tp) const;
  // Each rank's slice (the same on every rank).
  core::Shape local_shape(const core::Shape& full, int tp) const;

  // Where local row r of rank `rank` sits in the FULL tensor: full row and the full column of
  // its first local column (its local columns are contiguous there). For vocab the row may be
  // padding (row >= full[0]).
  struct Place {
    int64_t row = 0, col = 0;
  };
  Place to_full(const core::Shape& full, int tp, int rank, int64_t r) const;

  // The ranks holding element (row, col) of the full tensor, [rank, rank + replicas), and its
  // local position (the same on each). Replicated tensors: every rank does; `rank` is -1.
  struct Local {
    int rank = -1;
    int64_t row = 0, col = 0;
    int replicas = 1;
    bool held_by(int r) const { return rank < 0 || (r >= rank && r < rank + replicas); }
  };
  Local to_local(const core::Shape& full, int tp, int64_t row, int64_t col) const;

  // True if some element of this tensor is held by more than one rank at tp (replicated
  // tensors, replicated units).
  bool has_replicas(const core::Shape& full, int tp) const;
  // Runs [begin, end) of rank `rank`'s local rows it is the FIRST holder of (each element of
  // the full tensor counted once in the group: gradient norms). Replicated: all rows on rank
  // 0, none elsewhere.
  std::vector<std::pair<int64_t, int64_t>> counted_rows(const core::Shape& full, int tp, int rank) const;
  // Runs [begin, end) of local rows that are replicated units (their gradients are partial
  // sums over the ranks sharing them), with the full row each run starts at.
  struct ReplicatedRun {
    int64_t local_row = 0, rows = 0, full_row = 0;
    int64_t block_row = 0, block_rows = 0;  // the fused block it belongs to, in the full tensor
    bool first_holder = true;               // this rank is the first of the unit's holders
  };
  std::vector<ReplicatedRun> replicated_runs(const core::Shape& full, int tp, int rank) const;

 private:
  Kind kind_ = Kind::Replicated;
  // One block of a Rows partition at tp: rows per rank and ranks sharing each piece.
  struct Split {
    int64_t piece = 0;
    int replicas = 1;
  };
  Split split(int64_t block_rows, int tp) const;

  std::vector<int64_t> blocks_;  // Rows only; empty = the whole dim 0
  int64_t unit_ = 0;             // Rows only; rows per unit, 0 = none
  int64_t align_ = 1;            // Vocab only
};

inline int64_t shape_rows(const core::Shape& s) { return s.empty() ? 1 : s[0]; }
inline int64_t shape_cols(const core::Shape& s) { return s.size() > 1 ? s[1] : 1; }

// Copies into `dst` (rank dst_rank's slice of a tensor split by `p` over dst_tp ranks) every
// element it shares with `src` (rank src_rank's slice over src_tp ranks). Vocab padding rows
// are never copied. Both slices are row-major local tensors of the shapes local_shape gives.
// Resharding a tensor = calling this for every source rank.
void copy_shared_elements(const Partition& p, const core::Shape& full, int src_tp, int src_rank, const float* src,
                          int dst_tp, int dst_rank, float* dst);

}  // namespace mt::parallel
