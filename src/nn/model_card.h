// model_card.h — the shape and options of a decoder-only LM, read from YAML.
//
// A model card (configs/models/<name>.yaml) is the single description of an
// architecture: every model, benchmark and checkpoint names one. Cards are
// read strictly (io/yaml_util.h): unknown keys, wrong types and bad enum
// values fail with "path:LINE" and a suggestion, so a typo can never silently
// fall back to a default and change what a benchmark measures.
//
// YAML keys (required unless a default is given):
//   name             string   card name (built-in cards: equals the file stem)
//   n_layer          int      decoder blocks
//   d_model          int      residual width C
//   n_head           int      query heads H
//   n_kv_head        int      key/value heads Hkv (default n_head; 1 = MQA,
//                             1 < Hkv < H = GQA); H must be divisible by Hkv
//   head_dim         int      D (default 0 = d_model / n_head)
//   d_ff             int      MLP hidden width F
//   vocab_size       int      V
//   max_seq_len      int      longest context the model is built for
//   norm             rmsnorm | layernorm          (default rmsnorm)
//   norm_eps         float                        (default 1e-5)
//   pos_encoding     rope | none                  (default rope)
//   rope_theta       float    RoPE base            (default 10000)
//   mlp              swiglu | gelu                (default swiglu)
//   tied_embeddings  bool     lm_head shares the token embedding (default false)
//   init_std         float    std of the normal weight init (default 0.02)
//   qkv_bias         bool     biases on q/k/v projections (default false)
//   o_bias           bool     bias on the attention output projection o_proj
//                             (default false; Llama's attention_bias sets both)
//   sliding_window   int      0 = full causal attention (default); W > 0 = the
//                             checkpoint attends to the last W positions only
//                             (Mistral, Qwen2). The engine has no windowed
//                             attention, so sequences longer than W are rejected
//                             (check_sequence_length) instead of silently
//                             attending further than the model was trained to.
//   rope_scaling     none | linear | llama3       (default none) RoPE frequency
//                             scaling as transformers applies it (nn/rope_scaling.h)
//   rope_scaling_factor   float  linear, llama3: factor (required > 0 with them)
//   rope_low_freq_factor  float  llama3 only: low_freq_factor (> 0)
//   rope_high_freq_factor float  llama3 only: high_freq_factor (> low)
//   rope_original_max_seq_len int llama3 only: original_max_position_embeddings
// The keys from o_bias on are written by model_card_to_yaml only when they
// differ from their defaults, so cards without them keep their exact text (and
// config hashes). A rope_* parameter the chosen rope_scaling does not use is an
// error, never silently ignored.
#pragma once

#include <string>
#include <vector>

#include "core/error.h"

namespace el {

struct ModelCard {
  std::string name;
  int n_layer = 0;
  int d_model = 0;
  int n_head = 0;
  int n_kv_head = 0;
  int head_dim = 0;  // 0 = d_model / n_head (kept as written; see effective_head_dim)
  int d_ff = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  enum class Norm { rmsnorm, layernorm } norm = Norm::rmsnorm;
  float norm_eps = 1e-5f;
  enum class PosEncoding { rope, none } pos_encoding = PosEncoding::rope;
  float rope_theta = 10000.0f;
  enum class Mlp { swiglu, gelu } mlp = Mlp::swiglu;
  bool tied_embeddings = false;
  float init_std = 0.02f;
  bool qkv_bias = false;
  bool o_bias = false;
  int sliding_window = 0;  // 0 = none
  enum class RopeScaling { none, linear, llama3 } rope_scaling = RopeScaling::none;
  float rope_scaling_factor = 0.0f;    // 0 = unset
  float rope_low_freq_factor = 0.0f;   // llama3
  float rope_high_freq_factor = 0.0f;  // llama3
  int rope_original_max_seq_len = 0;   // llama3
  std::string source_path;  // file (or source name) the card was read from; not in the YAML

  // head_dim, or d_model / n_head when head_dim is 0.
  int effective_head_dim() const {
    return head_dim > 0 ? head_dim : (n_head > 0 ? d_model / n_head : 0);
  }
  bool operator==(const ModelCard&) const = default;
};

// YAML spellings of the enums ("rmsnorm", "rope", "swiglu", ...).
const char* norm_name(ModelCard::Norm n);
const char* pos_encoding_name(ModelCard::PosEncoding p);
const char* mlp_name(ModelCard::Mlp m);
const char* rope_scaling_name(ModelCard::RopeScaling r);

// Parses a card from YAML text; `source_name` (a path or a label such as
// "checkpoint.safetensors") goes into error locations and card.source_path.
// The card is validated; errors point at the offending key's line.
Result<ModelCard> parse_model_card(const std::string& yaml_text, const std::string& source_name);
// Reads and parses the file at `path`.
Result<ModelCard> load_model_card(const std::string& path);

// Consistency checks on a card built in code or read from YAML: positive
// sizes, n_head divisible by n_kv_head, d_model divisible by n_head when
// head_dim is 0, even head_dim with RoPE, positive eps/theta/init_std, enum
// values in range. Errors name the field, e.g.
//   "n_head (12) must be divisible by n_kv_head (5)".
Status validate_model_card(const ModelCard& card);

// A training or inference length the card cannot run: seq_len above
// max_seq_len, or above sliding_window when the card has one (full attention
// over more than W positions would differ from the checkpoint's windowed
// attention). The error names the card, the limit and the key.
Status check_sequence_length(const ModelCard& card, int64_t seq_len);

// Every YAML field in a fixed order, floats in shortest round-trip form, so
// parse_model_card(model_card_to_yaml(c)) == c (up to source_path).
std::string model_card_to_yaml(const ModelCard& card);

// `name_or_path` is a YAML file if it ends in .yaml/.yml or contains '/';
// otherwise a built-in card name looked up as <dir>/<name>.yaml in
// model_card_search_dirs() order. The error for an unknown name lists the
// available names and suggests the closest.
Result<ModelCard> find_model_card(const std::string& name_or_path);

// Existing directories searched for built-in cards, in order:
//   $EFFICIENTLLM_HOME/configs/models,
//   <dir of executable>/../../configs/models, <dir of executable>/../configs/models
//     (build/<preset>/efficientllm and an installed bin/ layout),
//   EL_SOURCE_DIR/configs/models (the source tree this binary was built from).
std::vector<std::string> model_card_search_dirs();
// Sorted names of the cards found in those directories (file stems of *.yaml).
std::vector<std::string> builtin_model_card_names();

}  // namespace el
