#include "nn/model_card_fields.h"

#include <fmt/format.h>

namespace el::card_fields {

Status refuse_keys(const io::YamlMap& m, const std::vector<std::string>& keys,
                   const std::string& what, const std::string& hint) {
  for (const auto& key : keys) {
    if (m.has(key)) return make_error(fmt::format("{} {}", key, what), m.where(key), hint);
  }
  return Status::Ok();
}

std::optional<FieldError> first_set(const FieldSet& fields, const std::string& what,
                                    const std::string& hint) {
  for (const auto& [key, set] : fields) {
    if (set) return FieldError{key, fmt::format("{} {}", key, what), hint};
  }
  return std::nullopt;
}

std::vector<std::string> keys_of(const FieldSet& fields) {
  std::vector<std::string> out;
  for (const auto& [key, set] : fields) out.push_back(key);
  return out;
}

FieldSet transformer_fields(const ModelCard& c) {
  const ModelCard d;
  return {{"n_head", c.n_head != 0},
          {"n_kv_head", c.n_kv_head != 0},
          {"head_dim", c.head_dim != 0},
          {"rope_theta", c.rope_theta != d.rope_theta},
          {"mlp", c.mlp != d.mlp},
          {"qkv_bias", c.qkv_bias},
          {"o_bias", c.o_bias},
          {"mlp_bias", c.mlp_bias},
          {"sliding_window", c.sliding_window != 0},
          {"rope_scaling", c.rope_scaling != d.rope_scaling},
          {"rope_scaling_factor", c.rope_scaling_factor != 0.0f},
          {"rope_low_freq_factor", c.rope_low_freq_factor != 0.0f},
          {"rope_high_freq_factor", c.rope_high_freq_factor != 0.0f},
          {"rope_original_max_seq_len", c.rope_original_max_seq_len != 0},
          {"attention", c.attention != d.attention},
          {"q_lora_rank", c.q_lora_rank != 0},
          {"kv_lora_rank", c.kv_lora_rank != 0},
          {"qk_nope_head_dim", c.qk_nope_head_dim != 0},
          {"qk_rope_head_dim", c.qk_rope_head_dim != 0},
          {"v_head_dim", c.v_head_dim != 0},
          {"parallel_residual", c.parallel_residual},
          {"rotary_dims", c.rotary_dims != 0},
          {"nsa_window", c.nsa_window != d.nsa_window},
          {"nsa_compress_block", c.nsa_compress_block != d.nsa_compress_block},
          {"nsa_compress_stride", c.nsa_compress_stride != d.nsa_compress_stride},
          {"nsa_select_block", c.nsa_select_block != d.nsa_select_block},
          {"nsa_select_count", c.nsa_select_count != d.nsa_select_count}};
}

FieldSet mamba_fields(const ModelCard& c) {
  const ModelCard d;
  return {{"mamba_d_state", c.mamba_d_state != d.mamba_d_state},
          {"mamba_d_conv", c.mamba_d_conv != d.mamba_d_conv},
          {"mamba_expand", c.mamba_expand != d.mamba_expand},
          {"mamba_dt_rank", c.mamba_dt_rank != d.mamba_dt_rank},
          {"mamba_conv_bias", c.mamba_conv_bias != d.mamba_conv_bias},
          {"mamba_proj_bias", c.mamba_proj_bias != d.mamba_proj_bias}};
}

}  // namespace el::card_fields
