// hf_model.h — DecoderLM from and to Hugging Face model directories.
//
// The glue between io/hf_checkpoint.h (directories, tensors, config.json)
// and the model: the card comes from config.json (io/hf_config.h), the
// checkpoint is validated against the tensors that card's DecoderLM has —
// computed from the card alone, before anything is allocated — and only then
// is the model built (without a random init) and filled. q/k/v and gate/up
// are row blocks of one stacked buffer (nn/module.h make_stacked_linears);
// each block is loaded through its own parameter, so the stacking survives.
//
//   auto hf = load_hf_model("/models/Llama-3.2-1B", Device::cpu(), DType::bf16);
//   hf->model->forward(ids);             // logits as transformers computes them
//   save_hf_model(*hf->model, "/tmp/out", {.passthrough = hf->config.passthrough});
//
// Export (save_hf_model) is the inverse of every mapping here, for every
// family load_hf_model reads except deepseek (MLA configs are not written).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/hf_checkpoint.h"
#include "models/decoder_lm.h"

namespace el {

// The tensors (transformers names, shapes) of the DecoderLM `card` builds, in
// DecoderLM::parameters() order; no allocation, so big checkpoints can be
// checked (efficientllm model info --hf) on any machine.
std::vector<io::HfTensorSpec> decoder_lm_tensor_specs(const ModelCard& card);

// The tensors a checkpoint of `model_type` holds for `card`: for gpt_neox
// GPTNeoXForCausalLM's names — gpt_neox.embed_in, gpt_neox.layers.{i}.
// {input_layernorm, post_attention_layernorm, attention.query_key_value
// [3C, C] (+ bias), attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h},
// gpt_neox.final_layer_norm and, untied, `lm_head_name` (the Hub's Pythia
// checkpoints say embed_out.weight; transformers 5 saves lm_head.weight);
// for rwkv RwkvForCausalLM's — rwkv.embeddings, rwkv.blocks.{i}.{pre_ln (layer
// 0), ln1, ln2, attention.{time_decay [A], time_first [A], time_mix_key /
// value / receptance [1, 1, C], key / value / receptance [A, C], output [C, A]},
// feed_forward.{time_mix_key / receptance [1, 1, C], key [F, C], receptance
// [C, C], value [C, F]}}, rwkv.ln_out and, untied, head.weight (the same names
// as DecoderLM's under other prefixes, nn/rwkv.h); for mamba
// MambaForCausalLM's — backbone.embeddings, backbone.layers.{i}.{norm,
// mixer.{in_proj (+ bias), conv1d.weight [I, 1, K] (+ bias), x_proj, dt_proj
// (+ bias), A_log [I, N], D [I], out_proj (+ bias)}}, backbone.norm_f and,
// untied, lm_head.weight (our layers name the norm input_layernorm; a
// checkpoint may name the embedding backbone.embedding.weight, as older
// transformers did);
// for mixtral / qwen2_moe the per-expert tensors save_pretrained writes
// (see load_hf_model);
// for every other model type decoder_lm_tensor_specs(card).
std::vector<io::HfTensorSpec> hf_checkpoint_tensor_specs(
    const ModelCard& card, const std::string& model_type,
    const std::string& lm_head_name = "embed_out.weight");
// The tensors an opened checkpoint must hold for its config, in the layout
// it uses (gpt_neox's unembedding name; mixtral / qwen2_moe experts per
// expert or fused).
std::vector<io::HfTensorSpec> hf_checkpoint_tensor_specs(const io::HfCheckpoint& checkpoint);

// GPT-NeoX's fused query_key_value rows to our stacked q/k/v rows: the
// checkpoint's 3 H D rows (of row_len values each; 1 for the bias) are per
// head [H, 3, D] — head h's q, k, v at rows h 3D + j D + d, j = 0, 1, 2 — and
// ours [3, H, D] (all q rows, then k, then v: q_proj, k_proj, v_proj).
std::vector<float> gpt_neox_qkv_to_stacked(const std::vector<float>& fused, int64_t n_head,
                                           int64_t head_dim, int64_t row_len);

struct HfModel {
  io::HfConfig config;               // the mapped card, model_type, dtype, token ids
  std::unique_ptr<DecoderLM> model;  // parameters in the requested dtype on the device
};

// Opens `dir`, validates the card and the tensors, then builds the model on
// `device` with `dtype` parameters (the checkpoint's dtype is converted) and
// loads every parameter. Errors: any of HfCheckpoint::open / validate, an
// invalid card, allocation failures (named with the tensor).
// gpt_neox checkpoints are renamed into DecoderLM's parameters and their
// query_key_value split (gpt_neox_qkv_to_stacked); the causal-mask buffers
// older ones saved (attention.bias, attention.masked_bias) are ignored.
// rwkv checkpoints are renamed the same way (a tied checkpoint's head.weight
// is ignored), and so are mamba ones (a tied checkpoint's lm_head.weight is
// ignored).
// mixtral and qwen2_moe checkpoints (nn/moe.h) load in either layout: the
// per-expert tensors save_pretrained writes (mixtral block_sparse_moe.{gate,
// experts.{j}.w1 / w3 / w2}, qwen2_moe mlp.{gate, experts.{j}.gate_proj /
// up_proj / down_proj}), each copied into its expert's rows of our stacked
// mlp.experts.gate_up_proj / down_proj, or those fused tensors themselves
// (transformers' in-memory names, which transformers 5 loads too). A missing
// expert or one beyond the config's count is an error naming the tensor.
Result<HfModel> load_hf_model(const std::string& dir, Device device, DType dtype = DType::f32,
                              const io::HfLoadOptions& options = {});
// The same from an already opened checkpoint.
Result<std::unique_ptr<DecoderLM>> load_hf_model(const io::HfCheckpoint& checkpoint,
                                                 Device device, DType dtype = DType::f32,
                                                 const io::HfLoadOptions& options = {});

// Writes the model as a Hugging Face directory that transformers'
// from_pretrained and load_hf_model both load: io::save_hf_checkpoint with
// the config.json of the card's family (options.model_type, or
// io::hf_export_model_type's choice) and the parameters in their dtype under
// that family's names, the inverse of load_hf_model's mapping:
//   llama / mistral / qwen2   our names (they are transformers')
//   gpt_neox                  GPTNeoXForCausalLM's names (hf_checkpoint_tensor_specs),
//                             q/k/v fused back into query_key_value per head,
//                             the untied unembedding as embed_out.weight (the
//                             Hub's Pythia name; transformers 5 renames it)
//   rwkv, mamba               RwkvForCausalLM's / MambaForCausalLM's names
//   mixtral / qwen2_moe       save_pretrained's per-expert tensors (mixtral
//                             block_sparse_moe.{gate, experts.{j}.w1/w3/w2},
//                             qwen2_moe mlp.{gate, experts.{j}.gate_proj /
//                             up_proj / down_proj}), which transformers 4
//                             and 5 load; shared expert and its gate as ours
// Errors: a card the family cannot hold (io::hf_config_json, naming the card
// key) before anything is written; then save_hf_checkpoint's.
Status save_hf_model(const DecoderLM& model, const std::string& dir,
                     const io::HfSaveOptions& options = {});

}  // namespace el
