// hf_config_mamba.cpp — a block: mamba card as transformers' MambaConfig
// (config.json), the inverse of read_mamba in hf_config.cpp (the mapping
// table is in hf_config.h).
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"

namespace el::io {

Result<std::string> mamba_config_json(const ModelCard& card, const HfConfigExport& opt) {
  using json = nlohmann::json;
  const std::string owner =
      !card.source_path.empty() ? card.source_path : fmt::format("model card '{}'", card.name);
  if (!opt.model_type.empty() && opt.model_type != "mamba") {
    return make_error(fmt::format("a block: mamba card is written as model_type mamba, not '{}'",
                                  opt.model_type),
                      owner, "leave the model type empty (or mamba)");
  }
  if (card.norm != ModelCard::Norm::rmsnorm) {
    return make_error("norm layernorm cannot be exported (MambaRMSNorm only)",
                      fmt::format("{}: key 'norm'", owner));
  }
  // The shortest decimal that reads back as the card's f32, as a JSON double.
  auto f32 = [](float f) { return std::stod(fmt::format("{}", f)); };
  json j;
  j["architectures"] = json::array({"MambaForCausalLM"});
  j["model_type"] = "mamba";
  j["hidden_size"] = card.d_model;
  j["num_hidden_layers"] = card.n_layer;
  j["vocab_size"] = card.vocab_size;
  j["state_size"] = card.mamba_d_state;
  j["conv_kernel"] = card.mamba_d_conv;
  j["expand"] = card.mamba_expand;
  j["intermediate_size"] = card.mamba_d_inner();
  j["time_step_rank"] = card.mamba_effective_dt_rank();
  j["use_bias"] = card.mamba_proj_bias;
  j["use_conv_bias"] = card.mamba_conv_bias;
  j["hidden_act"] = "silu";
  j["layer_norm_epsilon"] = f32(card.norm_eps);
  j["initializer_range"] = f32(card.init_std);
  j["tie_word_embeddings"] = card.tied_embeddings;
  j["residual_in_fp32"] = true;  // MambaConfig's default (hf_config.h)
  j["use_cache"] = true;
  if (!opt.torch_dtype.empty()) j["torch_dtype"] = opt.torch_dtype;
  for (const auto& [key, text] : opt.passthrough) {
    try {
      j[key] = json::parse(text);
    } catch (const json::exception& e) {
      return make_error(fmt::format("passthrough value is not JSON: {}", e.what()),
                        fmt::format("{}: key '{}'", owner, key));
    }
  }
  return j.dump(2) + "\n";
}

}  // namespace el::io
