// fs_util.h — small file helpers shared by the data layer (internal).
//
// Every output file of the data layer (shards, manifest, tokenizer model) is
// written through write_file_atomic so that a crash or a full disk never
// leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>

#include "core/error.h"

namespace el::data {

struct ByteSpan {
  const void* data;
  size_t size;
};

// Writes the concatenation of `parts` to "<path>.tmp.<pid>" in the same
// directory, fsyncs nothing (speed over durability: outputs are re-creatable)
// and renames it over `path`. Errors name the path and the OS reason.
Status write_file_atomic(const std::string& path, std::initializer_list<ByteSpan> parts);
inline Status write_file_atomic(const std::string& path, const std::string& text) {
  return write_file_atomic(path, {ByteSpan{text.data(), text.size()}});
}

// Reads a whole file; Error names it.
Result<std::string> read_file(const std::string& path);

}  // namespace el::data
