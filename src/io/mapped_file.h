// mapped_file.h — a whole file mapped read-only into memory.
//
// Token shards and safetensors checkpoints are read through a mapping, so
// opening a multi-GB file costs nothing until its pages are touched. This is
// the one place that opens, stats and maps such files (and unmaps them).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"

namespace el::io {

// Read-only, MAP_PRIVATE mapping of a regular file. Move-only; unmaps on
// destruction. The file descriptor is closed as soon as the mapping exists.
class MappedFile {
 public:
  // Maps `path`; `what` names the kind of file in messages, e.g. with
  // what = "token shard": "x.bin: cannot open token shard: No such file or
  // directory". Errors: cannot open, cannot stat, not a regular file, cannot
  // mmap. An empty file is not an error: it maps to data() == nullptr,
  // size() == 0 (the caller's format check then rejects it).
  static Result<MappedFile> open(const std::string& path, std::string_view what);

  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const unsigned char* data() const { return static_cast<const unsigned char*>(map_); }
  size_t size() const { return size_; }

 private:
  void unmap();

  void* map_ = nullptr;
  size_t size_ = 0;
};

}  // namespace el::io
