#include "quant/quant_io.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "models/hf_model.h"
#include "nn/model_card.h"
#include "quant/quant_grouped.h"
#include "quant/quant_linear.h"
#include "quant/quantize_model.h"

namespace el::quant {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string weights_path(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) ? (fs::path(path) / kQuantizedWeightsFile).string() : path;
}

// What the file must hold: name -> (shape, dtype).
struct Expected {
  Shape shape;
  DType dtype;
};

}  // namespace

Status save_quantized_model(DecoderLM& model, const std::string& dir, const QuantizedSaveOptions& o) {
  // The quantized slots and the one spec they share.
  std::vector<std::string> slots;
  std::vector<const QuantizedWeight*> weights;  // slots', then the experts'
  std::vector<std::string> names;
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    if (const auto* q = dynamic_cast<const QuantLinear*>(slot.get())) {
      slots.push_back(path);
      weights.push_back(&q->weight());
      names.push_back(path);
    }
  });
  // The quantized MoE expert projections (quant/quant_grouped.h).
  std::vector<std::string> expert_paths;
  model.for_each_grouped([&](const std::string& path, std::unique_ptr<GroupedProjection>& slot) {
    if (const auto* q = dynamic_cast<const QuantGroupedProjection*>(slot.get())) {
      expert_paths.push_back(path);
      weights.push_back(&q->weight());
      names.push_back(path);
    }
  });
  if (slots.empty() && expert_paths.empty()) {
    return make_error("the model has no quantized slot", dir, "run quantize_model first");
  }
  QuantSpec spec;
  const QuantizedWeight& w0 = *weights.front();
  spec.bits = w0.bits;
  spec.symmetric = w0.symmetric;
  spec.group_size = w0.group_size;
  bool same_group = true, per_channel = true;
  for (size_t i = 0; i < weights.size(); ++i) {
    const QuantizedWeight& w = *weights[i];
    if (w.bits != spec.bits || w.symmetric != spec.symmetric) {
      return make_error(fmt::format("slot {} is {}-bit {} but slot {} is {}-bit {}", names[i], w.bits,
                                    w.symmetric ? "symmetric" : "asymmetric", names[0], spec.bits,
                                    spec.symmetric ? "symmetric" : "asymmetric"),
                        dir, "the format holds one quantization spec per model");
    }
    same_group = same_group && w.group_size == spec.group_size;
    per_channel = per_channel && w.group_size == w.in_features;
  }
  if (!same_group) {
    if (!per_channel) {
      return make_error("the quantized slots use different group sizes", dir,
                        "the format holds one group size (or per-channel) per model");
    }
    spec.group_size = 0;
  }

  // Tensors: quantized ones as they are, the rest in one float dtype.
  std::set<std::string> quantized_names;
  for (const std::string& s : names) {
    for (const char* suffix : {".qweight", ".scales", ".zeros"}) quantized_names.insert(s + suffix);
  }
  std::optional<DType> dtype = o.dtype;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : model.parameters()) {
    Tensor t = p.tensor;
    if (!quantized_names.count(p.name)) {
      if (!dtype) dtype = t.dtype();
      if (t.dtype() != *dtype) {
        if (!o.dtype) {
          return make_error(fmt::format("tensor '{}' is {} but others are {}", p.name, dtype_name(t.dtype()),
                                        dtype_name(*dtype)),
                            dir, "pass a dtype for the unquantized tensors (--dtype)");
        }
        Tensor c = Tensor::empty(t.shape(), *dtype, Device::cpu());
        c.copy_from(t);
        t = c;
      }
    }
    tensors.emplace_back(p.name, t);
  }
  if (!dtype || !dtype_is_float(*dtype)) {
    return make_error("the unquantized tensors need a float dtype", dir, "use --dtype f32, bf16 or f16");
  }

  const bool lm_head = std::find(slots.begin(), slots.end(), "lm_head") != slots.end();
  std::map<std::string, std::string> md = {
      {"format", kQuantizedFormat},
      {"format_version", std::to_string(kQuantizedFormatVersion)},
      {"bits", std::to_string(spec.bits)},
      {"group_size", std::to_string(spec.group_size)},
      {"symmetric", spec.symmetric ? "true" : "false"},
      {"method", o.method},
      {"dtype", dtype_name(*dtype)},
      {"quantized_slots", nlohmann::json(slots).dump()},
      {"lm_head_quantized", lm_head ? "true" : "false"},
      {"model_card", model_card_to_yaml(model.card())},
      {"source", o.source},
  };
  if (!expert_paths.empty()) md["quantized_experts"] = nlohmann::json(expert_paths).dump();
  if (!o.hf_config_json.empty()) md["hf_config"] = o.hf_config_json;

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error("cannot create the output directory: " + ec.message(), dir);
  for (const auto& [src, name] : o.copy_files) {
    if (name.empty() || name.find('/') != std::string::npos) {
      return make_error(fmt::format("'{}' is not a plain file name", name), src);
    }
    const fs::path dst = fs::path(dir) / name;
    if (fs::exists(dst, ec) && fs::equivalent(src, dst, ec)) continue;  // already there
    EL_TRY_ASSIGN(std::string bytes, io::read_file(src));
    EL_TRY(io::write_file_atomic(dst.string(), bytes));
  }
  nlohmann::json human = {{"format", kQuantizedFormat},
                          {"format_version", kQuantizedFormatVersion},
                          {"method", o.method},
                          {"bits", spec.bits},
                          {"group_size", spec.group_size},
                          {"symmetric", spec.symmetric},
                          {"dtype", dtype_name(*dtype)},
                          {"lm_head_quantized", lm_head},
                          {"quantized_slots", slots.size()},
                          {"quantized_experts", expert_paths.size()},
                          {"model", model.card().name},
                          {"source", o.source}};
  if (o.extra.is_object()) {
    for (const auto& [k, v] : o.extra.items()) human[k] = v;
  }
  EL_TRY(io::write_file_atomic((fs::path(dir) / kQuantConfigFile).string(), human.dump(2) + "\n"));
  return io::save_safetensors((fs::path(dir) / kQuantizedWeightsFile).string(), tensors, md);
}

Result<QuantizedModelMetadata> read_quantized_metadata(const std::string& path_or_dir) {
  const std::string path = weights_path(path_or_dir);
  EL_TRY_ASSIGN(io::SafetensorsFile file, io::SafetensorsFile::open(path));
  const auto& md = file.metadata();
  auto get = [&](const char* key) -> std::string {
    auto it = md.find(key);
    return it == md.end() ? std::string() : it->second;
  };
  auto key_error = [&](const char* key, std::string what, std::string hint = {}) {
    return make_error(std::move(what), fmt::format("{}: metadata '{}'", path, key), std::move(hint));
  };
  if (get("format") != kQuantizedFormat) {
    return key_error("format",
                     fmt::format("not an EfficientLLM quantized model (format '{}', expected '{}')",
                                 get("format"), kQuantizedFormat),
                     "pass a directory written by `efficientllm quantize`");
  }
  const std::string version = get("format_version");
  if (version != std::to_string(kQuantizedFormatVersion)) {
    return key_error("format_version",
                     fmt::format("quantized format version '{}' is not supported (this build reads "
                                 "version {})",
                                 version, kQuantizedFormatVersion),
                     "re-quantize the model with this build's `efficientllm quantize`");
  }
  auto get_int = [&](const char* key) -> Result<int64_t> {
    const std::string v = get(key);
    try {
      size_t used = 0;
      const int64_t x = std::stoll(v, &used);
      if (used == v.size()) return x;
    } catch (...) {
    }
    return key_error(key, fmt::format("'{}' is not an integer", v));
  };
  auto get_bool = [&](const char* key) -> Result<bool> {
    const std::string v = get(key);
    if (v == "true") return true;
    if (v == "false") return false;
    return key_error(key, fmt::format("'{}' is not true or false", v));
  };
  QuantizedModelMetadata m;
  m.format_version = kQuantizedFormatVersion;
  EL_TRY_ASSIGN(const int64_t bits, get_int("bits"));
  EL_TRY_ASSIGN(m.spec.group_size, get_int("group_size"));
  EL_TRY_ASSIGN(m.spec.symmetric, get_bool("symmetric"));
  EL_TRY_ASSIGN(m.lm_head_quantized, get_bool("lm_head_quantized"));
  if (bits != 4 && bits != 8) return key_error("bits", fmt::format("bits {} is not 4 or 8", bits));
  m.spec.bits = static_cast<int>(bits);
  if (m.spec.group_size < 0) {
    return key_error("group_size", fmt::format("group size {} is negative", m.spec.group_size));
  }
  m.method = get("method");
  const auto dtype = dtype_from_name(get("dtype"));
  if (!dtype || !dtype_is_float(*dtype)) {
    return key_error("dtype", fmt::format("'{}' is not a float dtype", get("dtype")));
  }
  m.dtype = *dtype;
  const auto slots = nlohmann::json::parse(get("quantized_slots"), nullptr, false);
  if (slots.is_discarded() || !slots.is_array()) {
    return key_error("quantized_slots", "expected a JSON array of slot paths");
  }
  for (const auto& s : slots) {
    if (!s.is_string()) return key_error("quantized_slots", "expected a JSON array of slot paths");
    m.slots.push_back(s.get<std::string>());
  }
  // Absent in files without quantized experts.
  if (!get("quantized_experts").empty()) {
    const auto experts = nlohmann::json::parse(get("quantized_experts"), nullptr, false);
    if (experts.is_discarded() || !experts.is_array()) {
      return key_error("quantized_experts", "expected a JSON array of expert tensor names");
    }
    for (const auto& s : experts) {
      if (!s.is_string()) return key_error("quantized_experts", "expected a JSON array of expert tensor names");
      m.experts.push_back(s.get<std::string>());
    }
  }
  if (m.slots.empty() && m.experts.empty()) {
    return key_error("quantized_slots", "no quantized slot or expert tensor listed");
  }
  m.model_card_yaml = get("model_card");
  if (m.model_card_yaml.empty()) return key_error("model_card", "missing (the model card YAML)");
  m.source = get("source");
  m.hf_config_json = get("hf_config");
  return m;
}

bool is_quantized_model_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / kQuantizedWeightsFile, ec)) return false;
  auto file = io::SafetensorsFile::open((fs::path(dir) / kQuantizedWeightsFile).string());
  if (!file.ok()) return false;
  auto it = file.value().metadata().find("format");
  return it != file.value().metadata().end() && it->second == kQuantizedFormat;
}

Result<QuantizedModelFile> load_quantized_model(const std::string& dir, Device device, DType act_dtype) {
  const std::string path = weights_path(dir);
  EL_TRY_ASSIGN(QuantizedModelMetadata meta, read_quantized_metadata(path));
  EL_TRY_ASSIGN(io::SafetensorsFile file, io::SafetensorsFile::open(path));
  EL_TRY_ASSIGN(ModelCard card, parse_model_card(meta.model_card_yaml, path + ": metadata 'model_card'"));
  EL_TRY(validate_model_card(card));
  if (!dtype_is_float(act_dtype)) {
    return make_error(fmt::format("activation dtype {} is not a float dtype", dtype_name(act_dtype)), path,
                      "use f32, bf16 or f16");
  }

  // What the card and the metadata imply, checked against the file before
  // anything is allocated.
  std::map<std::string, Shape> dense;
  std::vector<std::string> order;
  for (const auto& s : decoder_lm_tensor_specs(card)) {
    dense[s.name] = s.shape;
    order.push_back(s.name);
  }
  // A listed slot must name a 2-D weight of the card here; that it is a
  // projection slot of the model (not, say, the embedding) is checked once
  // the model is built, against the slots its blocks expose.
  std::set<std::string> quantized;
  for (const std::string& slot : meta.slots) {
    const auto it = dense.find(slot + ".weight");
    if (it == dense.end() || it->second.size() != 2) {
      return make_error(fmt::format("quantized slot '{}' is not a projection of model card '{}'", slot, card.name),
                        path + ": metadata 'quantized_slots'");
    }
    if (!quantized.insert(slot).second) {
      return make_error(fmt::format("slot '{}' is listed twice", slot), path + ": metadata 'quantized_slots'");
    }
    EL_TRY(check_quantizable(path + ": tensor '" + slot + ".weight'", it->second[0], it->second[1], meta.spec));
  }
  // A listed expert tensor must be a 3-D [E, N, K] tensor of the card.
  std::set<std::string> quantized_experts;
  for (const std::string& name : meta.experts) {
    const auto it = dense.find(name);
    if (it == dense.end() || it->second.size() != 3) {
      return make_error(fmt::format("quantized expert tensor '{}' is not an MoE expert projection of model card '{}'",
                                    name, card.name),
                        path + ": metadata 'quantized_experts'");
    }
    if (!quantized_experts.insert(name).second) {
      return make_error(fmt::format("expert tensor '{}' is listed twice", name), path + ": metadata 'quantized_experts'");
    }
    EL_TRY(check_quantizable(path + ": tensor '" + name + "'", it->second[0] * it->second[1], it->second[2],
                             meta.spec));
  }
  if (meta.lm_head_quantized != (quantized.count("lm_head") > 0)) {
    return make_error("lm_head_quantized disagrees with quantized_slots", path + ": metadata 'lm_head_quantized'");
  }
  std::map<std::string, Expected> expected;
  for (const std::string& name : order) {
    const Shape& shape = dense[name];
    const std::string slot = name.size() > 7 ? name.substr(0, name.size() - 7) : std::string();
    if (quantized_experts.count(name)) {  // stacked [E N, K]
      const int64_t n = shape[0] * shape[1], k = shape[2], g = meta.spec.group_for(k);
      expected[name + ".qweight"] = {{n, k * meta.spec.bits / 8}, DType::u8};
      expected[name + ".scales"] = {{n, k / g}, DType::f16};
      if (!meta.spec.symmetric) expected[name + ".zeros"] = {{n, k / g}, DType::u8};
    } else if (ends_with(name, ".weight") && quantized.count(slot)) {
      const int64_t n = shape[0], k = shape[1], g = meta.spec.group_for(k);
      expected[slot + ".qweight"] = {{n, k * meta.spec.bits / 8}, DType::u8};
      expected[slot + ".scales"] = {{n, k / g}, DType::f16};
      if (!meta.spec.symmetric) expected[slot + ".zeros"] = {{n, k / g}, DType::u8};
    } else {
      expected[name] = {shape, meta.dtype};
    }
  }
  for (const auto& [name, e] : expected) {
    auto info = file.info(name);
    if (!info.ok()) {
      return make_error(fmt::format("missing tensor '{}' ({} {} expected)", name,
                                    io::safetensors_dtype_name(e.dtype), shape_str(e.shape)),
                        path, "the file is incomplete or was written for another model card");
    }
    if (info.value().shape != e.shape || info.value().dtype != e.dtype) {
      return make_error(fmt::format("tensor '{}' is {} {} in the file, expected {} {}", name,
                                    io::safetensors_dtype_name(info.value().dtype),
                                    shape_str(info.value().shape), io::safetensors_dtype_name(e.dtype),
                                    shape_str(e.shape)),
                        path, "the file does not match its own metadata (bits, group size, card)");
    }
  }
  std::vector<std::string> extra;
  for (const std::string& name : file.names()) {
    if (!expected.count(name)) extra.push_back(name);
  }
  if (!extra.empty()) {
    return make_error(fmt::format("unexpected tensor '{}'{}", extra.front(),
                                  extra.size() > 1 ? fmt::format(" (and {} more)", extra.size() - 1) : ""),
                      path, "the file holds tensors its model card has no place for");
  }

  // Build (no random init), swap the quantized slots in, load every tensor.
  QuantizedModelFile out;
  EL_TRY_ASSIGN(out.model, DecoderLM::create(card, device, /*seed=*/0, act_dtype, /*init_weights=*/false));
  DecoderLM& model = *out.model;
  const std::vector<SlotGroup> groups = projection_groups(model, true);
  std::set<std::string> slot_paths;
  for (const SlotGroup& g : groups) {
    for (const SlotRef& s : g.slots) slot_paths.insert(s.path);
  }
  for (const std::string& slot : meta.slots) {
    if (!slot_paths.count(slot)) {
      return make_error(fmt::format("quantized slot '{}' is not a projection of model card '{}'", slot, card.name),
                        path + ": metadata 'quantized_slots'");
    }
  }
  for (const SlotGroup& g : groups) {
    std::vector<SlotRef> mine;
    for (const SlotRef& s : g.slots) {
      if (quantized.count(s.path)) mine.push_back(s);
    }
    // A whole group is stacked (as quantize_model made it); a partial one per slot.
    std::vector<std::vector<SlotRef>> parts;
    if (mine.size() == g.slots.size()) {
      parts.push_back(mine);
    } else {
      for (const SlotRef& s : mine) parts.push_back({s});
    }
    for (const auto& part : parts) {
      if (part.empty()) continue;
      std::vector<int64_t> outs;
      for (const SlotRef& s : part) outs.push_back((*s.slot)->out_features());
      const auto* dense_slot = dynamic_cast<const Linear*>(part.front().slot->get());
      EL_ENSURE(dense_slot, "load_quantized_model: slot {} of a new model is not dense", part.front().path);
      const bool bias = dense_slot->bias.defined();
      EL_TRY_ASSIGN(auto layers, make_stacked_quant_linears(dense_slot->in_features(), outs, meta.spec, bias,
                                                            act_dtype, device));
      for (size_t i = 0; i < part.size(); ++i) *part[i].slot = std::move(layers[i]);
    }
  }
  std::set<std::string> expert_seen;
  Status expert_status;
  model.for_each_grouped([&](const std::string& name, std::unique_ptr<GroupedProjection>& slot) {
    if (!quantized_experts.count(name) || !expert_status.ok()) return;
    expert_seen.insert(name);
    auto q = make_quant_grouped(slot->n_experts(), slot->out_features(), slot->in_features(), meta.spec, device);
    if (!q.ok()) {
      expert_status = q.error();
      return;
    }
    slot = std::move(q.value());
  });
  EL_TRY(expert_status);
  EL_ENSURE(expert_seen.size() == quantized_experts.size(),
            "load_quantized_model: {} of {} listed expert tensors have a grouped projection", expert_seen.size(),
            quantized_experts.size());
  model.refresh_parameters();
  std::set<std::string> have;
  for (const auto& p : model.parameters()) have.insert(p.name);
  for (const auto& [name, e] : expected) {
    EL_ENSURE(have.count(name), "load_quantized_model: the model has no parameter '{}'", name);
  }
  EL_ENSURE(have.size() == expected.size(), "load_quantized_model: {} parameters for {} tensors", have.size(),
            expected.size());
  for (const auto& p : model.parameters()) {
    Tensor t = p.tensor;
    t.set_requires_grad(false);
    EL_TRY(file.load_into(p.name, t));
  }
  out.metadata = std::move(meta);
  std::error_code ec;
  const fs::path base = fs::is_directory(dir, ec) ? fs::path(dir) : fs::path(path).parent_path();
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (fs::is_regular_file(base / name, ec)) {
      out.tokenizer_dir = base.string();
      break;
    }
  }
  return out;
}

}  // namespace el::quant
