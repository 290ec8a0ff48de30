// What: small helpers the tests share for models: GPT-2 configs and the data scheduler's cost
// model of a GPT-2 (what LoaderOptions::from_config derives from model.arch).
#pragma once

#include "core/config.h"
#include "io/schedule.h"
#include "parallel/models/registry.h"

namespace mt {

inline core::ModelConfig gpt2_config(int n_layer, int n_head, int n_embd, int vocab_size, int seq_len) {
  core::ModelConfig m;
  m.n_layer = n_layer;
  m.n_head = n_head;
  m.n_embd = n_embd;
  m.vocab_size = vocab_size;
  m.seq_len = seq_len;
  return m;
}

inline io::CostModel test_gpt2_cost(int n_layer, int n_embd, int vocab_size) {
  const auto c = parallel::make_architecture(gpt2_config(n_layer, 4, n_embd, vocab_size, 64))->sample_cost();
  return io::CostModel{c.per_token, c.per_token_sq};
}

}  // namespace mt
