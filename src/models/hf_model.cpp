#include "models/hf_model.h"

#include <functional>
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

// A renamed family's checkpoint against `specs`: names, shapes and dtypes
// first (missing or misshapen tensors named), then, unless unknown tensors
// are allowed, any tensor the model has no slot for and `ignored` does not
// accept (named, with the model type).
Status validate_renamed(const io::HfCheckpoint& ck, const std::vector<io::HfTensorSpec>& specs,
                        const io::HfLoadOptions& options,
                        const std::function<bool(const std::string&)>& ignored) {
  io::HfLoadOptions shapes_only = options;
  shapes_only.allow_unknown_tensors = true;
  EL_TRY(ck.validate(specs, shapes_only));
  if (options.allow_unknown_tensors) return Status::Ok();
  std::set<std::string> wanted;
  for (const auto& s : specs) wanted.insert(s.name);
  for (const auto& name : ck.tensor_names()) {
    if (wanted.count(name) || ignored(name)) continue;
    auto file = ck.file_of(name);
    return make_error(fmt::format("unexpected tensor '{}': the {} model has no such parameter",
                                  name, ck.config().model_type),
                      fmt::format("{}: tensor '{}'", file.ok() ? file.value() : ck.weights_path(),
                                  name),
                      "allow unknown tensors to ignore it (efficientllm: --allow-unknown-tensors)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<DecoderLM>> load_gpt_neox(const io::HfCheckpoint& ck, Device device,
                                                 DType dtype, const io::HfLoadOptions& options) {
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  const std::string head = gpt_neox_lm_head_name(ck);
  const std::vector<io::HfTensorSpec> specs = hf_checkpoint_tensor_specs(card, "gpt_neox", head);
  EL_TRY(validate_renamed(ck, specs, options, [&](const std::string& name) {
    const bool tied_head =
        card.tied_embeddings && (name == "embed_out.weight" || name == "lm_head.weight");
    return gpt_neox_ignored(name) || tied_head;
  }));
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

// DecoderLM's names <-> RwkvForCausalLM's. The RWKV layers already use
// transformers' names under "model.layers.{i}", so only these prefixes
// differ (two are whole names).
constexpr std::pair<const char*, const char*> kRwkvRenames[] = {
    {"model.embed_tokens.weight", "rwkv.embeddings.weight"},
    {"lm_head.weight", "head.weight"},
    {"model.layers.", "rwkv.blocks."},
    {"model.norm.", "rwkv.ln_out."}};

// "" when the name has no counterpart.
std::string rwkv_rename(const std::string& name, bool to_hf) {
  for (const auto& [ours, theirs] : kRwkvRenames) {
    const std::string from = to_hf ? ours : theirs, to = to_hf ? theirs : ours;
    if (name.rfind(from, 0) == 0) return to + name.substr(from.size());
  }
  return {};
}

Result<std::unique_ptr<DecoderLM>> load_rwkv(const io::HfCheckpoint& ck, Device device,
                                             DType dtype, const io::HfLoadOptions& options) {
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  EL_TRY(validate_renamed(ck, hf_checkpoint_tensor_specs(card, "rwkv"), options,
                          [&](const std::string& name) {
                            return card.tied_embeddings && name == "head.weight";
                          }));
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model,
                DecoderLM::create(card, device, /*seed=*/0, dtype, /*init_weights=*/false));
  for (const auto& p : model->parameters()) {
    const std::string name = rwkv_rename(p.name, /*to_hf=*/true);
    EL_ENSURE(!name.empty(), "load_rwkv: parameter '{}' has no checkpoint name", p.name);
    Tensor dst = p.tensor;
    EL_TRY(ck.load_into(name, dst));
  }
  return model;
}

// The tensors of an RWKV model (block: rwkv or rwkv6), in parameter order
// and RwkvForCausalLM's naming: the embedding, per layer the LayerNorms
// (pre_ln on layer 0, ln1, ln2) then `mixers(attention prefix, feed_forward
// prefix, out)`, ln_out and an untied head.
using RwkvMixerSpecs =
    std::function<void(const std::string&, const std::string&, std::vector<io::HfTensorSpec>&)>;
std::vector<io::HfTensorSpec> rwkv_family_specs(const ModelCard& c, const RwkvMixerSpecs& mixers) {
  const int64_t C = c.d_model, V = c.vocab_size;
  std::vector<io::HfTensorSpec> out;
  auto norm = [&](const std::string& prefix) {
    out.push_back({prefix + ".weight", {C}});
    out.push_back({prefix + ".bias", {C}});
  };
  out.push_back({"rwkv.embeddings.weight", {V, C}});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "rwkv.blocks." + std::to_string(i);
    if (i == 0) norm(p + ".pre_ln");
    norm(p + ".ln1");
    norm(p + ".ln2");
    mixers(p + ".attention.", p + ".feed_forward.", out);
  }
  norm("rwkv.ln_out");
  if (!c.tied_embeddings) out.push_back({"head.weight", {V, C}});
  return out;
}

// RwkvForCausalLM's tensors for `c` (block: rwkv).
std::vector<io::HfTensorSpec> rwkv_tensor_specs(const ModelCard& c) {
  const int64_t C = c.d_model, F = c.d_ff, A = rwkv_attention_size(c);
  return rwkv_family_specs(c, [&](const std::string& a, const std::string& f, auto& out) {
    out.push_back({a + "time_decay", {A}});
    out.push_back({a + "time_first", {A}});
    for (const char* m : {"time_mix_key", "time_mix_value", "time_mix_receptance"}) {
      out.push_back({a + m, {1, 1, C}});
    }
    out.push_back({a + "key.weight", {A, C}});
    out.push_back({a + "value.weight", {A, C}});
    out.push_back({a + "receptance.weight", {A, C}});
    out.push_back({a + "output.weight", {C, A}});
    out.push_back({f + "time_mix_key", {1, 1, C}});
    out.push_back({f + "time_mix_receptance", {1, 1, C}});
    out.push_back({f + "key.weight", {F, C}});
    out.push_back({f + "receptance.weight", {C, C}});
    out.push_back({f + "value.weight", {C, F}});
  });
}

// The tensors of a block: rwkv6 model (nn/rwkv6.h) in the same naming.
// transformers has no RWKV-6 class: this serves the engine's own files
// (e.g. quantized checkpoints).
std::vector<io::HfTensorSpec> rwkv6_tensor_specs(const ModelCard& c) {
  const int64_t C = c.d_model, F = c.d_ff;
  const int64_t D = c.rwkv6_time_mix_extra_dim, Dd = c.rwkv6_time_decay_extra_dim;
  static const char* kParts[] = {"w", "k", "v", "r", "g"};
  return rwkv_family_specs(c, [&](const std::string& a, const std::string& f, auto& out) {
    out.push_back({a + "time_maa_x", {C}});
    for (const char* s : kParts) out.push_back({a + "time_maa_" + s, {C}});
    out.push_back({a + "time_maa_w1", {5 * D, C}});
    for (const char* s : kParts) out.push_back({a + "time_maa_w2_" + s, {C, D}});
    out.push_back({a + "time_decay", {C}});
    out.push_back({a + "time_decay_w1", {Dd, C}});
    out.push_back({a + "time_decay_w2", {C, Dd}});
    out.push_back({a + "time_faaaa", {C}});
    for (const char* m : {"receptance", "key", "value", "gate", "output"}) {
      out.push_back({a + m + ".weight", {C, C}});
    }
    out.push_back({a + "ln_x.weight", {C}});
    out.push_back({a + "ln_x.bias", {C}});
    out.push_back({f + "time_maa_k", {C}});
    out.push_back({f + "time_maa_r", {C}});
    out.push_back({f + "key.weight", {F, C}});
    out.push_back({f + "receptance.weight", {C, C}});
    out.push_back({f + "value.weight", {C, F}});
  });
}

// DecoderLM's names <-> MambaForCausalLM's (block: mamba): the mixer keeps
// transformers' names under model.layers.{i}.mixer; the layer's norm is our
// input_layernorm. `embeddings` is the checkpoint's embedding name
// (mamba_embedding_name). "" when the name has no counterpart.
std::string mamba_rename(const std::string& name, bool to_hf, const std::string& embeddings) {
  const std::pair<std::string, std::string> whole[] = {
      {"model.embed_tokens.weight", embeddings},
      {"lm_head.weight", "lm_head.weight"},
      {"model.norm.weight", "backbone.norm_f.weight"}};
  for (const auto& [ours, theirs] : whole) {
    if (name == (to_hf ? ours : theirs)) return to_hf ? theirs : ours;
  }
  const std::string from = to_hf ? "model.layers." : "backbone.layers.";
  const std::string to = to_hf ? "backbone.layers." : "model.layers.";
  if (name.rfind(from, 0) != 0) return {};
  const size_t dot = name.find('.', from.size());
  if (dot == std::string::npos) return {};
  const std::string layer = name.substr(from.size(), dot - from.size() + 1);  // "{i}."
  const std::string rest = name.substr(dot + 1);
  const std::string norm_ours = "input_layernorm.weight", norm_theirs = "norm.weight";
  if (rest == (to_hf ? norm_ours : norm_theirs)) {
    return to + layer + (to_hf ? norm_theirs : norm_ours);
  }
  return rest.rfind("mixer.", 0) == 0 ? to + layer + rest : std::string();
}

std::vector<io::HfTensorSpec> mamba_tensor_specs(const ModelCard& c, const std::string& emb);

// The embedding's name in a Mamba checkpoint: backbone.embeddings.weight, or
// the older backbone.embedding.weight (transformers' load_hook renames it).
std::string mamba_embedding_name(const io::HfCheckpoint* ck) {
  const std::string old = "backbone.embedding.weight";
  return ck && !ck->contains("backbone.embeddings.weight") && ck->contains(old)
             ? old
             : "backbone.embeddings.weight";
}

Result<std::unique_ptr<DecoderLM>> load_mamba(const io::HfCheckpoint& ck, Device device,
                                              DType dtype, const io::HfLoadOptions& options) {
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  const std::string emb = mamba_embedding_name(&ck);
  EL_TRY(validate_renamed(ck, mamba_tensor_specs(card, emb), options,
                          [&](const std::string& name) {
                            return card.tied_embeddings && name == "lm_head.weight";
                          }));
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model,
                DecoderLM::create(card, device, /*seed=*/0, dtype, /*init_weights=*/false));
  for (const auto& p : model->parameters()) {
    const std::string name = mamba_rename(p.name, /*to_hf=*/true, emb);
    EL_ENSURE(!name.empty(), "load_mamba: parameter '{}' has no checkpoint name", p.name);
    Tensor dst = p.tensor;
    EL_TRY(ck.load_into(name, dst));
  }
  return model;
}

// MambaForCausalLM's tensors for `c` (block: mamba), in parameter order.
std::vector<io::HfTensorSpec> mamba_tensor_specs(const ModelCard& c, const std::string& emb) {
  const int64_t C = c.d_model, V = c.vocab_size, I = c.mamba_d_inner(), N = c.mamba_d_state,
                K = c.mamba_d_conv, R = c.mamba_effective_dt_rank();
  std::vector<io::HfTensorSpec> out;
  out.push_back({emb, {V, C}});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i);
    const std::string m = p + ".mixer.";
    out.push_back({p + ".norm.weight", {C}});
    out.push_back({m + "in_proj.weight", {2 * I, C}});
    if (c.mamba_proj_bias) out.push_back({m + "in_proj.bias", {2 * I}});
    out.push_back({m + "conv1d.weight", {I, 1, K}});
    if (c.mamba_conv_bias) out.push_back({m + "conv1d.bias", {I}});
    out.push_back({m + "x_proj.weight", {R + 2 * N, I}});
    out.push_back({m + "dt_proj.weight", {I, R}});
    out.push_back({m + "dt_proj.bias", {I}});
    out.push_back({m + "A_log", {I, N}});
    out.push_back({m + "D", {I}});
    out.push_back({m + "out_proj.weight", {C, I}});
    if (c.mamba_proj_bias) out.push_back({m + "out_proj.bias", {C}});
  }
  out.push_back({"backbone.norm_f.weight", {C}});
  if (!c.tied_embeddings) out.push_back({"lm_head.weight", {V, C}});
  return out;
}

// ---- mixtral / qwen2_moe (nn/moe.h) --------------------------------------------------
// Our MoE parameters are transformers' in-memory tensors (mlp.gate.weight,
// mlp.experts.gate_up_proj [E, 2F, C], mlp.experts.down_proj [E, C, F]);
// save_pretrained writes them per expert, under the block's name:
// mixtral block_sparse_moe.{gate, experts.{j}.w1 (gate) / w3 (up) / w2
// (down)}, qwen2_moe mlp.{gate, experts.{j}.gate_proj / up_proj / down_proj}.
// A checkpoint holding the fused tensors (transformers' in-memory names,
// which transformers 5 loads too) goes through the plain path instead;
// save_hf_model writes the per-expert layout (moe_export).
struct MoeNames {
  std::string block;
  const char *gate, *up, *down;
};

MoeNames moe_names(const std::string& model_type) {
  if (model_type == "mixtral") return {"block_sparse_moe", "w1", "w3", "w2"};
  return {"mlp", "gate_proj", "up_proj", "down_proj"};
}

// "gate.weight", "experts.gate_up_proj", "experts.down_proj" for a name of
// our MoE router or experts, else "".
std::string moe_part(const std::string& name, size_t* mlp_at) {
  const size_t at = name.find(".mlp.");
  if (at == std::string::npos) return {};
  const std::string rest = name.substr(at + 5);
  if (rest != "gate.weight" && rest != "experts.gate_up_proj" && rest != "experts.down_proj") {
    return {};
  }
  *mlp_at = at;
  return rest;
}

// The per-expert layout's tensors: decoder_lm_tensor_specs with each MoE
// layer's router renamed and its fused experts split per expert.
std::vector<io::HfTensorSpec> moe_expert_specs(const ModelCard& c, const std::string& model_type) {
  const MoeNames n = moe_names(model_type);
  const int64_t C = c.d_model, F = c.moe_expert_d_ff();
  std::vector<io::HfTensorSpec> out;
  for (const auto& s : decoder_lm_tensor_specs(c)) {
    size_t at = 0;
    const std::string part = moe_part(s.name, &at);
    if (part.empty()) {
      out.push_back(s);
      continue;
    }
    const std::string p = s.name.substr(0, at) + "." + n.block + ".";
    if (part == "gate.weight") {
      out.push_back({p + part, s.shape});
      continue;
    }
    for (int64_t j = 0; j < c.moe_experts; ++j) {
      const std::string e = p + "experts." + std::to_string(j) + ".";
      if (part == "experts.gate_up_proj") {
        out.push_back({e + n.gate + ".weight", {F, C}});
        out.push_back({e + n.up + ".weight", {F, C}});
      } else {
        out.push_back({e + n.down + ".weight", {C, F}});
      }
    }
  }
  return out;
}

Result<std::unique_ptr<DecoderLM>> load_moe_experts(const io::HfCheckpoint& ck, Device device,
                                                    DType dtype,
                                                    const io::HfLoadOptions& options) {
  const ModelCard& card = ck.config().card;
  EL_TRY(validate_model_card(card));
  const std::string& mt = ck.config().model_type;
  EL_TRY(ck.validate(moe_expert_specs(card, mt), options));
  EL_TRY_ASSIGN(std::unique_ptr<DecoderLM> model,
                DecoderLM::create(card, device, /*seed=*/0, dtype, /*init_weights=*/false));
  const MoeNames n = moe_names(mt);
  const int64_t F = card.moe_expert_d_ff();
  for (const auto& p : model->parameters()) {
    size_t at = 0;
    const std::string part = moe_part(p.name, &at);
    Tensor dst = p.tensor;
    if (part.empty()) {
      EL_TRY(ck.load_into(p.name, dst));
      continue;
    }
    const std::string prefix = p.name.substr(0, at) + "." + n.block + ".";
    if (part == "gate.weight") {
      EL_TRY(ck.load_into(prefix + part, dst));
      continue;
    }
    // Each expert's tensors into its rows of the stacked buffer.
    for (int64_t j = 0; j < card.moe_experts; ++j) {
      Tensor rows = dst.slice0(j, j + 1).view({dst.dim(1), dst.dim(2)});
      const std::string e = prefix + "experts." + std::to_string(j) + ".";
      if (part == "experts.down_proj") {
        EL_TRY(ck.load_into(e + n.down + ".weight", rows));
        continue;
      }
      Tensor gate = rows.slice0(0, F), up = rows.slice0(F, 2 * F);
      EL_TRY(ck.load_into(e + n.gate + ".weight", gate));
      EL_TRY(ck.load_into(e + n.up + ".weight", up));
    }
  }
  return model;
}

// Whether the checkpoint holds the experts fused (transformers' in-memory
// names) rather than per expert.
bool moe_fused(const io::HfCheckpoint& ck) {
  return ck.contains("model.layers.0.mlp.experts.gate_up_proj");
}

// ---- export: DecoderLM's parameters under a family's checkpoint names -------------------
// The inverse of each loader above: the same tensors (views of the
// parameters, never copies, except GPT-NeoX's fused query_key_value), named
// as save_pretrained names them, so that our loader and transformers' read
// them back.

// An export mapping that left a parameter out or has no parameter for a
// tensor of the family: a bug in the mapping, reported rather than saved.
Error export_gap(const std::string& model_type, const std::string& what) {
  return make_error(fmt::format("cannot export as {}: {}", model_type, what), "save_hf_model");
}

// GPT-NeoX (GPTNeoXForCausalLM, under the Hub's names: embed_out for the
// untied unembedding), in hf_checkpoint_tensor_specs order. Our q/k/v rows
// [3, H, D] go back into the per-head fused query_key_value rows [H, 3, D]
// (the inverse of gpt_neox_qkv_to_stacked), in the parameters' dtype on
// their device.
Result<ParameterList> gpt_neox_export(const DecoderLM& model) {
  const ModelCard& card = model.card();
  const int64_t H = card.n_head, D = card.effective_head_dim();
  std::map<std::string, Tensor> ours, theirs;
  for (const auto& p : model.parameters()) ours.emplace(p.name, p.tensor);
  std::set<std::string> used;
  for (const auto& p : model.parameters()) {
    const std::string name = gpt_neox_name(p.name, "embed_out.weight");
    if (name.empty()) continue;
    theirs.emplace(name, p.tensor);
    used.insert(p.name);
  }
  for (int i = 0; i < card.n_layer; ++i) {
    const std::string a = "model.layers." + std::to_string(i) + ".self_attn.";
    for (const std::string kind : {"weight", "bias"}) {
      if (!ours.count(a + "q_proj." + kind)) continue;  // no attention bias
      const Tensor& q = ours.at(a + "q_proj." + kind);
      Shape shape = q.shape();
      shape[0] *= 3;
      Tensor fused = Tensor::empty(shape, q.dtype(), q.device());
      const char* slots[] = {"q_proj.", "k_proj.", "v_proj."};
      for (int64_t j = 0; j < 3; ++j) {
        const std::string name = a + slots[j] + kind;
        const Tensor& src = ours.at(name);
        used.insert(name);
        for (int64_t h = 0; h < H; ++h) {
          Tensor dst = fused.slice0((h * 3 + j) * D, (h * 3 + j + 1) * D);
          dst.copy_from(src.slice0(h * D, (h + 1) * D));
        }
      }
      theirs.emplace("gpt_neox.layers." + std::to_string(i) + ".attention.query_key_value." + kind,
                     fused);
    }
  }
  for (const auto& p : model.parameters()) {
    if (!used.count(p.name))
      return export_gap("gpt_neox", fmt::format("parameter '{}' has no tensor name", p.name));
  }
  ParameterList out;
  for (const auto& spec : hf_checkpoint_tensor_specs(card, "gpt_neox", "embed_out.weight")) {
    auto it = theirs.find(spec.name);
    if (it == theirs.end())
      return export_gap("gpt_neox", fmt::format("no parameter for tensor '{}'", spec.name));
    out.push_back({spec.name, it->second});
  }
  return out;
}

// Mixtral / Qwen2-MoE in save_pretrained's per-expert layout (which
// transformers 4 and 5 both load): each expert's rows of our stacked
// gate_up_proj [E, 2F, C] / down_proj [E, C, F] as its own tensors, the
// router under the block's name (mixtral's block_sparse_moe).
ParameterList moe_export(const DecoderLM& model, const std::string& model_type) {
  const MoeNames n = moe_names(model_type);
  const int64_t F = model.card().moe_expert_d_ff();
  ParameterList out;
  for (const auto& p : model.parameters()) {
    size_t at = 0;
    const std::string part = moe_part(p.name, &at);
    if (part.empty()) {
      out.push_back(p);
      continue;
    }
    const std::string prefix = p.name.substr(0, at) + "." + n.block + ".";
    if (part == "gate.weight") {
      out.push_back({prefix + part, p.tensor});
      continue;
    }
    const Tensor& t = p.tensor;
    for (int64_t j = 0; j < t.dim(0); ++j) {
      const Tensor rows = t.slice0(j, j + 1).view({t.dim(1), t.dim(2)});
      const std::string e = prefix + "experts." + std::to_string(j) + ".";
      if (part == "experts.down_proj") {
        out.push_back({e + n.down + ".weight", rows});
      } else {
        out.push_back({e + n.gate + ".weight", rows.slice0(0, F)});
        out.push_back({e + n.up + ".weight", rows.slice0(F, 2 * F)});
      }
    }
  }
  return out;
}

// The model's parameters under `model_type`'s checkpoint names.
Result<ParameterList> export_parameters(const DecoderLM& model, const std::string& model_type) {
  const ParameterList& params = model.parameters();
  if (model_type == "gpt_neox") return gpt_neox_export(model);
  if (model_type == "mixtral" || model_type == "qwen2_moe") return moe_export(model, model_type);
  if (model_type != "rwkv" && model_type != "mamba") return params;  // our names are theirs
  ParameterList out;
  for (const auto& p : params) {
    const std::string name = model_type == "rwkv"
                                 ? rwkv_rename(p.name, /*to_hf=*/true)
                                 : mamba_rename(p.name, /*to_hf=*/true, mamba_embedding_name(nullptr));
    if (name.empty())
      return export_gap(model_type, fmt::format("parameter '{}' has no tensor name", p.name));
    out.push_back({name, p.tensor});
  }
  return out;
}

}  // namespace

std::vector<io::HfTensorSpec> hf_checkpoint_tensor_specs(const io::HfCheckpoint& ck) {
  const ModelCard& card = ck.config().card;
  const std::string& mt = ck.config().model_type;
  if ((mt == "mixtral" || mt == "qwen2_moe") && moe_fused(ck)) return decoder_lm_tensor_specs(card);
  // (gpt_neox checkpoints name their unembedding embed_out or, saved by transformers 5, lm_head)
  return hf_checkpoint_tensor_specs(
      card, mt, ck.contains("embed_out.weight") ? "embed_out.weight" : "lm_head.weight");
}

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
  if (model_type == "rwkv") return rwkv_tensor_specs(c);
  if (model_type == "mixtral" || model_type == "qwen2_moe") return moe_expert_specs(c, model_type);
  if (model_type == "mamba") return mamba_tensor_specs(c, mamba_embedding_name(nullptr));
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
  if (c.block == ModelCard::Block::rwkv || c.block == ModelCard::Block::rwkv6) {
    // transformers' names (and the reference's for RWKV-6) under our prefixes
    std::vector<io::HfTensorSpec> out =
        c.block == ModelCard::Block::rwkv ? rwkv_tensor_specs(c) : rwkv6_tensor_specs(c);
    for (auto& s : out) s.name = rwkv_rename(s.name, /*to_hf=*/false);
    return out;
  }
  if (c.block == ModelCard::Block::mamba) {  // transformers' names under our prefixes
    const std::string emb = mamba_embedding_name(nullptr);
    std::vector<io::HfTensorSpec> out = mamba_tensor_specs(c, emb);
    for (auto& s : out) s.name = mamba_rename(s.name, /*to_hf=*/false, emb);
    return out;
  }
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
    if (c.moe_experts > 0) {  // nn/moe.h (transformers' in-memory MoE tensors)
      const int64_t E = c.moe_experts, Fe = c.moe_expert_d_ff();
      out.push_back({p + ".mlp.gate.weight", {E, C}});
      out.push_back({p + ".mlp.experts.gate_up_proj", {E, 2 * Fe, C}});
      out.push_back({p + ".mlp.experts.down_proj", {E, C, Fe}});
      if (c.moe_shared_experts > 0) {
        const int64_t Fs = c.moe_shared_width();
        linear(p + ".mlp.shared_expert.gate_proj", C, Fs, false);
        linear(p + ".mlp.shared_expert.up_proj", C, Fs, false);
        linear(p + ".mlp.shared_expert.down_proj", Fs, C, false);
        linear(p + ".mlp.shared_expert_gate", C, 1, false);
      }
      continue;
    }
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
  if (ck.config().model_type == "rwkv") return load_rwkv(ck, device, dtype, options);
  if (ck.config().model_type == "mamba") return load_mamba(ck, device, dtype, options);
  if ((ck.config().model_type == "mixtral" || ck.config().model_type == "qwen2_moe") &&
      !moe_fused(ck)) {
    return load_moe_experts(ck, device, dtype, options);  // save_pretrained's per-expert layout
  }
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
  // The config first: a card the family cannot hold is refused by its key
  // before any tensor is renamed.
  io::HfSaveOptions opt = options;
  opt.model_type = io::hf_export_model_type(model.card(), options.model_type);
  io::HfConfigExport check;
  check.model_type = opt.model_type;
  EL_TRY(io::hf_config_json(model.card(), check));
  EL_TRY_ASSIGN(ParameterList params, export_parameters(model, opt.model_type));
  return io::save_hf_checkpoint(dir, model.card(), params, opt);
}

}  // namespace el
