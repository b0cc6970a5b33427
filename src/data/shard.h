// shard.h — token shards: llm.c's .bin format, written atomically, read by mmap.
//
// A shard is a 1024-byte header of 256 little-endian int32 followed by the
// tokens (docs/DATA.md has the byte table):
//   header[0] = 20240520 (magic), header[1] = version (1: uint16 tokens,
//   2: uint32 tokens), header[2] = number of tokens, header[3] = vocab size
//   (0 = unknown; our addition, llm.c ignores it), header[4..255] = 0.
// We keep llm.c's layout so its loaders (and nanoGPT-style np.memmap readers)
// read our shards unchanged, and we can read theirs.
//
// TokenShard validates everything on open (sizes, magic, version, every token
// id) so the training loop can index it without checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"

namespace el::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersionU16 = 1;  // tokens stored as uint16
inline constexpr int32_t kShardVersionU32 = 2;  // tokens stored as uint32
// llm.c's Llama-3 shards (dev/data/data_common.py) use another magic and
// version for uint32 tokens; we read them too but never write them.
inline constexpr int32_t kShardMagicLlama3 = 20240801;
inline constexpr int32_t kShardVersionLlama3 = 7;
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);  // 1024
// header[2] is an int32, as in llm.c.
inline constexpr size_t kShardMaxTokens = 0x7fffffff;

// Writes `tokens` as a shard at `path` (a temp file in the same directory,
// then rename, so a crash never leaves a half-written shard under the name).
// uint16 storage when vocab_size <= 65536, else uint32; vocab_size = 0 means
// unknown (width then follows the largest token). Errors: a token >= vocab_size
// (names its index), more than kShardMaxTokens tokens, an I/O failure (names
// the path).
Status write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int vocab_size);

// A read-only, memory-mapped, validated shard. Move-only; unmaps on destruction.
class TokenShard {
 public:
  // Maps `path` and validates it: file shorter than the header, bad magic
  // (found vs expected), unknown version, token count inconsistent with the
  // file size (expected vs actual bytes), a header vocab larger than
  // max_vocab, and a scan of every token: each must be < max_vocab and < the
  // header vocab (when non-zero); the first offending index and id are named.
  // max_vocab <= 0 skips the model-side bound (for inspection tools).
  static Result<TokenShard> open(const std::string& path, int max_vocab);

  TokenShard() = default;
  TokenShard(TokenShard&& o) noexcept;
  TokenShard& operator=(TokenShard&& o) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  size_t size() const { return num_tokens_; }
  uint32_t operator[](size_t i) const {
    return token_bytes_ == 2 ? reinterpret_cast<const uint16_t*>(tokens_)[i]
                             : reinterpret_cast<const uint32_t*>(tokens_)[i];
  }
  // Copies tokens [begin, begin + n) into out as int32 (the model's id type).
  // The range must lie inside the shard (EL_ENSURE: a caller bug).
  void copy_to(size_t begin, size_t n, int32_t* out) const;

  int vocab_size() const { return vocab_size_; }  // header[3]; 0 = unknown
  int version() const { return version_; }
  int token_bytes() const { return token_bytes_; }
  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  io::MappedFile map_;  // whole file
  const unsigned char* tokens_ = nullptr;  // map_ + kShardHeaderBytes
  size_t num_tokens_ = 0;
  int version_ = 0;
  int token_bytes_ = 2;
  int vocab_size_ = 0;
};

}  // namespace el::data
