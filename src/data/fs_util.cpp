// fs_util.cpp — atomic writes and whole-file reads.
#include "data/fs_util.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace el::data {

Status write_file_atomic(const std::string& path, std::initializer_list<ByteSpan> parts) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(getpid()));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr)
    return make_error(fmt::format("cannot create file: {}", std::strerror(errno)), tmp,
                      "check that the directory exists and is writable");
  for (const ByteSpan& part : parts) {
    if (part.size > 0 && std::fwrite(part.data, 1, part.size, f) != part.size) {
      const int err = errno;
      std::fclose(f);
      std::remove(tmp.c_str());
      return make_error(fmt::format("write failed: {}", std::strerror(err)), tmp,
                        "is the disk full?");
    }
  }
  if (std::fclose(f) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return make_error(fmt::format("close failed: {}", std::strerror(err)), tmp, "is the disk full?");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return make_error(fmt::format("cannot rename {} into place: {}", tmp, std::strerror(err)), path);
  }
  return Status::Ok();
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(fmt::format("cannot open file: {}", std::strerror(errno)), path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error("read error", path);
  return ss.str();
}

}  // namespace el::data
