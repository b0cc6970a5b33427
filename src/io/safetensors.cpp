#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/suggest.h"

namespace el::io {

// The format is little-endian and we copy bytes straight into tensors.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

using OJson = nlohmann::ordered_json;

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {
    {DType::f32, "F32"}, {DType::bf16, "BF16"}, {DType::f16, "F16"},
    {DType::i32, "I32"}, {DType::i64, "I64"},   {DType::u8, "U8"},
};
// Dtypes the format defines that the engine cannot hold: reported as
// "unsupported" rather than "unknown" so the user knows the file is fine.
constexpr const char* kOtherFormatDTypes[] = {"BOOL", "I8",  "I16",     "U16",     "U32",
                                              "U64",  "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F4",   "F6_E2M3", "F6_E3M2", "C64"};

std::string supported_dtype_list() {
  std::string s;
  for (const auto& d : kDTypeNames) s += std::string(s.empty() ? "" : ", ") + d.name;
  return s;
}

// The JSON value's type in words, for "expected X, got Y" messages.
const char* json_kind(const OJson& j) {
  if (j.is_object()) return "an object";
  if (j.is_array()) return "an array";
  if (j.is_string()) return "a string";
  if (j.is_boolean()) return "a boolean";
  if (j.is_null()) return "null";
  if (j.is_number_float()) return "a non-integer number";
  if (j.is_number_integer() && !j.is_number_unsigned()) return "a negative integer";
  return "a number";
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  for (const auto& d : kDTypeNames)
    if (d.dtype == t) return d.name;
  return "?";
}

std::optional<DType> safetensors_dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypeNames)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

// ---- SafetensorsFile: lifetime -------------------------------------------------

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept { *this = std::move(o); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    path_ = std::move(o.path_);
    map_ = std::move(o.map_);
    data_start_ = std::exchange(o.data_start_, 0);
    names_ = std::move(o.names_);
    infos_ = std::move(o.infos_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() = default;

Error SafetensorsFile::tensor_error(std::string_view name, std::string what,
                                    std::string hint) const {
  return make_error(std::move(what), fmt::format("{}: tensor '{}'", path_, name), std::move(hint));
}

// ---- SafetensorsFile: open and validate ------------------------------------------

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;

  EL_TRY_ASSIGN(f.map_, MappedFile::open(path, "safetensors file"));
  const uint64_t file_bytes = f.map_.size();
  if (file_bytes < 8) {
    return make_error(fmt::format("file is {} bytes, too small for the 8-byte header length",
                                  file_bytes),
                      path, "is this a safetensors file?");
  }
  const char* base = reinterpret_cast<const char*>(f.map_.data());

  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, base, 8);
  if (header_bytes > kSafetensorsMaxHeaderBytes) {
    return make_error(fmt::format("header length {} exceeds the {} byte limit", header_bytes,
                                  kSafetensorsMaxHeaderBytes),
                      path, "the file is corrupt or not a safetensors file");
  }
  if (header_bytes > file_bytes - 8) {
    return make_error(fmt::format("header length {} runs past the end of the file ({} bytes)",
                                  header_bytes, file_bytes),
                      path, "the file is truncated or not a safetensors file");
  }
  f.data_start_ = 8 + static_cast<size_t>(header_bytes);
  const uint64_t data_bytes = file_bytes - f.data_start_;

  // Parse, recording top-level keys to catch duplicates (JSON parsers keep
  // only one of them silently, which would hide a tensor).
  std::set<std::string> seen;
  std::string duplicate;
  OJson root;
  try {
    root = OJson::parse(
        base + 8, base + f.data_start_,
        [&](int depth, OJson::parse_event_t ev, OJson& parsed) {
          if (ev == OJson::parse_event_t::key && depth == 1 && parsed.is_string()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
          }
          return true;
        });
  } catch (const OJson::exception& e) {
    return make_error(fmt::format("header is not valid JSON: {}", e.what()), path);
  }
  if (!duplicate.empty()) {
    return f.tensor_error(duplicate, "name appears more than once in the header");
  }
  if (!root.is_object()) {
    return make_error(fmt::format("header must be a JSON object, got {}", json_kind(root)), path);
  }

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const OJson& v = it.value();
    if (name == "__metadata__") {
      const std::string where = path + ": key '__metadata__'";
      if (!v.is_object())
        return make_error(fmt::format("must be an object of strings, got {}", json_kind(v)), where);
      for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
        if (!m2.value().is_string()) {
          return make_error(fmt::format("value of '{}' must be a string, got {}", m2.key(),
                                        json_kind(m2.value())),
                            where);
        }
        f.metadata_[m2.key()] = m2.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object())
      return f.tensor_error(name, fmt::format("entry must be an object, got {}", json_kind(v)));
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!v.contains(field)) return f.tensor_error(name, fmt::format("missing field '{}'", field));
    }

    TensorInfo info;
    info.name = name;
    const OJson& jd = v["dtype"];
    if (!jd.is_string())
      return f.tensor_error(name, fmt::format("'dtype' must be a string, got {}", json_kind(jd)));
    const std::string dname = jd.get<std::string>();
    const auto dt = safetensors_dtype_from_name(dname);
    if (!dt) {
      const bool known = std::any_of(std::begin(kOtherFormatDTypes), std::end(kOtherFormatDTypes),
                                     [&](const char* o) { return dname == o; });
      return f.tensor_error(
          name,
          fmt::format("{} dtype '{}'", known ? "unsupported" : "unknown", dname),
          "supported dtypes: " + supported_dtype_list());
    }
    info.dtype = *dt;

    const OJson& js = v["shape"];
    if (!js.is_array())
      return f.tensor_error(name, fmt::format("'shape' must be an array, got {}", json_kind(js)));
    // numel and byte size with checked multiplication: a hostile shape must
    // not wrap around to a small size that then passes the range checks.
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < js.size(); ++i) {
      const OJson& d = js[i];
      if (!d.is_number_unsigned()) {
        return f.tensor_error(name, fmt::format("shape[{}] must be a non-negative integer, got {}",
                                                i, d.is_number() ? d.dump() : json_kind(d)));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, dtype_size(info.dtype), &nbytes) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return f.tensor_error(name, fmt::format("shape {} overflows the element count", js.dump()));
    }

    const OJson& jo = v["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
        !jo[1].is_number_unsigned()) {
      return f.tensor_error(name, fmt::format("'data_offsets' must be [begin, end] of two "
                                              "non-negative integers, got {}",
                                              jo.dump()));
    }
    info.begin = jo[0].get<uint64_t>();
    info.end = jo[1].get<uint64_t>();
    if (info.begin > info.end) {
      return f.tensor_error(name, fmt::format("data_offsets begin {} is after end {}", info.begin,
                                              info.end));
    }
    if (info.end > data_bytes) {
      return f.tensor_error(name, fmt::format("data_offsets end {} is past the end of the data "
                                              "buffer ({} bytes)",
                                              info.end, data_bytes),
                            "the file is truncated");
    }
    if (info.end - info.begin != nbytes) {
      return f.tensor_error(
          name, fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}",
                            info.begin, info.end, info.end - info.begin, shape_str(info.shape),
                            dname, nbytes));
    }
    f.names_.push_back(name);
    auto pos = f.infos_.emplace(name, std::move(info)).first;
    ranges.push_back({pos->second.begin, pos->second.end, &pos->first});
  }

  // No two tensors may share bytes (writing one would silently change the
  // other). Empty tensors occupy nothing and may sit anywhere.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Range* prev = nullptr;
  for (const auto& r : ranges) {
    if (r.begin == r.end) continue;
    if (prev && r.begin < prev->end) {
      return f.tensor_error(*r.name,
                            fmt::format("data_offsets [{}, {}] overlap tensor '{}' [{}, {}]",
                                        r.begin, r.end, *prev->name, prev->begin, prev->end));
    }
    prev = &r;
  }
  return f;
}

// ---- SafetensorsFile: access ---------------------------------------------------------

Result<SafetensorsFile::TensorInfo> SafetensorsFile::info(std::string_view name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) {
    return tensor_error(name, fmt::format("no such tensor (the file has {} tensors){}",
                                          names_.size(), did_you_mean(name, names_)));
  }
  return it->second;
}

const void* SafetensorsFile::data_ptr(const TensorInfo& info) const {
  EL_ENSURE(map_.data() && data_start_ + info.end <= map_.size() && info.begin <= info.end,
            "data_ptr: tensor '{}' is not from {}", info.name, path_);
  return reinterpret_cast<const char*>(map_.data()) + data_start_ + info.begin;
}

Result<Tensor> SafetensorsFile::load(std::string_view name, Device device) const {
  EL_TRY_ASSIGN(TensorInfo ti, info(name));
  auto host_r = Tensor::try_empty(ti.shape, ti.dtype, Device::cpu());
  if (!host_r.ok()) return tensor_error(name, "cannot allocate: " + host_r.error().message());
  Tensor host = std::move(host_r).value();
  if (ti.end > ti.begin) std::memcpy(host.raw(), data_ptr(ti), ti.end - ti.begin);
  host.set_name(ti.name);
  if (device.is_cpu()) return host;
  auto dev_r = Tensor::try_empty(ti.shape, ti.dtype, device);
  if (!dev_r.ok()) return tensor_error(name, "cannot allocate: " + dev_r.error().message());
  Tensor out = std::move(dev_r).value();
  try {
    out.copy_from(host);
  } catch (const Exception& e) {
    return tensor_error(name, "copy to " + device.str() + " failed: " + e.error().message());
  }
  out.set_name(ti.name);
  return out;
}

Status SafetensorsFile::load_into(std::string_view name, Tensor& dst) const {
  EL_TRY_ASSIGN(TensorInfo ti, info(name));
  if (!dst.defined()) return tensor_error(name, "destination tensor is undefined");
  if (dst.shape() != ti.shape) {
    return tensor_error(name, fmt::format("shape mismatch: expected {}, found {} in the file",
                                          shape_str(dst.shape()), shape_str(ti.shape)));
  }
  if (!dst.is_contiguous()) return tensor_error(name, "destination tensor is not contiguous");
  if (dst.device().is_cpu() && dst.dtype() == ti.dtype) {
    if (ti.end > ti.begin) std::memcpy(dst.raw(), data_ptr(ti), ti.end - ti.begin);
    return Status::Ok();
  }
  // Different dtype or device: stage the file's bytes in a host tensor and let
  // the backend convert/copy.
  EL_TRY_ASSIGN(Tensor host, load(name, Device::cpu()));
  try {
    dst.copy_from(host);
  } catch (const Exception& e) {
    return tensor_error(name, fmt::format("cannot copy {} {} into {} on {}: {}",
                                          safetensors_dtype_name(ti.dtype), shape_str(ti.shape),
                                          dtype_name(dst.dtype()), dst.device().str(),
                                          e.error().message()));
  }
  return Status::Ok();
}

// ---- writer ---------------------------------------------------------------------------

Status save_safetensors(const std::string& path,
                        const std::vector<std::pair<std::string, Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  auto terr = [&](const std::string& name, std::string what) {
    return make_error(std::move(what), fmt::format("{}: tensor '{}'", path, name));
  };

  // Header, in the caller's order; metadata first as the Python writer does.
  OJson header = OJson::object();
  if (!metadata.empty()) {
    OJson m = OJson::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) return make_error("tensor with an empty name", path);
    if (name == "__metadata__") return terr(name, "the name '__metadata__' is reserved");
    if (!seen.insert(name).second) return terr(name, "name given more than once");
    if (!t.defined()) return terr(name, "tensor is undefined");
    if (!t.is_contiguous()) return terr(name, "tensor is not contiguous");
    const uint64_t n = t.nbytes();
    OJson e = OJson::object();
    e["dtype"] = safetensors_dtype_name(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = {offset, offset + n};
    header[name] = std::move(e);
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const OJson::exception& e) {  // e.g. a name that is not valid UTF-8
    return make_error(fmt::format("cannot encode the header: {}", e.what()), path);
  }
  // Spaces are valid JSON whitespace; padding to 8 aligns the data buffer.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();

  // Temp file + fsync + rename (io/atomic_file.h): never a half-written file.
  return write_file_atomic_with(path, [&](int fd) -> Status {
    EL_TRY(write_all(fd, &header_len, 8, path));
    EL_TRY(write_all(fd, text.data(), text.size(), path));
    for (const auto& [name, t] : tensors) {
      if (t.numel() == 0) continue;
      const void* bytes = t.raw();
      Tensor host;
      if (!t.device().is_cpu()) {  // raw bytes through a host tensor of the same dtype
        try {
          host = Tensor::empty(t.shape(), t.dtype(), Device::cpu());
          host.copy_from(t);
        } catch (const Exception& e) {
          return terr(name, "cannot copy to host: " + e.error().message());
        }
        bytes = host.raw();
      }
      EL_TRY(write_all(fd, bytes, t.nbytes(), path));
    }
    return Status::Ok();
  });
}

}  // namespace el::io
