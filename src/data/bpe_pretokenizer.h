// bpe_pretokenizer.h — the text-level pieces of Hugging Face's byte-level BPE
// tokenizers: UTF-8 checking and repair, NFC, the pre-tokenizer regex (PCRE2
// standing in for Hugging Face's Oniguruma) and the GPT-2 byte <-> character
// table. BpeTokenizer (bpe_tokenizer.h) composes them; they are separate so
// the tests can compare each against the reference library on its own.
//
// PCRE2 and utf8proc are optional build dependencies (CMake defines
// EL_HAVE_PCRE2 / EL_HAVE_UTF8PROC for el_data when found). Without them the
// UTF-8 and byte-table helpers still work; Regex::compile and nfc() return an
// error naming the missing package.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace el::data::bpe {

// Empty when tokenizer.json support is built in; otherwise what is missing,
// e.g. "tokenizer.json support not built (needs libpcre2-dev and
// libutf8proc-dev: run scripts/setup.sh, then reconfigure CMake)".
std::string support_missing();

// ---- UTF-8

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values
// above U+10FFFF).
bool is_valid_utf8(std::string_view s);

// `s` with every ill-formed sequence replaced by U+FFFD, one replacement per
// maximal ill-formed subpart (the Unicode/WHATWG rule that Python's
// errors="replace" and Rust's from_utf8_lossy follow).
std::string repair_utf8(std::string_view s);

// Decodes the code point starting at s[i] of well-formed UTF-8; returns its
// length in bytes (1..4). Precondition: is_valid_utf8(s) and i < s.size().
int decode_utf8(std::string_view s, size_t i, char32_t* cp);
// Appends the UTF-8 form of a code point (<= U+10FFFF, not a surrogate).
void append_utf8(std::string& out, char32_t cp);

// Unicode White_Space (what Rust's regex \s matches; HF uses it to strip
// around lstrip/rstrip added tokens).
bool is_unicode_space(char32_t cp);
// Rust regex's \w, approximately: letters, marks, decimal and letter numbers,
// connector punctuation, ZWNJ/ZWJ (HF's single_word test). Needs utf8proc for
// anything beyond ASCII; without it non-ASCII counts as a word character.
bool is_word_char(char32_t cp);

// ---- NFC

// Canonical composition (Unicode NFC) of well-formed UTF-8, NUL bytes kept.
// utf8proc 2.8 has Unicode 15; tokenizers' NFC tables are older: over every
// code point and every canonical decomposition, the one difference found is
// U+11935 U+11930 (Dives Akuru, Unicode 13), which only utf8proc composes.
Result<std::string> nfc(std::string_view s);

// ---- the pre-tokenizer regex

// Hugging Face compiles the pre-tokenizer patterns with Oniguruma (Ruby
// syntax). onig_to_pcre2 rewrites the few constructs whose meaning differs
// in PCRE2 (UTF + UCP + MULTILINE, newline LF), so that matching agrees:
//   \s \S    Oniguruma: U+0009..U+000D, U+0085, \p{Z}; PCRE2's \s lacks U+0085 and
//            has U+180E                                       -> [\x{9}-\x{d}\x{85}\p{Z}] ...
//   \v       Oniguruma: vertical tab only                     -> \x{b}
//   \w \W    Oniguruma: Alphabetic|M|Nd|Pc + ²³¹¼½¾           -> [\p{Alphabetic}\p{M}...] ...
//   \b \B    word boundaries over that \w                     -> lookarounds
//   \h \H    Oniguruma: hex digit (PCRE2: horizontal space)   -> [0-9a-fA-F] ...
//   \uHHHH   Ruby-syntax escape                                -> \x{HHHH}
//   (?m)     Ruby's "dot matches newline"                      -> (?s)
//   ^ $      always line anchors in Ruby syntax                -> PCRE2_MULTILINE
// Constructs with no safe rewrite are rejected with an error naming them:
// \S \W \H inside a character class, class intersection (&&), nested classes,
// the absent operator (?~...), and inline options other than i, m, x.
// Checked over every code point against the Oniguruma inside tokenizers 0.23:
// \s, \w, \d, \p{L}, \p{N} and the case folding of (?i:'s|'t|...) agree
// except for characters newer than PCRE2's tables (Debian 12's PCRE2 10.42
// has Unicode 14, that Oniguruma Unicode 16: 9,272 letters and 120 numbers,
// e.g. CJK Extension H, are not \p{L}/\p{N} here).
Result<std::string> onig_to_pcre2(std::string_view pattern);

// The Unicode version of PCRE2's character tables ("14.0.0"); empty without PCRE2.
std::string regex_unicode_version();

// A compiled pre-tokenizer pattern (PCRE2, JIT when available). Immutable and
// shareable: split() may run on several threads at once.
class Regex {
 public:
  // `pattern` in Oniguruma syntax as tokenizer.json holds it; `literal`
  // matches the string itself (the Split pre-tokenizer's {"String": ...}).
  // Errors carry PCRE2's message and the offset in the pattern.
  static Result<Regex> compile(std::string_view pattern, bool literal = false);

  Regex();
  Regex(const Regex&);
  Regex& operator=(const Regex&);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // HF's Split(behavior = Isolated): the matches and the text between them,
  // in order, empty pieces dropped. Iterates matches the way HF's Oniguruma
  // binding does (an empty match right after a match is skipped and the
  // search moves one character on). Precondition: `text` is well-formed UTF-8.
  // Should PCRE2 hit a resource limit, the unsearched rest is one piece.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

// The GPT-2 pattern that ByteLevel(use_regex = true) applies.
extern const char* const kGpt2Pattern;

// ---- the byte-level alphabet

// GPT-2's reversible byte -> character map: printable bytes stand for
// themselves, the other 68 become U+0100.. . byte_char(b) is the UTF-8 of
// that character.
const std::string& byte_char(uint8_t b);
// The byte a character stands for, or -1 when it is not in the alphabet.
int char_byte(char32_t cp);

}  // namespace el::data::bpe
