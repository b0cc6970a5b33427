// quant_io.h — the quantized model directory `efficientllm quantize` writes
// and every engine command loads directly (docs/QUANTIZATION.md).
//
//   <dir>/model.safetensors   every parameter in its stored dtype:
//       <slot>.qweight u8 [N, K * bits / 8], <slot>.scales f16 [N, K / g],
//       <slot>.zeros u8 [N, K / g] (asymmetric only) for each quantized slot
//       (ops/quant_layout.h, stored as they are); embeddings, norms and
//       biases in one float dtype (`dtype`).
//     __metadata__ (strings): format "efficientllm-quantized",
//       format_version "1", bits, group_size (0 = per channel), symmetric,
//       method, dtype, quantized_slots (JSON array of slot paths),
//       quantized_experts (JSON array of MoE expert tensor names, e.g.
//       model.layers.0.mlp.experts.down_proj, stored as <name>.qweight /
//       .scales / .zeros with the E experts' rows stacked, [E N, ...];
//       absent when the experts are dense), lm_head_quantized,
//       model_card (the card's YAML, what the model is rebuilt from),
//       source, hf_config (config.json of a Hugging Face source, else
//       absent).
//   <dir>/quant_config.json   the same facts for humans, plus calibration and
//                             size figures (never read back).
//   <dir>/tokenizer.json, tokenizer.model, tokenizer_config.json,
//   special_tokens_map.json   copied from the source when it has them.
//
// Every file is written atomically (temporary file, then rename), the
// weights last. Loading validates before allocating: the metadata, the card,
// then every tensor's name, shape and dtype against what the card and the
// metadata imply (every name present, no extra tensor); only then is the
// model built (no random init) with QuantLinear slots of the right shapes
// (q/k/v and gate/up stacked as quantize_model made them) and
// QuantGroupedProjection experts, and filled.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/decoder_lm.h"
#include "quant/rtn.h"

namespace el::quant {

inline constexpr const char* kQuantizedFormat = "efficientllm-quantized";
inline constexpr int kQuantizedFormatVersion = 1;
inline constexpr const char* kQuantizedWeightsFile = "model.safetensors";
inline constexpr const char* kQuantConfigFile = "quant_config.json";

struct QuantizedSaveOptions {
  std::string method = "rtn";   // "rtn" | "gptq" (recorded)
  // The dtype of the unquantized float tensors on disk; nullopt: as they
  // are (they must then share one dtype).
  std::optional<DType> dtype;
  std::string source;           // where the model came from (recorded)
  std::string hf_config_json;   // config.json text of a Hugging Face source
  // Files copied into the directory: (source path, file name in the
  // directory), e.g. the tokenizer as "tokenizer.model".
  std::vector<std::pair<std::string, std::string>> copy_files;
  nlohmann::json extra = nlohmann::json::object();  // merged into quant_config.json
};

// What the metadata says (validated).
struct QuantizedModelMetadata {
  int format_version = kQuantizedFormatVersion;
  QuantSpec spec;                    // group_size 0 = per channel
  std::string method;
  DType dtype = DType::f32;          // of the unquantized tensors in the file
  std::vector<std::string> slots;    // quantized slot paths
  std::vector<std::string> experts;  // quantized MoE expert tensors (quant/quant_grouped.h)
  bool lm_head_quantized = false;
  std::string model_card_yaml;
  std::string source;
  std::string hf_config_json;
};

// Writes the directory (created if needed) for a model whose slots
// quantize_model swapped. The model is not modified (non-const only to visit
// its slots). Errors: no quantized slot, slots of different bits / symmetry /
// group rule, unquantized tensors of mixed dtypes without options.dtype, a
// copy file that cannot be read, I/O failures (named).
Status save_quantized_model(DecoderLM& model, const std::string& dir,
                            const QuantizedSaveOptions& options = {});

// The metadata of <dir>/model.safetensors (or of that file itself when `path`
// names a file). Errors: not this format, another format_version (the file,
// the version found and the one supported), missing or malformed keys.
Result<QuantizedModelMetadata> read_quantized_metadata(const std::string& path);

struct QuantizedModelFile {
  std::unique_ptr<DecoderLM> model;  // activations (and unquantized params) in act_dtype
  QuantizedModelMetadata metadata;
  std::string tokenizer_dir;         // the directory when it holds a tokenizer, else ""
};

// Loads a directory written by save_quantized_model onto `device` with the
// unquantized parameters (hence the activations) in `act_dtype` (f32, bf16
// or f16). Errors: read_quantized_metadata's, an invalid card, a slot the
// card has no projection for, a shape the spec cannot quantize, a missing,
// extra, misshapen or wrongly typed tensor (named with the file), allocation.
Result<QuantizedModelFile> load_quantized_model(const std::string& dir, Device device,
                                                DType act_dtype = DType::f32);

// Whether `dir` holds a quantized model (its model.safetensors says so).
bool is_quantized_model_dir(const std::string& dir);

}  // namespace el::quant
