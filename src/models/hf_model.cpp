#include "models/hf_model.h"

namespace el {

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
    }
    norm(p + ".post_attention_layernorm");
    if (c.mlp == ModelCard::Mlp::swiglu) linear(p + ".mlp.gate_proj", C, F, false);
    linear(p + ".mlp.up_proj", C, F, false);
    linear(p + ".mlp.down_proj", F, C, false);
  }
  norm("model.norm");
  if (!c.tied_embeddings) linear("lm_head", C, V, false);
  return out;
}

Result<std::unique_ptr<DecoderLM>> load_hf_model(const io::HfCheckpoint& ck, Device device,
                                                 DType dtype, const io::HfLoadOptions& options) {
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
