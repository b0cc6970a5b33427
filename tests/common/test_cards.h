// test_cards.h — the small Llama-layout model card the tests build models
// from (2 layers, d_model 32, 4 heads, 2 KV heads, SwiGLU, RoPE, tied
// embeddings), with the fields tests vary as arguments.
#pragma once

#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

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

// The message of the error parsing `yaml` fails with (a test failure, and
// "", when it parses).
inline std::string card_parse_error(const std::string& yaml, const std::string& source) {
  auto r = parse_model_card(yaml, source);
  EXPECT_FALSE(r.ok()) << yaml;
  return r.ok() ? std::string() : r.error().message();
}

inline ModelCard small_card(const std::string& extra = "qkv_bias: false\n") {
  return parse_model_card(small_card_yaml("test", 48, 61, 16, extra), "test.yaml").value();
}

// The "LINE" of `key` in the YAML text ("" when the key is absent: a
// defaulted field's error names the card without a line).
inline std::string yaml_line_of(const std::string& yaml, const std::string& key) {
  const size_t at = yaml.find("\n" + key + ":");
  if (at == std::string::npos) return "";
  return std::to_string(1 + std::count(yaml.begin(), yaml.begin() + static_cast<long>(at) + 1, '\n'));
}

}  // namespace el::test
