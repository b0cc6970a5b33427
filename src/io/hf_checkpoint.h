// hf_checkpoint.h — Hugging Face model directories: open, validate, load, save.
//
// A model directory as transformers' save_pretrained writes it:
//   config.json                        architecture (io/hf_config.h)
//   model.safetensors                  all weights, or
//   model.safetensors.index.json       {"metadata": {...}, "weight_map": {tensor: shard}}
//   model-00001-of-0000N.safetensors   ... the shards it names
// (tokenizer files may sit beside them; they are not read here).
//
// Opening reads config.json, the index, and every shard's header (each
// checked by SafetensorsFile::open); no tensor data is touched. validate()
// then compares the tensors against what a model expects — names and shapes
// — BEFORE anything is loaded, so a checkpoint that does not match its
// config fails in a second with the tensor, the expected and the found shape
// and the file, instead of halfway through loading many GB.
//
// Tensors the model does not use: rotary inv_freq/cos/sin caches (older
// transformers saved them) and lm_head.weight when the embeddings are tied are
// ignored; any other is an error unless HfLoadOptions::allow_unknown_tensors.
//
// This layer works on names, shapes and ParameterLists; models/hf_model.h
// builds a DecoderLM from the directory and saves one back (mapping names
// and tensor layouts both ways).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "nn/module.h"

namespace el::io {

inline constexpr const char* kHfConfigFile = "config.json";
inline constexpr const char* kHfWeightsFile = "model.safetensors";
inline constexpr const char* kHfIndexFile = "model.safetensors.index.json";

// A tensor the model expects: its transformers name and shape.
struct HfTensorSpec {
  std::string name;
  Shape shape;
};

struct HfLoadOptions {
  bool allow_unknown_tensors = false;  // ignore tensors the model has no slot for
};

class HfCheckpoint {
 public:
  // Opens `dir` (see file comment). Errors: no such directory, no config.json,
  // config errors (hf_config.h), no weights (a pytorch_model.bin-only or
  // adapter directory is named as such), an index that is not JSON or has no
  // weight_map, a shard name that is not a plain file name, a missing shard
  // (named with the index and a tensor it should hold), a tensor the index
  // places in a shard that does not contain it, any safetensors header error,
  // a num_hidden_layers above the number of tensors (every layer has its own;
  // so no caller builds an expected-tensor list from an absurd count).
  static Result<HfCheckpoint> open(const std::string& dir);

  HfCheckpoint(HfCheckpoint&&) noexcept;
  HfCheckpoint& operator=(HfCheckpoint&&) noexcept;
  ~HfCheckpoint();

  const std::string& dir() const { return dir_; }
  const HfConfig& config() const { return config_; }
  // The weights' entry point: "<dir>/model.safetensors" or the index path.
  const std::string& weights_path() const { return weights_path_; }
  // Weight files in shard order (one when not sharded).
  std::vector<std::string> files() const;
  // Every tensor name in the checkpoint, sorted.
  std::vector<std::string> tensor_names() const;
  bool contains(std::string_view name) const;
  // The tensor's header entry and the file holding it.
  Result<SafetensorsFile::TensorInfo> info(std::string_view name) const;
  Result<std::string> file_of(std::string_view name) const;
  // Sum of the tensors' byte sizes.
  uint64_t total_bytes() const;

  // Checks, without reading data, that every expected tensor is present with
  // its shape and a float dtype, and that there are no unknown tensors (see
  // file comment). The error describes the first problem (tensor, expected
  // and found shape, file; a shape mismatch's hint lists the model type's
  // config.json keys that set shapes) and counts the others.
  Status validate(const std::vector<HfTensorSpec>& expected,
                  const HfLoadOptions& options = {}) const;
  // Copies one tensor into `dst` (any device; dtype converted).
  Status load_into(std::string_view name, Tensor& dst) const;
  // validate() against the parameters' names and shapes, then loads each.
  Status load_parameters(const ParameterList& params, const HfLoadOptions& options = {}) const;

 private:
  HfCheckpoint() = default;
  struct Location {
    size_t file = 0;  // index into files_
  };
  std::string dir_;
  HfConfig config_;
  std::string weights_path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location, std::less<>> tensors_;
};

// Specs of a ParameterList (names and shapes), for validate().
std::vector<HfTensorSpec> hf_tensor_specs(const ParameterList& params);

struct HfSaveOptions {
  std::string model_type;                     // "" = infer (hf_config_json)
  uint64_t max_shard_bytes = 5'000'000'000;   // transformers' default "5GB"
  std::map<std::string, std::string> passthrough;  // HfConfig::passthrough
};

// Writes `params` (as they are: same names, shapes and dtype) and the
// config.json mapped from `card` into `dir` (created if needed), so that
// transformers' from_pretrained loads it — the names must already be the
// family's (models/hf_model.h save_hf_model renames a DecoderLM's
// parameters for every written family): one model.safetensors, or shards of
// at most max_shard_bytes (a larger tensor gets a shard of its own) with an
// index when they do not fit in one. Every file is written atomically, the
// index only after its shards; weight files of an earlier save in `dir` that
// the new one does not use are removed, so a loader never mixes the two.
// Errors: the card cannot be exported (hf_config_json), parameters of mixed
// or non-float dtypes, duplicate names, I/O failures.
Status save_hf_checkpoint(const std::string& dir, const ModelCard& card,
                          const ParameterList& params, const HfSaveOptions& options = {});

}  // namespace el::io
