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
// for every other model type decoder_lm_tensor_specs(card).
std::vector<io::HfTensorSpec> hf_checkpoint_tensor_specs(
    const ModelCard& card, const std::string& model_type,
    const std::string& lm_head_name = "embed_out.weight");

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
Result<HfModel> load_hf_model(const std::string& dir, Device device, DType dtype = DType::f32,
                              const io::HfLoadOptions& options = {});
// The same from an already opened checkpoint.
Result<std::unique_ptr<DecoderLM>> load_hf_model(const io::HfCheckpoint& checkpoint,
                                                 Device device, DType dtype = DType::f32,
                                                 const io::HfLoadOptions& options = {});

// Writes the model as a Hugging Face directory (io::save_hf_checkpoint with
// the model's card and parameters, in their dtype).
Status save_hf_model(const DecoderLM& model, const std::string& dir,
                     const io::HfSaveOptions& options = {});

}  // namespace el
