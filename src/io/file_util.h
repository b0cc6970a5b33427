// file_util.h — reading files: whole, or streamed in chunks.
//
// The one file-reading path of the engine (configs, manifests, tokenizer
// models, plain-text corpora, hashing). Writing lives in io/atomic_file.h.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace el::io {

// The whole file as bytes. Errors name the path and the OS reason, e.g.
// "data/x.txt: cannot open file: No such file or directory".
Result<std::string> read_file(const std::string& path);

// Reads the file front to back and hands each chunk (at most 64 KiB, never
// empty) to `chunk`, so a large file costs one buffer. Errors as read_file.
Status read_file_chunks(const std::string& path,
                        const std::function<void(std::string_view chunk)>& chunk);

}  // namespace el::io
