// safetensors.h — reader and writer for the safetensors checkpoint format.
//
// Format (https://huggingface.co/docs/safetensors): 8-byte little-endian u64 N,
// then N bytes of UTF-8 JSON (may be padded with trailing spaces), then the data
// buffer. The JSON maps tensor names to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// with offsets relative to the start of the data buffer, plus an optional
// "__metadata__": {"key": "value"} of string pairs.
//
// Files are untrusted input: SafetensorsFile::open checks every length, offset,
// shape and dtype before anything is read or allocated, and every error names
// the file and the tensor or key at fault. Reading maps the file (read-only,
// MAP_PRIVATE), so opening a multi-GB checkpoint costs nothing until a tensor is
// loaded. Writing goes to a temporary file in the same directory, is fsync'ed
// and renamed over the target, so a crash never leaves a half-written file.
//
// Supported dtypes: F32, BF16, F16, I32, I64, U8 (el::DType). Other dtypes the
// format knows (F64, I8, BOOL, F8_E4M3, ...) are reported as unsupported by name.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/mapped_file.h"

namespace el::io {

// The header may not exceed this many bytes (the reference implementation uses
// the same 100 MB cap); a larger length field means a corrupt or hostile file.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// "F32" for DType::f32, ... (the names the format uses).
const char* safetensors_dtype_name(DType t);
// Inverse of safetensors_dtype_name; nullopt for anything else.
std::optional<DType> safetensors_dtype_from_name(std::string_view name);

class SafetensorsFile {
 public:
  struct TensorInfo {
    std::string name;
    DType dtype = DType::f32;
    Shape shape;
    uint64_t begin = 0;  // byte range in the data buffer, [begin, end)
    uint64_t end = 0;
  };

  // Maps `path` and validates the whole header (see file comment). Errors:
  // missing/unreadable file, truncated file, header length past the end of the
  // file or over kSafetensorsMaxHeaderBytes, JSON syntax errors, missing or
  // ill-typed fields, unknown/unsupported dtypes, negative or overflowing
  // dimensions, byte sizes that disagree with shape x dtype, begin > end,
  // ranges past the end of the data, overlapping ranges, duplicate names,
  // non-string metadata values.
  static Result<SafetensorsFile> open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();  // unmaps the file

  const std::string& path() const { return path_; }
  // Tensor names in the order the header lists them.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(std::string_view name) const { return infos_.find(name) != infos_.end(); }
  // Error if absent (names the file and the closest existing name).
  Result<TensorInfo> info(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A new contiguous tensor with the file's dtype and shape on `device`.
  Result<Tensor> load(std::string_view name, Device device = Device::cpu()) const;
  // Copies the tensor into an existing contiguous `dst` (any device) whose shape
  // must equal the file's; the dtype is converted if it differs (e.g. a BF16
  // checkpoint into F32 parameters). The error names the tensor, the expected
  // (dst) and the found (file) shape.
  Status load_into(std::string_view name, Tensor& dst) const;
  // The tensor's raw little-endian bytes inside the mapping (end - begin of
  // them); valid while this object lives. `info` must come from this file.
  const void* data_ptr(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  Error tensor_error(std::string_view name, std::string what, std::string hint = {}) const;

  std::string path_;
  MappedFile map_;          // whole file
  size_t data_start_ = 0;   // 8 + header length
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo, std::less<>> infos_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (each in its own dtype, any device, contiguous) in the given
// order with sequential offsets, plus `metadata` under "__metadata__". The
// header is padded with spaces so the data buffer starts 8-byte aligned, which
// makes our output byte-identical to the Python reference for the same input.
// Errors: empty or duplicate names, the reserved name "__metadata__", undefined
// or non-contiguous tensors, I/O failures (the target is then left untouched).
Status save_safetensors(const std::string& path,
                        const std::vector<std::pair<std::string, Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace el::io
