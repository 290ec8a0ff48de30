// What: next-token top-1 / top-k accuracy over vocabulary-sliced logits, without gathering
// them: each tp rank takes the k best (value, global id) of each position's logits on its
// vocabulary slice (local_topk), the ranks exchange only these k candidates per position (an
// all-gather of N x k pairs), and every rank merges them the same way (count_topk_hits):
// candidates rank by value, ties by the LOWER global token id, so the result is the global
// top-k of the full row whatever the tp size. A position counts when its target is >= 0 (as
// the loss does: padding and document masks are -1); a hit when the target is among the
// first 1 (top-1) or k (top-k) merged candidates.
// Why: eval reports accuracy beside eval_loss at any tp; exact integer counts make tp 2 equal
// tp 1 and dp replicas sum them exactly. The logits go to the host for this (eval only: a
// copy of the (N, Vl) slice per micro-batch), so the Ops interface is unchanged and every
// device backend works.
#pragma once

#include <cstdint>

namespace mt::parallel {

class Model;

constexpr int kAccuracyTopK = 5;  // eval_acc_top5

// Counts over positions with a target: positions, top-1 hits, top-k hits (int64: summed exactly).
struct TopkCounts {
  int64_t targets = 0, top1 = 0, topk = 0;
  void add(const TopkCounts& o) {
    targets += o.targets, top1 += o.top1, topk += o.topk;
  }
};

// logits (N, Vl) fp32 host rows; columns [0, v_valid) are vocabulary ids v_start + j (the
// rest padding, ignored). vals / ids (N, k): each row's k best, best first (value
// descending, then id ascending; NaN ranks as -inf), padded with -inf / INT32_MAX when
// v_valid < k.
void local_topk(const float* logits, int64_t N, int Vl, int v_start, int v_valid, int k, float* vals, int32_t* ids);

// The candidates of `parts` slices (part p's (N, k) block at p * N * k of vals / ids, each
// ordered as local_topk writes them) merged per row, and the counts for targets (N).
TopkCounts count_topk_hits(const float* vals, const int32_t* ids, int parts, int64_t N, int k, const int32_t* targets);

// The counts of the model's last forward with targets (its head's logits: Model::head_logits
// and the forward's targets), k candidates; collective over the model's tp group (every tp
// rank gets the same counts). A model without a head on this rank (pipeline stages before the
// last) returns zeros without communicating.
TopkCounts head_topk_counts(Model& m, int k = kAccuracyTopK);

}  // namespace mt::parallel
