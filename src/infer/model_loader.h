// model_loader.h — one way to open every model the inference axis runs:
// a Hugging Face directory, a checkpoint of `efficientllm train`, a model
// card with random weights, or a quantized directory of `efficientllm
// quantize` (quant/quant_io.h), plus where its tokenizer is and which ids
// end a generation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/decoder_lm.h"

namespace el::infer {

struct ModelSource {
  std::string hf_dir;         // config.json + *.safetensors
  std::string checkpoint;     // checkpoint.safetensors of `efficientllm train`
  std::string card;           // a card name or YAML path (random weights)
  std::string quantized_dir;  // written by `efficientllm quantize`
  uint64_t seed = 1234;       // random weights of a card
  // Exactly one source set; an Error naming the options otherwise.
  Status validate() const;
  std::string describe() const;  // "hf:/models/x", "checkpoint:...", ...
};

struct LoadedModel {
  std::unique_ptr<DecoderLM> model;
  std::string tokenizer_dir;       // where tokenizer files are, "" if unknown
  std::vector<int32_t> stop_ids;   // eos_token_id(s) of an HF config
  nlohmann::json quantization;     // the quantized file's metadata, null otherwise
};

// Loads `source` on `device` with parameters (unquantized ones) in `dtype`.
Result<LoadedModel> load_model(const ModelSource& source, Device device, DType dtype);

}  // namespace el::infer
