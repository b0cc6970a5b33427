// sha256.h — SHA-256 of a byte string or a file, as lowercase hex.
//
// The dataset manifest records the tokenizer model's SHA-256 so a run can tell
// that the shards were made with the tokenizer it is about to load; SHA-256
// (rather than a cheaper hash) lets a user check it with `sha256sum`.
// The digest itself comes from OpenSSL's libcrypto (EVP interface).
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace el::data {

// SHA-256 of `bytes`, 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

// SHA-256 of a file's contents, read in chunks; an Error names the file if it
// cannot be read.
Result<std::string> sha256_file(const std::string& path);

}  // namespace el::data
