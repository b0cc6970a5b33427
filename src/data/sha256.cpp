// sha256.cpp — SHA-256 through OpenSSL's EVP digest interface; files are
// streamed in chunks (io::read_file_chunks), so a large file costs one buffer.
#include "data/sha256.h"

#include <openssl/evp.h>

#include <memory>

#include "io/file_util.h"

namespace el::data {
namespace {

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_MD_CTX, CtxFree>;

// A context initialised for SHA-256. Failure means libcrypto is broken or out
// of memory, not bad input, hence EL_ENSURE.
Ctx new_sha256_ctx() {
  Ctx ctx(EVP_MD_CTX_new());
  EL_ENSURE(ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
            "OpenSSL: cannot initialise a SHA-256 digest");
  return ctx;
}

void update(EVP_MD_CTX* ctx, const void* data, size_t n) {
  EL_ENSURE(EVP_DigestUpdate(ctx, data, n) == 1, "OpenSSL: SHA-256 update failed");
}

// Finishes the digest as 64 lowercase hex digits.
std::string finish_hex(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EL_ENSURE(EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32, "OpenSSL: SHA-256 final failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 0xf]);
  }
  return out;
}

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Ctx ctx = new_sha256_ctx();
  update(ctx.get(), bytes.data(), bytes.size());
  return finish_hex(ctx.get());
}

Result<std::string> sha256_file(const std::string& path) {
  Ctx ctx = new_sha256_ctx();
  const Status st = io::read_file_chunks(
      path, [&](std::string_view chunk) { update(ctx.get(), chunk.data(), chunk.size()); });
  if (!st.ok()) {
    Error e = st.error();
    e.what = "cannot hash file: " + e.what;
    return e;
  }
  return finish_hex(ctx.get());
}

}  // namespace el::data
