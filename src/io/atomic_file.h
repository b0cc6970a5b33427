// atomic_file.h — write a whole file or nothing.
//
// Every output of EfficientLLM (results, checkpoints, shards, manifests) is
// written to a temporary file in the destination directory, flushed, fsynced
// and renamed over the destination, so a crash or Ctrl-C never leaves a
// half-written file behind.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace el::io {

// Writes `content` to `path` atomically.
Status write_file_atomic(const std::string& path, std::string_view content);

// Calls `write(fd)` on a temporary file next to `path`, then fsyncs and
// renames it to `path`; removes the temporary file if `write` fails.
Status write_file_atomic_with(const std::string& path,
                              const std::function<Status(int fd)>& write);

// write(2) until all bytes are written (retries EINTR and short writes).
Status write_all(int fd, const void* data, size_t bytes, const std::string& path);

}  // namespace el::io
