// file_util.cpp — file reads with POSIX calls, so errno (and the reason in the
// message) is the one of the call that failed.
#include "io/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace el::io {
namespace {

// Opens `path` read-only; on failure returns -1 with the Error in `err`.
int open_for_reading(const std::string& path, Error& err) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) err = make_error(fmt::format("cannot open file: {}", std::strerror(errno)), path);
  return fd;
}

// Reads `fd` to its end, chunk by chunk; closes it in every case.
Status drain(int fd, const std::string& path,
             const std::function<void(std::string_view)>& chunk) {
  std::vector<char> buf(size_t{1} << 16);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return make_error(fmt::format("read error: {}", std::strerror(err)), path);
    }
    chunk(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  return Status::Ok();
}

}  // namespace

Status read_file_chunks(const std::string& path,
                        const std::function<void(std::string_view chunk)>& chunk) {
  Error err;
  const int fd = open_for_reading(path, err);
  if (fd < 0) return err;
  return drain(fd, path, chunk);
}

Result<std::string> read_file(const std::string& path) {
  Error err;
  const int fd = open_for_reading(path, err);
  if (fd < 0) return err;
  std::string out;
  // The size is only a capacity hint (the file may change, or be a pipe):
  // drain() reads to the end either way.
  struct stat sb {};
  if (::fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0)
    out.reserve(static_cast<size_t>(sb.st_size));
  EL_TRY(drain(fd, path, [&](std::string_view c) { out.append(c); }));
  return out;
}

}  // namespace el::io
