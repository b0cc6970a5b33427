// hf_config.h — Hugging Face config.json <-> ModelCard (Llama, Qwen2, Mistral,
// Mixtral, Qwen2-MoE, GPT-NeoX, RWKV, Mamba; read only: DeepSeek-V2/V3 with
// dense MLPs).
//
// Users point EfficientLLM at checkpoints they already have on disk; their
// architecture is described by transformers' config.json. This maps the
// Llama layout (llama, qwen2, mistral; mixtral and qwen2_moe add experts)
// onto a ModelCard and back:
//
//   config.json                       ModelCard
//   hidden_size                       d_model
//   num_hidden_layers                 n_layer
//   num_attention_heads               n_head
//   num_key_value_heads (null: heads) n_kv_head
//   head_dim (absent/null: derived)   head_dim (0 when it equals d_model / n_head)
//   intermediate_size                 d_ff            (mlp swiglu; hidden_act must be silu)
//   vocab_size                        vocab_size
//   max_position_embeddings           max_seq_len
//   rms_norm_eps                      norm_eps        (norm rmsnorm)
//   rope_theta / rope_parameters      rope_theta, rope_scaling + rope_* parameters
//   tie_word_embeddings               tied_embeddings
//   initializer_range                 init_std
//   llama: attention_bias             qkv_bias and o_bias (q/k/v/o all get biases)
//   qwen2: (always)                   qkv_bias true, o_bias false
//   mistral: sliding_window           sliding_window (null: none; absent: 4096,
//                                     MistralConfig's default)
//   qwen2: use_sliding_window, sliding_window, max_window_layers / layer_types
//                                     sliding_window when any layer slides
//
// RoPE scaling is read as both transformers generations write it: v4's
// top-level "rope_theta" + "rope_scaling" ({"rope_type"|"type": ...}) and
// v5's "rope_parameters" (which also holds rope_theta). Supported types:
// default (none), linear (factor), llama3 (factor, low_freq_factor,
// high_freq_factor, original_max_position_embeddings); dynamic, yarn,
// longrope, ... are rejected as not supported. Keys the engine cannot honour
// (mlp_bias, a partial_rotary_factor below 1, attention_dropout > 0,
// quantization_config) are errors too, never silently dropped.
//
// config.json is untrusted input: every key is type-checked, and every error
// names the file and the key, e.g.
//   "models/x/config.json: key 'num_key_value_heads'": "num_attention_heads (12)
//    must be divisible by num_key_value_heads (5)".
//
// gpt_neox (GPTNeoXConfig, Pythia) is read too: hidden_size, num_hidden_layers,
// num_attention_heads, intermediate_size, vocab_size, max_position_embeddings
// (2048), layer_norm_eps (1e-5) -> norm layernorm, hidden_act gelu -> mlp
// gelu_exact (gelu_new / gelu_pytorch_tanh / gelu_fast -> gelu), mlp_bias
// true, attention_bias (true) -> qkv_bias and o_bias, use_parallel_residual
// (true) -> parallel_residual, rotary_pct (0.25) or
// rope_parameters.partial_rotary_factor -> rotary_dims = int(head_dim * pct),
// rotary_emb_base or rope_parameters.rope_theta -> rope_theta,
// tie_word_embeddings (false). Only the default rope type; attention_dropout
// and hidden_dropout must be 0. Written for a card with norm layernorm and mlp
// gelu / gelu_exact ("gelu_new" / "gelu"), mlp_bias, qkv_bias == o_bias, one
// K/V head per head, unscaled RoPE, no window: the v4 keys rotary_pct (the
// smallest double at or above rotary_dims / head_dim that gives rotary_dims
// back through int(head_dim * pct)) and rotary_emb_base, which transformers 5
// reads too (a v5 rope_parameters object is ignored by transformers 4).
//
// rwkv (RwkvConfig, RWKV-4) maps to block: rwkv (nn/rwkv.h): hidden_size,
// num_hidden_layers, vocab_size, context_length (1024) -> max_seq_len,
// attention_hidden_size (null: hidden_size) -> rwkv_attention_hidden_size,
// intermediate_size (null: 4 hidden_size) -> d_ff, layer_norm_epsilon
// (1e-5) -> norm_eps, rescale_every (6; <= 0: none) -> rwkv_rescale_every,
// tie_word_embeddings (false); norm layernorm, pos_encoding none. Written with
// every key explicit (rescale_every 0 when the card has none; init_std has no
// RwkvConfig key and is not written).
//
// mamba (MambaConfig, Mamba-1) maps to block: mamba (nn/mamba.h), read and
// written (mamba_config_json):
//   hidden_size, num_hidden_layers, vocab_size      d_model, n_layer, vocab_size
//   state_size (16)                                 mamba_d_state  (<= 256)
//   conv_kernel (4)                                 mamba_d_conv   (<= 64)
//   expand (2, an integer)                          mamba_expand   (<= 16)
//   intermediate_size (derived)                     must equal expand x hidden_size
//   time_step_rank ("auto" = ceil(hidden / 16))     mamba_dt_rank (0 = auto)
//   use_bias (false), use_conv_bias (true)          mamba_proj_bias, mamba_conv_bias
//   layer_norm_epsilon (1e-5)                       norm_eps (norm rmsnorm)
//   initializer_range (0.1)                         init_std
//   tie_word_embeddings (true)                      tied_embeddings
//   max_position_embeddings (absent: 2^20)          max_seq_len (Mamba has no
//                                                   length limit; cards need one;
//                                                   not a MambaConfig key, but
//                                                   written: transformers keeps it)
// hidden_act must be silu. Accepted and ignored, because they do not change
// the function computed: use_mambapy / use_associative_scan (other
// implementations of the same scan), rescale_prenorm_residual and
// time_step_{min,max,floor,scale,init_scheme} (the random init only),
// use_cache. residual_in_fp32 (default true) keeps transformers' residual
// stream in f32 under a bf16 model; the engine keeps it in the activation
// dtype, which is identical in f32 and differs by the stream's bf16
// rounding in bf16 runs (a precision policy, train/precision.h). It is
// written as true.
//
// deepseek_v3 / deepseek_v2 (DeepseekV3Config / DeepseekV2Config) map to
// attention: mla (nn/mla.h): q_lora_rank (null: 0), kv_lora_rank,
// qk_nope_head_dim, qk_rope_head_dim, v_head_dim, attention_bias -> qkv_bias
// and o_bias, max_position_embeddings (4096 / 2048), num_key_value_heads
// ignored (n_kv_head = n_head, as transformers' MLA ignores it). Dense MLPs
// only: first_k_dense_replace (defaults 3 / 0) must reach
// num_hidden_layers, else the error names it and the MoE keys; V3's
// rope_interleave must be true (V2 always interleaves); rope types as above
// (yarn is refused). They are not written (hf_config_json).
//
// mixtral (MixtralConfig) and qwen2_moe (Qwen2MoeConfig) read as mistral /
// qwen2 for the attention (mixtral: rope_theta 1e6, rms_norm_eps 1e-5,
// max_position_embeddings 131072, sliding_window default none; qwen2_moe:
// qkv_bias (true), the qwen2 sliding-window keys) plus the mixture of
// experts (moe_* card keys, nn/moe.h), softmax top-k routers:
//   num_local_experts (8) / num_experts (60)   moe_experts (<= 256, else an error naming it)
//   num_experts_per_tok (2 / 4)                moe_top_k (<= experts, else an error naming it)
//   mixtral: intermediate_size                 the experts' width (d_ff; moe_d_ff 0),
//            always renormalised               moe_norm_topk_prob true
//   qwen2_moe: moe_intermediate_size (1408)    moe_d_ff; intermediate_size -> d_ff (unused)
//              norm_topk_prob (false)          moe_norm_topk_prob
//              shared_expert_intermediate_size (5632)  moe_shared_experts 1, moe_shared_d_ff
//   output_router_logits (false) and router_aux_loss_coef (0.001)
//                                              moe_aux_loss_coef = the coefficient when
//                                              output_router_logits, else 0 (transformers adds
//                                              the loss only then); moe_z_loss_coef 0
// Errors naming the key: router_jitter_noise != 0 (mixtral), decoder_sparse_step
// != 1 or a non-empty mlp_only_layers (qwen2_moe: dense layers between the
// MoE ones). Written back with the same keys: mixtral for a card without
// shared experts (moe_norm_topk_prob true, no attention biases), qwen2_moe
// for one with them (n shared experts of width w as one of n w, its
// shared_expert_intermediate_size; no o_bias; head_dim derived, as
// Qwen2MoeConfig has no head_dim key; qkv_bias written, which transformers
// before 5 ignore). Both need moe_router softmax; output_router_logits is
// written true when moe_aux_loss_coef > 0. moe_z_loss_coef and
// moe_capacity_factor have no transformers key (training policies that do
// not change the function at inference) and are not written.
//
// Only the ModelCard struct is used here (no el_engine code), so the io layer
// stays below the model layer; DecoderLM::create validates the card again.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "nn/model_card.h"

namespace el::io {

// "llama", "mistral", "qwen2", "gpt_neox", "deepseek_v3", "deepseek_v2", "rwkv", "mamba",
// "mixtral", "qwen2_moe".
const std::vector<std::string>& hf_supported_model_types();

struct HfConfig {
  ModelCard card;           // name = the model directory's name; source_path = config.json
  std::string model_type;   // one of hf_supported_model_types()
  std::string torch_dtype;  // "torch_dtype" (v4) or "dtype" (v5) as written; "" if absent
  // Keys the engine does not use but an export should keep, as JSON text:
  // bos_token_id, eos_token_id (may be a list), pad_token_id.
  std::map<std::string, std::string> passthrough;
};

// Maps config.json text. `source_name` (the path) goes into error locations
// and card.source_path; `card_name` becomes card.name (model_type if empty).
Result<HfConfig> parse_hf_config(const std::string& json_text, const std::string& source_name,
                                 const std::string& card_name = {});
// Reads `path` (a config.json); the card is named after its directory.
Result<HfConfig> load_hf_config(const std::string& path);

// transformers' dtype names: "float32", "bfloat16", "float16".
const char* hf_torch_dtype_name(DType t);
std::optional<DType> dtype_from_hf_name(const std::string& name);

struct HfConfigExport {
  std::string model_type;   // "" = infer (hf_export_model_type)
  std::string torch_dtype;  // written as "torch_dtype" when not empty
  std::map<std::string, std::string> passthrough;  // HfConfig::passthrough
};

// The model_type a card is written as: `requested` when not empty, else
// rwkv / mamba for those blocks, gpt_neox for LayerNorm with a GELU mlp,
// qwen2_moe for experts with shared experts, mixtral for experts without,
// qwen2 for q/k/v bias without o bias, mistral for a sliding window, else
// llama.
std::string hf_export_model_type(const ModelCard& card, const std::string& requested = {});

// The inverse mapping: config.json text (keys sorted, as transformers writes
// them; rope in v4 form, which both transformers generations read) for a card
// the chosen family can express. Errors name the card key that no family (or
// not the requested one) can hold: norm layernorm with swiglu, a GELU mlp
// with rmsnorm, parallel_residual / rotary_dims / mlp_bias outside gpt_neox,
// pos_encoding none outside rwkv / mamba, o_bias without qkv_bias, biases
// with a sliding window, attention mla / nsa, moe_router sigmoid, a block
// the requested family does not have (key 'block'), ...; an unknown
// model_type lists the written ones.
Result<std::string> hf_config_json(const ModelCard& card, const HfConfigExport& options = {});
// MambaConfig JSON for a block: mamba card (hf_config_mamba.cpp); called by
// hf_config_json. options.model_type must be empty or "mamba".
Result<std::string> mamba_config_json(const ModelCard& card, const HfConfigExport& options = {});

}  // namespace el::io
