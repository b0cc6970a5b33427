// shard.cpp — writing and mapping llm.c-format token shards.
#include "data/shard.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "io/atomic_file.h"

namespace el::data {

// The format is little-endian and we write/read it with memcpy; a big-endian
// port would need byte swaps here and nowhere else.
static_assert(std::endian::native == std::endian::little, "shard I/O assumes little-endian");

Status write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int vocab_size) {
  if (vocab_size < 0) return make_error(fmt::format("vocab size {} is negative", vocab_size), path);
  if (tokens.size() > kShardMaxTokens)
    return make_error(fmt::format("{} tokens do not fit one shard (max {}, header[2] is int32)",
                                  tokens.size(), kShardMaxTokens),
                      path, "split the tokens over several shards");
  uint32_t max_token = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (vocab_size > 0 && tokens[i] >= static_cast<uint32_t>(vocab_size))
      return make_error(fmt::format("token {} at index {} is outside the vocab (size {})",
                                    tokens[i], i, vocab_size),
                        path);
    max_token = std::max(max_token, tokens[i]);
  }
  const bool u16 = vocab_size > 0 ? vocab_size <= 65536 : max_token <= 0xffff;

  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = u16 ? kShardVersionU16 : kShardVersionU32;
  header[2] = static_cast<int32_t>(tokens.size());
  header[3] = vocab_size;

  std::string body;
  if (u16) {
    body.resize(tokens.size() * 2);
    auto* out = reinterpret_cast<uint16_t*>(body.data());
    for (size_t i = 0; i < tokens.size(); ++i) out[i] = static_cast<uint16_t>(tokens[i]);
  }
  const void* data = u16 ? static_cast<const void*>(body.data()) : tokens.data();
  const size_t data_bytes = tokens.size() * (u16 ? 2 : 4);
  return io::write_file_atomic_with(path, [&](int fd) -> Status {
    EL_TRY(io::write_all(fd, header, kShardHeaderBytes, path));
    return io::write_all(fd, data, data_bytes, path);
  });
}

// ---- TokenShard

TokenShard::TokenShard(TokenShard&& o) noexcept { *this = std::move(o); }

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    map_ = std::move(o.map_);
    tokens_ = std::exchange(o.tokens_, nullptr);
    num_tokens_ = std::exchange(o.num_tokens_, 0);
    version_ = o.version_;
    token_bytes_ = o.token_bytes_;
    vocab_size_ = o.vocab_size_;
  }
  return *this;
}

TokenShard::~TokenShard() { release(); }

void TokenShard::release() {
  map_ = io::MappedFile();
  tokens_ = nullptr;
  num_tokens_ = 0;
}

void TokenShard::copy_to(size_t begin, size_t n, int32_t* out) const {
  EL_ENSURE(begin <= num_tokens_ && n <= num_tokens_ - begin,
            "shard {}: range [{}, {}) outside {} tokens", path_, begin, begin + n, num_tokens_);
  if (token_bytes_ == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(tokens_) + begin;
    for (size_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const auto* p = reinterpret_cast<const uint32_t*>(tokens_) + begin;
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(p[i]);
  }
}

namespace {

// Scans tokens for the first id >= bound; returns its index or n.
template <class T>
size_t first_at_or_above(const unsigned char* data, size_t n, uint64_t bound) {
  const T* p = reinterpret_cast<const T*>(data);
  for (size_t i = 0; i < n; ++i)
    if (p[i] >= bound) return i;
  return n;
}

}  // namespace

Result<TokenShard> TokenShard::open(const std::string& path, int max_vocab) {
  EL_TRY_ASSIGN(io::MappedFile map, io::MappedFile::open(path, "token shard"));
  const size_t file_bytes = map.size();
  if (file_bytes < kShardHeaderBytes)
    return make_error(fmt::format("file is {} bytes, shorter than the {}-byte shard header",
                                  file_bytes, kShardHeaderBytes),
                      path, "not a token shard, or a truncated one; re-run `prepare`");

  TokenShard shard;
  shard.path_ = path;
  shard.map_ = std::move(map);

  int32_t header[kShardHeaderInts];
  std::memcpy(header, shard.map_.data(), kShardHeaderBytes);
  const bool llama3 = header[0] == kShardMagicLlama3;
  if (header[0] != kShardMagic && !llama3)
    return make_error(fmt::format("bad magic number {} (expected {})", header[0], kShardMagic),
                      path, "not an llm.c/EfficientLLM token shard");
  if (llama3 && header[1] != kShardVersionLlama3)
    return make_error(fmt::format("unknown shard version {} for llm.c Llama-3 magic {} (expected {})",
                                  header[1], kShardMagicLlama3, kShardVersionLlama3),
                      path);
  if (!llama3 && header[1] != kShardVersionU16 && header[1] != kShardVersionU32)
    return make_error(fmt::format("unknown shard version {} (expected {} for uint16 tokens or {} "
                                  "for uint32 tokens)",
                                  header[1], kShardVersionU16, kShardVersionU32),
                      path);
  if (header[2] < 0)
    return make_error(fmt::format("negative token count {} in header", header[2]), path);
  if (header[3] < 0)
    return make_error(fmt::format("negative vocab size {} in header", header[3]), path);
  shard.version_ = header[1];
  shard.token_bytes_ = !llama3 && header[1] == kShardVersionU16 ? 2 : 4;
  shard.num_tokens_ = static_cast<size_t>(header[2]);
  shard.vocab_size_ = header[3];
  const size_t expected = kShardHeaderBytes + shard.num_tokens_ * shard.token_bytes_;
  if (file_bytes != expected)
    return make_error(
        fmt::format("header says {} tokens of {} bytes, so the file should be {} bytes, but it is "
                    "{} bytes ({})",
                    shard.num_tokens_, shard.token_bytes_, expected, file_bytes,
                    file_bytes < expected ? "truncated" : "trailing data"),
        path, "the shard is damaged; re-run `prepare`");
  if (max_vocab > 0 && shard.vocab_size_ > max_vocab)
    return make_error(fmt::format("shard was written for a vocab of {} but the model's vocab is {}",
                                  shard.vocab_size_, max_vocab),
                      path, "prepare the data with the model's tokenizer");
  shard.tokens_ = shard.map_.data() + kShardHeaderBytes;

  // One pass over every token now, so indexing later needs no checks.
  uint64_t bound = UINT64_MAX;
  if (max_vocab > 0) bound = static_cast<uint64_t>(max_vocab);
  if (shard.vocab_size_ > 0) bound = std::min<uint64_t>(bound, shard.vocab_size_);
  if (bound != UINT64_MAX) {
    const size_t bad = shard.token_bytes_ == 2
                           ? first_at_or_above<uint16_t>(shard.tokens_, shard.num_tokens_, bound)
                           : first_at_or_above<uint32_t>(shard.tokens_, shard.num_tokens_, bound);
    if (bad < shard.num_tokens_)
      return make_error(
          fmt::format("token id {} at index {} is out of range (must be < {}; header vocab {}, "
                      "model vocab {})",
                      shard[bad], bad, bound, shard.vocab_size_, max_vocab),
          path, "the shard was made with another tokenizer, or is corrupt");
  }
  return shard;
}

}  // namespace el::data
