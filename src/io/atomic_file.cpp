#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace el::io {

Status write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(fmt::format("write failed: {}", std::strerror(errno)), path);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status write_file_atomic_with(const std::string& path, const std::function<Status(int fd)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / (std::string(".").append(target.filename().string()).append(".tmp.XXXXXX"))).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    return make_error(fmt::format("cannot create a temporary file in '{}': {}", dir.string(),
                                  std::strerror(errno)),
                      path, "check that the directory exists and is writable");
  }
  Status st = write(fd);
  if (st.ok() && ::fsync(fd) != 0) {
    st = make_error(fmt::format("fsync failed: {}", std::strerror(errno)), path);
  }
  if (::close(fd) != 0 && st.ok()) {
    st = make_error(fmt::format("close failed: {}", std::strerror(errno)), path);
  }
  // mkstemp creates 0600; results and checkpoints should be readable like any file.
  if (st.ok()) ::chmod(tmpl.c_str(), 0644);
  if (st.ok() && ::rename(tmpl.c_str(), path.c_str()) != 0) {
    st = make_error(fmt::format("rename of the temporary file failed: {}", std::strerror(errno)), path);
  }
  if (!st.ok()) ::unlink(tmpl.c_str());
  return st;
}

Status write_file_atomic(const std::string& path, std::string_view content) {
  return write_file_atomic_with(path, [&](int fd) { return write_all(fd, content.data(), content.size(), path); });
}

}  // namespace el::io
