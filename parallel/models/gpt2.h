// What: GPT-2 (pre-LayerNorm blocks, learned positions, 4x GELU MLP, final LayerNorm, output
// projection tied to the token embedding), model.arch = gpt2, composed of the layers of
// blocks.h for a tensor-parallel group of size tp (tp = 1 is the plain model):
//   embedding  vocab-parallel token rows (summed over tp) + replicated learned positions
//   block l    res2 = x + proj(attn(ln1(x)))     q|k|v column-parallel by heads, proj row-parallel
//              res3 = res2 + proj(gelu(fc(ln2(res2))))   fc column-parallel, proj row-parallel
//   head       lnf, then logits for this rank's vocabulary slice with the tied embedding
//              (Z_r = H E_r^T), vocab-parallel cross-entropy
// LayerNorms, positions and row-parallel biases are replicated; their gradients come from
// replicated (all-reduced) values, so they agree on every tp rank.
// Why: the first Architecture; its numbers are bitwise those of the pre-plug-in model (a
// test keeps recorded losses and parameter checksums).
#pragma once

#include <memory>

#include "parallel/models/model.h"

namespace mt::parallel {

class Gpt2Architecture final : public Architecture {
 public:
  explicit Gpt2Architecture(const core::ModelConfig& cfg);
  std::string name() const override { return "gpt2"; }
  std::string tp_violation(int tp) const override;
  std::string tp_constraint() const override;
  std::vector<ParamSpec> param_specs() const override;
  double flops_per_token(int T) const override;
  TpTraffic tp_traffic(int64_t tokens, int elem_bytes) const override;
  SampleCost sample_cost() const override;
  std::vector<std::pair<std::string, int64_t>> shape_keys() const override;
  double activation_bytes(int B, int T, int tp, int elem_bytes, int att_state_per_row,
                          Recompute recompute = Recompute::None, bool sp = false) const override;
  std::string describe(int tp) const override;
  std::unique_ptr<Model> build(const ModelContext& ctx) const override;

  static constexpr int kVocabAlign = 64;  // Vp = V rounded up to a multiple of kVocabAlign * tp
};

}  // namespace mt::parallel
