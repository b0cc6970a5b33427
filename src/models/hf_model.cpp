#include "models/hf_model.h"

#include <map>
#include <set>

#include <fmt/format.h>

namespace el {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// GPT-NeoX tensors the model does not use: the causal-mask buffers older
// transformers saved, and the rotary cache.
bool gpt_neox_ignored(const std::string& name) {
  return ends_with(name, ".attention.bias") || ends_with(name, ".attention.masked_bias") ||
         ends_with(name, "rotary_emb.inv_freq");
}

// The checkpoint name of one of DecoderLM's parameters (not q/k/v: those come
// from one fused tensor), or "" when it has none.
std::string gpt_neox_name(const std::string& ours, const std::string& lm_head_name) {
  if (ours == "model.embed_tokens.weight") return "gpt_neox.embed_in.weight";
  if (ours == "lm_head.weight") return lm_head_name;
  if (ours.rfind("model.norm.", 0) == 0) return "gpt_neox.final_layer_norm." + ours.substr(11);
  const std::string layers = "model.layers.";
  if (ours.rfind(layers, 0) != 0) return {};
  const size_t dot = ours.find('.', layers.size());
  if (dot == std::string::npos) return {};
  const std::string prefix = "gpt_neox.layers." + ours.substr(layers.size(), dot - layers.size());
  const std::string rest = ours.substr(dot + 1);
  const std::pair<const char*, const char*> renames[] = {
      {"input_layernorm.", "input_layernorm."},
      {"post_attention_layernorm.", "post_attention_layernorm."},
      {"self_attn.o_proj.", "attention.dense."},
      {"mlp.up_proj.", "mlp.dense_h_to_4h."},
      {"mlp.down_proj.", "mlp.dense_4h_to_h."}};
  for (const auto& [from, to] : renames) {
    const std::string f = from;
    if (rest.rfind(f, 0) == 0) return prefix + "." + to + rest.substr(f.size());
  }
  return {};
}

// The checkpoint's name for the untied output projection: embed_out.weight
// (the Hub's Pythia), or lm_head.weight when only that is present
// (transformers 5's save_pretrained).
std::string gpt_neox_lm_head_name(const io::HfCheckpoint& ck) {
  return !ck.contains("embed_out.weight") && ck.contains("lm_head.weight") ? "lm_head.weight"
                                                                          : "embed_out.weight";
}

Result<std::unique_ptr<DecoderLM>> load_gpt_neox(const io::HfCheckpoint& ck, Device device,
                                                 DType dtype, const io::HfLoadOptions& options) {
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  const std::string head = gpt_neox_lm_head_name(ck);
  const std::vector<io::HfTensorSpec> specs = hf_checkpoint_tensor_specs(card, "gpt_neox", head);
  // Names, shapes and dtypes first (missing or misshapen tensors named),
  // then the tensors the model has no slot for.
  io::HfLoadOptions shapes_only = options;
  shapes_only.allow_unknown_tensors = true;
  EL_TRY(ck.validate(specs, shapes_only));
  if (!options.allow_unknown_tensors) {
    std::set<std::string> wanted;
    for (const auto& s : specs) wanted.insert(s.name);
    for (const auto& name : ck.tensor_names()) {
      const bool tied_head = card.tied_embeddings && (name == "embed_out.weight" ||
                                                      name == "lm_head.weight");
      if (wanted.count(name) || gpt_neox_ignored(name) || tied_head) continue;
      auto file = ck.file_of(name);
      return make_error(
          fmt::format("unexpected tensor '{}': the gpt_neox model has no such parameter", name),
          fmt::format("{}: tensor '{}'", file.ok() ? file.value() : ck.weights_path(), name),
          "allow unknown tensors to ignore it (efficientllm: --allow-unknown-tensors)");
    }
  }
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model,
                DecoderLM::create(card, device, /*seed=*/0, dtype, /*init_weights=*/false));
  const int64_t C = card.d_model, H = card.n_head, D = card.effective_head_dim();
  std::map<std::string, Tensor> params;
  for (const auto& p : model->parameters()) params.emplace(p.name, p.tensor);
  for (const auto& p : model->parameters()) {
    const std::string name = gpt_neox_name(p.name, head);
    if (name.empty()) continue;  // q/k/v: below
    Tensor dst = p.tensor;
    EL_TRY(ck.load_into(name, dst));
  }
  // query_key_value [3 H D, C] (+ bias [3 H D]) -> q_proj, k_proj, v_proj.
  for (int i = 0; i < card.n_layer; ++i) {
    const std::string ours = "model.layers." + std::to_string(i) + ".self_attn.";
    const std::string theirs = "gpt_neox.layers." + std::to_string(i) + ".attention.query_key_value.";
    for (const char* kind : {"weight", "bias"}) {
      if (!params.count(ours + "q_proj." + kind)) continue;  // no attention bias
      const bool weight = std::string(kind) == "weight";
      const int64_t row_len = weight ? C : 1;
      Tensor fused = Tensor::empty(weight ? Shape{3 * H * D, C} : Shape{3 * H * D}, DType::f32);
      EL_TRY(ck.load_into(theirs + kind, fused));
      const std::vector<float> stacked = gpt_neox_qkv_to_stacked(fused.to_floats(), H, D, row_len);
      const int64_t block = H * D * row_len;
      const char* slots[] = {"q_proj.", "k_proj.", "v_proj."};
      for (int j = 0; j < 3; ++j) {
        Tensor dst = params.at(ours + slots[j] + kind);
        const std::vector<float> part(stacked.begin() + j * block,
                                      stacked.begin() + (j + 1) * block);
        dst.copy_from(Tensor::from_floats(part, dst.shape()));
      }
    }
  }
  return model;
}

}  // namespace

std::vector<float> gpt_neox_qkv_to_stacked(const std::vector<float>& fused, int64_t n_head,
                                           int64_t head_dim, int64_t row_len) {
  EL_ENSURE(static_cast<int64_t>(fused.size()) == 3 * n_head * head_dim * row_len,
            "gpt_neox_qkv_to_stacked: {} values for {} heads of {} dims, rows of {}",
            fused.size(), n_head, head_dim, row_len);
  std::vector<float> out(fused.size());
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t j = 0; j < 3; ++j) {
      for (int64_t d = 0; d < head_dim; ++d) {
        const int64_t src = ((h * 3 + j) * head_dim + d) * row_len;
        const int64_t dst = ((j * n_head + h) * head_dim + d) * row_len;
        std::copy(fused.begin() + src, fused.begin() + src + row_len, out.begin() + dst);
      }
    }
  }
  return out;
}

std::vector<io::HfTensorSpec> hf_checkpoint_tensor_specs(const ModelCard& c,
                                                         const std::string& model_type,
                                                         const std::string& lm_head_name) {
  if (model_type != "gpt_neox") return decoder_lm_tensor_specs(c);
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff, D = c.effective_head_dim();
  const int64_t H = c.n_head;
  std::vector<io::HfTensorSpec> out;
  auto linear = [&](const std::string& prefix, int64_t in, int64_t outf, bool bias) {
    out.push_back({prefix + ".weight", {outf, in}});
    if (bias) out.push_back({prefix + ".bias", {outf}});
  };
  auto norm = [&](const std::string& prefix) {
    out.push_back({prefix + ".weight", {C}});
    out.push_back({prefix + ".bias", {C}});
  };
  out.push_back({"gpt_neox.embed_in.weight", {V, C}});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "gpt_neox.layers." + std::to_string(i);
    norm(p + ".input_layernorm");
    norm(p + ".post_attention_layernorm");
    linear(p + ".attention.query_key_value", C, 3 * H * D, c.qkv_bias);
    linear(p + ".attention.dense", H * D, C, c.o_bias);
    linear(p + ".mlp.dense_h_to_4h", C, F, c.mlp_bias);
    linear(p + ".mlp.dense_4h_to_h", F, C, c.mlp_bias);
  }
  norm("gpt_neox.final_layer_norm");
  if (!c.tied_embeddings) out.push_back({lm_head_name, {V, C}});
  return out;
}

std::vector<io::HfTensorSpec> decoder_lm_tensor_specs(const ModelCard& c) {
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff, D = c.effective_head_dim();
  const int64_t H = c.n_head, Hkv = c.n_kv_head;
  const bool layernorm = c.norm == ModelCard::Norm::layernorm;
  std::vector<io::HfTensorSpec> out;
  auto norm = [&](const std::string& prefix) {
    out.push_back({prefix + ".weight", {C}});
    if (layernorm) out.push_back({prefix + ".bias", {C}});
  };
  auto linear = [&](const std::string& prefix, int64_t in, int64_t outf, bool bias) {
    out.push_back({prefix + ".weight", {outf, in}});
    if (bias) out.push_back({prefix + ".bias", {outf}});
  };
  out.push_back({"model.embed_tokens.weight", {V, C}});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    norm(p + ".input_layernorm");
    if (c.attention == ModelCard::Attention::mla) {  // DeepseekV3Attention's tensors
      const std::string a = p + ".self_attn";
      const int64_t Q = c.q_lora_rank, L = c.kv_lora_rank, R = c.qk_rope_head_dim;
      const int64_t qk = c.qk_nope_head_dim + R;
      if (Q > 0) {
        linear(a + ".q_a_proj", C, Q, c.qkv_bias);
        out.push_back({a + ".q_a_layernorm.weight", {Q}});
        linear(a + ".q_b_proj", Q, H * qk, false);
      } else {
        linear(a + ".q_proj", C, H * qk, false);
      }
      linear(a + ".kv_a_proj_with_mqa", C, L + R, c.qkv_bias);
      out.push_back({a + ".kv_a_layernorm.weight", {L}});
      linear(a + ".kv_b_proj", L, H * (c.qk_nope_head_dim + c.v_head_dim), false);
      linear(a + ".o_proj", H * c.v_head_dim, C, c.o_bias);
    } else {
      linear(p + ".self_attn.q_proj", C, H * D, c.qkv_bias);
      linear(p + ".self_attn.k_proj", C, Hkv * D, c.qkv_bias);
      linear(p + ".self_attn.v_proj", C, Hkv * D, c.qkv_bias);
      linear(p + ".self_attn.o_proj", H * D, C, c.o_bias);
      if (c.attention == ModelCard::Attention::nsa) {  // nn/nsa.h
        const int64_t l = c.nsa_compress_block;
        linear(p + ".self_attn.gate_proj", C, 3 * H, false);
        for (const char* side : {".self_attn.compress_k", ".self_attn.compress_v"}) {
          out.push_back({p + side + ".weight", {D, l * D}});
          out.push_back({p + side + ".pos", {l, D}});
        }
      }
    }
    norm(p + ".post_attention_layernorm");
    if (c.mlp == ModelCard::Mlp::swiglu) linear(p + ".mlp.gate_proj", C, F, c.mlp_bias);
    linear(p + ".mlp.up_proj", C, F, c.mlp_bias);
    linear(p + ".mlp.down_proj", F, C, c.mlp_bias);
  }
  norm("model.norm");
  if (!c.tied_embeddings) linear("lm_head", C, V, false);
  return out;
}

Result<std::unique_ptr<DecoderLM>> load_hf_model(const io::HfCheckpoint& ck, Device device,
                                                 DType dtype, const io::HfLoadOptions& options) {
  if (ck.config().model_type == "gpt_neox") return load_gpt_neox(ck, device, dtype, options);
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  // Every tensor checked against the card before a byte is allocated.
  EL_TRY(ck.validate(decoder_lm_tensor_specs(card), options));
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model,
                DecoderLM::create(card, device, /*seed=*/0, dtype, /*init_weights=*/false));
  // load_parameters validates against the built model's own parameters too,
  // so a layout change in DecoderLM cannot load into the wrong slots.
  EL_TRY(ck.load_parameters(model->parameters(), options));
  return model;
}

Result<HfModel> load_hf_model(const std::string& dir, Device device, DType dtype,
                              const io::HfLoadOptions& options) {
  EL_TRY_ASSIGN(io::HfCheckpoint ck, io::HfCheckpoint::open(dir));
  HfModel out;
  out.config = ck.config();
  EL_TRY_ASSIGN(out.model, load_hf_model(ck, device, dtype, options));
  return out;
}

Status save_hf_model(const DecoderLM& model, const std::string& dir,
                     const io::HfSaveOptions& options) {
  return io::save_hf_checkpoint(dir, model.card(), model.parameters(), options);
}

}  // namespace el
