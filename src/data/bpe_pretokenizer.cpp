// bpe_pretokenizer.cpp — UTF-8 repair, NFC (utf8proc), the Oniguruma -> PCRE2
// pattern rewrite, Split(Isolated) matching and the GPT-2 byte alphabet.
#include "data/bpe_pretokenizer.h"

#include <cstdlib>
#include <cstring>

#if defined(EL_HAVE_PCRE2)
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif
#if defined(EL_HAVE_UTF8PROC)
#include <utf8proc.h>
#endif

namespace el::data::bpe {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string support_missing() {
#if defined(EL_HAVE_PCRE2) && defined(EL_HAVE_UTF8PROC)
  return {};
#else
  return "tokenizer.json support not built (needs libpcre2-dev and libutf8proc-dev: run "
         "scripts/setup.sh, then reconfigure CMake)";
#endif
}

// ---- UTF-8

namespace {

// Length of the well-formed sequence at s[i] (1..4), or -k where k >= 1 is the
// length of the maximal ill-formed subpart starting there (Unicode Table 3-7).
int sequence_at(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return 1;
  int need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;  // continuation byte, C0/C1 overlong lead, F5..FF
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return -k;
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (c < lo || c > hi) return -k;
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = sequence_at(s, i);
    if (n < 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const int n = sequence_at(s, i);
    if (n > 0) {
      out.append(s.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += static_cast<size_t>(-n);
    }
  }
  return out;
}

int decode_utf8(std::string_view s, size_t i, char32_t* cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  if (b < 0xE0) {
    *cp = (static_cast<char32_t>(b & 0x1F) << 6) | cont(1);
    return 2;
  }
  if (b < 0xF0) {
    *cp = (static_cast<char32_t>(b & 0x0F) << 12) | (cont(1) << 6) | cont(2);
    return 3;
  }
  *cp = (static_cast<char32_t>(b & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
  return 4;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_unicode_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (c == 0x200C || c == 0x200D) return true;  // Join_Control
#if defined(EL_HAVE_UTF8PROC)
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
#else
  return true;
#endif
}

// ---- NFC

Result<std::string> nfc(std::string_view s) {
  bool ascii = true;
  for (char ch : s) ascii = ascii && static_cast<unsigned char>(ch) < 0x80;
  if (ascii) return std::string(s);  // ASCII is its own NFC
#if defined(EL_HAVE_UTF8PROC)
  utf8proc_uint8_t* out = nullptr;
  // A length rather than UTF8PROC_NULLTERM, so NUL characters survive.
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                   &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return make_error(fmt::format("NFC normalization failed: {}", utf8proc_errmsg(n)));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
#else
  return make_error(support_missing());
#endif
}

// ---- Oniguruma -> PCRE2

namespace {

// Oniguruma's \w and \s as PCRE2 class bodies (measured over every code
// point against tokenizers' Oniguruma). Its \w is Alphabetic, marks, decimal
// digits, connector punctuation and six Latin-1 numbers (²³¹¼½¾); PCRE2's \w
// is letters, numbers and '_'. PCRE2's \s would add U+180E (it reuses its \h
// list) and miss U+0085.
constexpr const char* kOnigWord = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{b2}\x{b3}\x{b9}\x{bc}-\x{be})";
constexpr const char* kOnigSpace = R"(\x{9}-\x{d}\x{85}\p{Z})";

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

}  // namespace

Result<std::string> onig_to_pcre2(std::string_view p) {
  const std::string word_class = fmt::format("[{}]", kOnigWord);
  const std::string space_class = fmt::format("[{}]", kOnigSpace);
  auto unsupported = [&](size_t at, std::string_view what) {
    return make_error(fmt::format("pre-tokenizer regex: {} at offset {} is not supported", what, at), "",
                      "only Oniguruma constructs with a PCRE2 equivalent are accepted");
  };
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  size_t class_body = 0;  // offset of the first character inside the current class
  size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    const char next = i + 1 < p.size() ? p[i + 1] : '\0';
    if (c == '\\') {
      if (i + 1 >= p.size()) return unsupported(i, "a trailing backslash");
      switch (next) {
        case 's': out += in_class ? std::string(kOnigSpace) : space_class; break;
        case 'S':
          if (in_class) return unsupported(i, "\\S inside a character class");
          out += fmt::format("[^{}]", kOnigSpace);
          break;
        case 'v': out += "\\x{b}"; break;  // Oniguruma: vertical tab only (PCRE2: all vertical space)
        case 'w': out += in_class ? std::string(kOnigWord) : word_class; break;
        case 'W':
          if (in_class) return unsupported(i, "\\W inside a character class");
          out += fmt::format("[^{}]", kOnigWord);
          break;
        case 'h': out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"; break;
        case 'H':
          if (in_class) return unsupported(i, "\\H inside a character class");
          out += "[^0-9a-fA-F]";
          break;
        case 'b':
          if (in_class) {
            out += "\\b";  // backspace in both
          } else {
            out += fmt::format("(?:(?<={0})(?!{0})|(?<!{0})(?={0}))", word_class);
          }
          break;
        case 'B':
          if (in_class) return unsupported(i, "\\B inside a character class");
          out += fmt::format("(?:(?<={0})(?={0})|(?<!{0})(?!{0}))", word_class);
          break;
        case 'u': {
          if (i + 6 > p.size() || !is_hex(p[i + 2]) || !is_hex(p[i + 3]) || !is_hex(p[i + 4]) ||
              !is_hex(p[i + 5]))
            return unsupported(i, "\\u without four hex digits");
          out += fmt::format("\\x{{{}}}", p.substr(i + 2, 4));
          i += 6;
          continue;
        }
        case 'p':
        case 'P': {
          const size_t close = p.find('}', i + 2);
          if (i + 2 < p.size() && p[i + 2] == '{' && close != std::string_view::npos) {
            out.append(p.substr(i, close + 1 - i));
            i = close + 1;
            continue;
          }
          out.append(p.substr(i, 2));
          break;
        }
        case 'Q': return unsupported(i, "\\Q...\\E quoting");
        default: out.append(p.substr(i, 2)); break;
      }
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (next != ':') return unsupported(i, "a nested character class");
        const size_t close = p.find(":]", i + 2);
        if (close == std::string_view::npos) return unsupported(i, "an unterminated POSIX class");
        out.append(p.substr(i, close + 2 - i));
        i = close + 2;
        continue;
      }
      if (c == '&' && next == '&') return unsupported(i, "character class intersection (&&)");
      if (c == ']' && i != class_body) in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      class_body = i;  // a ']' here is a literal
      continue;
    }
    if (c == '{' && next == ',') {  // Ruby's {,n} is {0,n}; PCRE2 10.42 reads it as text
      size_t j = i + 2;
      while (j < p.size() && p[j] >= '0' && p[j] <= '9') ++j;
      if (j > i + 2 && j < p.size() && p[j] == '}') {
        out += "{0";
        ++i;
        continue;
      }
    }
    if (c == '(' && next == '?') {
      size_t j = i + 2;
      if (j < p.size() && p[j] == '~') return unsupported(i, "the absent operator (?~...)");
      size_t k = j;
      while (k < p.size() && ((p[k] >= 'a' && p[k] <= 'z') || (p[k] >= 'A' && p[k] <= 'Z') || p[k] == '-')) ++k;
      if (k > j && k < p.size() && (p[k] == ':' || p[k] == ')')) {
        std::string flags;
        for (size_t f = j; f < k; ++f) {
          const char o = p[f];
          if (o == 'm') {
            flags += 's';  // Ruby's (?m) is "dot matches newline"
          } else if (o == 'i' || o == 'x' || o == '-') {
            flags += o;
          } else {
            return unsupported(i, fmt::format("the inline option '{}'", o));
          }
        }
        out += "(?" + flags + p[k];
        i = k + 1;
        continue;
      }
      out += "(?";
      i += 2;
      continue;
    }
    out += c;
    ++i;
  }
  if (in_class) return unsupported(p.size(), "an unterminated character class");
  return out;
}

std::string regex_unicode_version() {
#if defined(EL_HAVE_PCRE2)
  char buf[32] = {};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf);
  return buf;
#else
  return {};
#endif
}

// ---- Regex

#if defined(EL_HAVE_PCRE2)
struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};
#else
struct Regex::Code {};
#endif

Regex::Regex() = default;
Regex::Regex(const Regex&) = default;
Regex& Regex::operator=(const Regex&) = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

Result<Regex> Regex::compile(std::string_view pattern, bool literal) {
#if defined(EL_HAVE_PCRE2)
  std::string translated;
  if (literal) {
    translated = std::string(pattern);
  } else {
    EL_TRY_ASSIGN(translated, onig_to_pcre2(pattern));
  }
  pcre2_compile_context* ctx = pcre2_compile_context_create(nullptr);
  if (ctx == nullptr) return make_error("out of memory compiling a regex");
  pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
  pcre2_set_bsr(ctx, PCRE2_BSR_UNICODE);
  // PCRE2_LITERAL admits no UCP or MULTILINE (they mean nothing to a literal).
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   options, &err, &err_offset, ctx);
  pcre2_compile_context_free(ctx);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return make_error(fmt::format("pre-tokenizer regex does not compile: {} (at offset {} of the PCRE2 form "
                                  "'{}')",
                                  reinterpret_cast<const char*>(msg), err_offset, translated));
  }
  auto c = std::make_shared<Code>();
  c->code = code;
  c->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  Regex r;
  r.code_ = std::move(c);
  r.pattern_ = std::string(pattern);
  return r;
#else
  (void)pattern;
  (void)literal;
  return make_error(support_missing());
#endif
}

void Regex::split(std::string_view text, std::vector<std::string_view>& pieces) const {
#if defined(EL_HAVE_PCRE2)
  EL_ENSURE(code_ != nullptr, "split() on an uncompiled Regex");
  if (text.empty()) return;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  EL_ENSURE(md != nullptr, "out of memory for PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t prev = 0;           // end of the last piece emitted
  size_t last_end = 0;       // where the next search starts
  bool have_last = false;    // an earlier match ended at last_match_end
  size_t last_match_end = 0;
  auto emit = [&](size_t a, size_t b) {
    if (b > a) pieces.push_back(text.substr(a, b - a));
  };
  while (last_end <= n) {
    int rc = pcre2_match(code_->code, subject, n, last_end, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && code_->jit)  // e.g. the JIT stack: retry interpreted
      rc = pcre2_match(code_->code, subject, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    if (rc < 0) break;  // no match (or a resource limit): the rest is one piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = ov[1];
    if (s == e && have_last && last_match_end == e) {
      // An empty match right after the previous one: move one character on.
      if (last_end >= n) break;
      char32_t cp;
      last_end += static_cast<size_t>(decode_utf8(text, last_end, &cp));
      continue;
    }
    last_end = e;
    have_last = true;
    last_match_end = e;
    emit(prev, s);
    emit(s, e);
    prev = e;
  }
  emit(prev, n);
  pcre2_match_data_free(md);
#else
  (void)text;
  (void)pieces;
  EL_ENSURE(false, "{}", support_missing());
#endif
}

// ---- the byte-level alphabet

namespace {

// The alphabet is U+0021..U+00FF less U+007F..U+00A0 and U+00AD (printable
// bytes stand for themselves) plus U+0100..U+0143 for the other 68 bytes.
constexpr char32_t kAlphabetEnd = 0x100 + 68;

struct ByteTable {
  std::array<std::string, 256> to_char;
  std::array<int16_t, kAlphabetEnd> to_byte;
  ByteTable() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      append_utf8(to_char[b], cp);
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

}  // namespace

const std::string& byte_char(uint8_t b) { return byte_table().to_char[b]; }

int char_byte(char32_t c) { return c < kAlphabetEnd ? byte_table().to_byte[c] : -1; }

}  // namespace el::data::bpe
