#include "io/hf_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/suggest.h"

namespace el::io {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string join_path(const std::string& dir, const std::string& file) {
  return (fs::path(dir) / file).string();
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Buffers transformers registers but the engine recomputes from the config:
// older versions saved the rotary caches into checkpoints.
bool is_known_extra(std::string_view name, bool tied) {
  if (tied && name == "lm_head.weight") return true;  // tied: a copy of the embedding
  for (std::string_view buf : {"rotary_emb.inv_freq", "rotary_emb.cos_cached",
                               "rotary_emb.sin_cached"}) {
    if (ends_with(name, buf)) return true;
  }
  return false;
}

// A shard name from the index must stay inside the model directory.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

// "model-00001-of-00003.safetensors" (transformers' shard names).
std::string shard_name(size_t i, size_t n) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
}

bool is_shard_name(const std::string& s) {
  // model-NNNNN-of-NNNNN.safetensors
  if (s.size() != 32 || s.rfind("model-", 0) != 0 || !ends_with(s, ".safetensors")) return false;
  if (s.substr(11, 4) != "-of-") return false;
  for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19})
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// The config.json keys that set the tensors' shapes, for a mismatch's hint.
std::string shape_keys(const std::string& model_type) {
  if (model_type == "mixtral") {
    return "hidden_size, num_attention_heads, num_key_value_heads, head_dim, intermediate_size, "
           "num_local_experts, vocab_size";
  }
  if (model_type == "qwen2_moe") {
    return "hidden_size, num_attention_heads, num_key_value_heads, moe_intermediate_size, "
           "shared_expert_intermediate_size, num_experts, vocab_size";
  }
  if (model_type == "mamba") {
    return "hidden_size, state_size, conv_kernel, expand, time_step_rank, use_bias, "
           "use_conv_bias, vocab_size";
  }
  if (model_type == "rwkv") {
    return "hidden_size, attention_hidden_size, intermediate_size, vocab_size";
  }
  if (model_type == "gpt_neox") {
    return "hidden_size, num_attention_heads, intermediate_size, attention_bias, vocab_size";
  }
  if (model_type == "deepseek_v3" || model_type == "deepseek_v2") {
    return "hidden_size, num_attention_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim, "
           "qk_rope_head_dim, v_head_dim, intermediate_size, vocab_size";
  }
  return "hidden_size, num_attention_heads, num_key_value_heads, head_dim, intermediate_size, "
         "vocab_size";
}

// Every layer of every family has tensors of its own, so a config.json that
// names more layers than the checkpoint holds tensors cannot match it. Checked
// at open, before anything builds a list of expected tensors from the count:
// a num_hidden_layers of 2^31 - 1 must be an error, not billions of names.
Status check_layers_against_tensors(const HfConfig& config, size_t tensors,
                                    const std::string& weights) {
  if (static_cast<uint64_t>(config.card.n_layer) <= tensors) return Status::Ok();
  return make_error(fmt::format("num_hidden_layers {} exceeds the {} tensors of {}: every layer "
                                "has tensors of its own",
                                config.card.n_layer, tensors, weights),
                    fmt::format("{}: key 'num_hidden_layers'", config.card.source_path),
                    "config.json and the weights come from different models");
}

}  // namespace

HfCheckpoint::HfCheckpoint(HfCheckpoint&&) noexcept = default;
HfCheckpoint& HfCheckpoint::operator=(HfCheckpoint&&) noexcept = default;
HfCheckpoint::~HfCheckpoint() = default;

Result<HfCheckpoint> HfCheckpoint::open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return make_error(fs::exists(dir, ec) ? "not a directory" : "no such directory", dir,
                      "pass the directory that holds config.json and model.safetensors");
  }
  HfCheckpoint ck;
  ck.dir_ = dir;
  const std::string config_path = join_path(dir, kHfConfigFile);
  if (!fs::is_regular_file(config_path, ec)) {
    return make_error("no config.json in the model directory", dir,
                      "a Hugging Face model directory holds config.json next to its weights");
  }
  EL_TRY_ASSIGN(ck.config_, load_hf_config(config_path));

  const std::string single = join_path(dir, kHfWeightsFile);
  const std::string index = join_path(dir, kHfIndexFile);
  if (fs::is_regular_file(single, ec)) {  // transformers prefers it over an index too
    ck.weights_path_ = single;
    EL_TRY_ASSIGN(SafetensorsFile f, SafetensorsFile::open(single));
    for (const auto& name : f.names()) ck.tensors_.emplace(name, Location{0});
    ck.files_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
    EL_TRY(check_layers_against_tensors(ck.config_, ck.tensors_.size(), single));
    return ck;
  }
  if (!fs::is_regular_file(index, ec)) {
    std::string hint = "save the model with save_pretrained(..., safe_serialization=True)";
    if (fs::exists(join_path(dir, "pytorch_model.bin"), ec) ||
        fs::exists(join_path(dir, "pytorch_model.bin.index.json"), ec)) {
      hint = "only PyTorch .bin weights are present: convert them to safetensors "
             "(load and save_pretrained with transformers)";
    } else if (fs::exists(join_path(dir, "adapter_model.safetensors"), ec)) {
      hint = "this is a PEFT adapter directory, not a full model";
    }
    return make_error(fmt::format("no {} or {} in the model directory", kHfWeightsFile,
                                  kHfIndexFile),
                      dir, hint);
  }

  // Sharded: the index maps every tensor to its shard file.
  ck.weights_path_ = index;
  EL_TRY_ASSIGN(std::string text, read_file(index));
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return make_error(fmt::format("not valid JSON: {}", e.what()), index);
  }
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object()) {
    return make_error("expected an object with a \"weight_map\" object of tensor -> shard file",
                      index + ": key 'weight_map'");
  }
  std::map<std::string, size_t> shard_ids;  // file name -> index into files_
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> first_tensor;  // shard -> a tensor it should hold
  std::map<std::string, size_t> tensor_count;
  for (const auto& [tensor, shard] : root["weight_map"].items()) {
    const std::string where = fmt::format("{}: key 'weight_map.{}'", index, tensor);
    if (!shard.is_string())
      return make_error("expected a shard file name (a string), got " + shard.dump(), where);
    const std::string file = shard.get<std::string>();
    if (!plain_file_name(file)) {
      return make_error(fmt::format("shard name '{}' is not a plain file name", file), where,
                        "shards must sit in the model directory");
    }
    if (!shard_ids.count(file)) {
      shard_ids[file] = shard_names.size();
      shard_names.push_back(file);
      first_tensor[file] = tensor;
    }
    ++tensor_count[file];
    ck.tensors_.emplace(tensor, Location{shard_ids[file]});
  }
  if (shard_names.empty()) return make_error("weight_map lists no tensors", index);
  for (const auto& file : shard_names) {
    const std::string path = join_path(dir, file);
    if (!fs::exists(path, ec)) {
      return make_error(
          fmt::format("shard '{}' is missing: the index places {} tensor(s) in it, e.g. '{}'",
                      file, tensor_count[file], first_tensor[file]),
          index, fmt::format("copy {} into {} (was the download interrupted?)", file, dir));
    }
    EL_TRY_ASSIGN(SafetensorsFile f, SafetensorsFile::open(path));
    ck.files_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
  }
  for (const auto& [tensor, loc] : ck.tensors_) {
    const SafetensorsFile& f = *ck.files_[loc.file];
    if (!f.contains(tensor)) {
      return make_error(fmt::format("the index places tensor '{}' in shard '{}', which does not "
                                    "contain it{}",
                                    tensor, shard_names[loc.file],
                                    did_you_mean(tensor, f.names())),
                        index + ": key 'weight_map." + tensor + "'",
                        "the index and the shards come from different saves");
    }
  }
  EL_TRY(check_layers_against_tensors(ck.config_, ck.tensors_.size(), index));
  return ck;
}

std::vector<std::string> HfCheckpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

std::vector<std::string> HfCheckpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& [name, loc] : tensors_) out.push_back(name);
  return out;
}

bool HfCheckpoint::contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

Result<SafetensorsFile::TensorInfo> HfCheckpoint::info(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return make_error(fmt::format("no such tensor (the checkpoint has {}){}", tensors_.size(),
                                  did_you_mean(name, tensor_names())),
                      fmt::format("{}: tensor '{}'", weights_path_, name));
  }
  return files_[it->second.file]->info(name);
}

Result<std::string> HfCheckpoint::file_of(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return info(name).error();
  return files_[it->second.file]->path();
}

uint64_t HfCheckpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, loc] : tensors_) {
    auto ti = files_[loc.file]->info(name);
    if (ti.ok()) n += ti->end - ti->begin;
  }
  return n;
}

Status HfCheckpoint::validate(const std::vector<HfTensorSpec>& expected,
                              const HfLoadOptions& options) const {
  std::vector<Error> problems;
  std::set<std::string_view> wanted;
  const std::vector<std::string> names = tensor_names();
  for (const auto& spec : expected) {
    wanted.insert(spec.name);
    auto it = tensors_.find(spec.name);
    if (it == tensors_.end()) {
      problems.push_back(make_error(
          fmt::format("tensor '{}' is missing: the model expects shape {}{}", spec.name,
                      shape_str(spec.shape), did_you_mean(spec.name, names)),
          weights_path_,
          fmt::format("the checkpoint does not match its {} (model_type '{}')", kHfConfigFile,
                      config_.model_type)));
      continue;
    }
    const SafetensorsFile& f = *files_[it->second.file];
    const SafetensorsFile::TensorInfo ti = f.info(spec.name).value();  // present: checked at open
    const std::string where = fmt::format("{}: tensor '{}'", f.path(), spec.name);
    if (ti.shape != spec.shape) {
      problems.push_back(make_error(
          fmt::format("shape mismatch: expected {} from {}, found {}", shape_str(spec.shape),
                      kHfConfigFile, shape_str(ti.shape)),
          where,
          fmt::format("the tensors do not match {} ({}?)", kHfConfigFile,
                      shape_keys(config_.model_type))));
    } else if (!dtype_is_float(ti.dtype)) {
      problems.push_back(make_error(
          fmt::format("dtype {} is not a float dtype (F32, BF16 or F16 expected)",
                      safetensors_dtype_name(ti.dtype)),
          where));
    }
  }
  for (const auto& name : names) {
    if (wanted.count(name) || options.allow_unknown_tensors ||
        is_known_extra(name, config_.card.tied_embeddings)) {
      continue;
    }
    auto file = file_of(name);
    problems.push_back(make_error(
        fmt::format("unexpected tensor '{}': the {} model has no such parameter", name,
                    config_.model_type),
        fmt::format("{}: tensor '{}'", file.ok() ? file.value() : weights_path_, name),
        "allow unknown tensors to ignore it (efficientllm: --allow-unknown-tensors)"));
  }
  if (problems.empty()) return Status::Ok();
  Error e = problems.front();
  if (problems.size() > 1) e.what += fmt::format(" (and {} more problem(s))", problems.size() - 1);
  return e;
}

Status HfCheckpoint::load_into(std::string_view name, Tensor& dst) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return info(name).error();
  return files_[it->second.file]->load_into(name, dst);
}

Status HfCheckpoint::load_parameters(const ParameterList& params,
                                     const HfLoadOptions& options) const {
  EL_TRY(validate(hf_tensor_specs(params), options));
  for (const auto& p : params) {
    Tensor dst = p.tensor;  // a handle: loads into the parameter's own storage
    EL_TRY(load_into(p.name, dst));
  }
  return Status::Ok();
}

std::vector<HfTensorSpec> hf_tensor_specs(const ParameterList& params) {
  std::vector<HfTensorSpec> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back({p.name, p.tensor.shape()});
  return out;
}

// ---- save ---------------------------------------------------------------------------

Status save_hf_checkpoint(const std::string& dir, const ModelCard& card,
                          const ParameterList& params, const HfSaveOptions& options) {
  if (params.empty()) return make_error("no parameters to save", dir);
  const DType dtype = params.front().tensor.dtype();
  std::set<std::string> seen;
  for (const auto& p : params) {
    const std::string where = fmt::format("{}: tensor '{}'", dir, p.name);
    if (!seen.insert(p.name).second) return make_error("parameter name given twice", where);
    if (!p.tensor.defined()) return make_error("parameter tensor is undefined", where);
    if (p.tensor.dtype() != dtype) {
      return make_error(fmt::format("dtype {} differs from the first parameter's {}",
                                    dtype_name(p.tensor.dtype()), dtype_name(dtype)),
                        where, "config.json records one dtype for the whole model");
    }
  }
  if (!dtype_is_float(dtype)) {
    return make_error(fmt::format("parameters are {}, not a float dtype", dtype_name(dtype)), dir);
  }
  HfConfigExport ex;
  ex.model_type = options.model_type;
  ex.torch_dtype = hf_torch_dtype_name(dtype);
  ex.passthrough = options.passthrough;
  EL_TRY_ASSIGN(std::string config_text, hf_config_json(card, ex));

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error("cannot create directory: " + ec.message(), dir);

  // Greedy sharding in parameter order, as transformers does.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& p : params) {
    const uint64_t n = p.tensor.nbytes();
    if (!shards.back().empty() && shard_bytes + n > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(p.name, p.tensor.is_contiguous() ? p.tensor : p.tensor.clone());
    shard_bytes += n;
    total += n;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};  // transformers checks it
  std::set<std::string> written;
  if (shards.size() == 1) {
    EL_TRY(save_safetensors(join_path(dir, kHfWeightsFile), shards[0], meta));
    written.insert(kHfWeightsFile);
  } else {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string file = shard_name(i, shards.size());
      EL_TRY(save_safetensors(join_path(dir, file), shards[i], meta));
      written.insert(file);
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    }
    // A model.safetensors left from an earlier save would win over the index.
    fs::remove(join_path(dir, kHfWeightsFile), ec);
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    EL_TRY(write_file_atomic(join_path(dir, kHfIndexFile), index.dump(2) + "\n"));
    written.insert(kHfIndexFile);
  }
  EL_TRY(write_file_atomic(join_path(dir, kHfConfigFile), config_text));
  // Weight files of an earlier save that this one does not use.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kHfWeightsFile || name == kHfIndexFile || is_shard_name(name);
    if (ours && !written.count(name)) stale.push_back(entry.path());
  }
  for (const auto& path : stale) fs::remove(path, ec);
  return Status::Ok();
}

}  // namespace el::io
