// test_cards.h — the small Llama-layout model card the tests build models
// from (2 layers, d_model 32, 4 heads, 2 KV heads, SwiGLU, RoPE, tied
// embeddings), with the fields tests vary as arguments.
#pragma once

#include <string>

#include <fmt/format.h>

#include "nn/model_card.h"

namespace el::test {

// The card as YAML; `extra` lines are appended (later keys must not repeat one).
inline std::string small_card_yaml(const std::string& name = "test", int d_ff = 48, int vocab_size = 61,
                                   int max_seq_len = 16, const std::string& extra = "") {
  return fmt::format(R"(name: {}
n_layer: 2
d_model: 32
n_head: 4
n_kv_head: 2
d_ff: {}
vocab_size: {}
max_seq_len: {}
norm: rmsnorm
norm_eps: 1.0e-5
pos_encoding: rope
rope_theta: 10000
mlp: swiglu
tied_embeddings: true
init_std: 0.02
)",
                     name, d_ff, vocab_size, max_seq_len) +
         extra;
}

inline ModelCard small_card(const std::string& extra = "qkv_bias: false\n") {
  return parse_model_card(small_card_yaml("test", 48, 61, 16, extra), "test.yaml").value();
}

}  // namespace el::test
