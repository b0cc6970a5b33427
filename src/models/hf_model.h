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

struct HfModel {
  io::HfConfig config;               // the mapped card, model_type, dtype, token ids
  std::unique_ptr<DecoderLM> model;  // parameters in the requested dtype on the device
};

// Opens `dir`, validates the card and the tensors, then builds the model on
// `device` with `dtype` parameters (the checkpoint's dtype is converted) and
// loads every parameter. Errors: any of HfCheckpoint::open / validate, an
// invalid card, allocation failures (named with the tensor).
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
