// sft_records.cpp — JSON Lines / JSON array readers for SFT records.
#include "data/sft_records.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

namespace el::data {
using nlohmann::json;

const char* sft_format_name(SftFormat f) {
  switch (f) {
    case SftFormat::auto_detect: return "auto";
    case SftFormat::alpaca: return "alpaca";
    case SftFormat::messages: return "messages";
    case SftFormat::openo1: return "openo1";
    case SftFormat::medical_o1: return "medical-o1";
  }
  return "?";
}

Result<SftFormat> parse_sft_format(std::string_view name) {
  for (SftFormat f : {SftFormat::auto_detect, SftFormat::alpaca, SftFormat::messages,
                      SftFormat::openo1, SftFormat::medical_o1})
    if (name == sft_format_name(f)) return f;
  if (name == "medical_o1") return SftFormat::medical_o1;
  return make_error(fmt::format("unknown SFT data format '{}'", name), "--format",
                    "use auto, alpaca, messages, openo1 or medical-o1");
}

const char* sft_role_name(SftRole r) {
  switch (r) {
    case SftRole::system: return "system";
    case SftRole::user: return "user";
    case SftRole::assistant: return "assistant";
  }
  return "?";
}

const char* bad_record_policy_name(BadRecordPolicy p) {
  return p == BadRecordPolicy::skip ? "skip" : "fail";
}

Result<BadRecordPolicy> parse_bad_record_policy(std::string_view name) {
  if (name == "skip") return BadRecordPolicy::skip;
  if (name == "fail") return BadRecordPolicy::fail;
  return make_error(fmt::format("unknown bad-record policy '{}'", name), "--on-bad-record",
                    "use skip or fail");
}

std::string SftReadReport::bad_summary() const {
  if (bad_records == 0) return {};
  std::string s = fmt::format("{} bad record(s) skipped", bad_records);
  for (size_t i = 0; i < first_bad.size(); ++i)
    s += fmt::format("{} {}: {}", i == 0 ? "; first:" : ";", first_bad[i].where,
                     first_bad[i].reason);
  return s;
}

std::string medical_o1_response(std::string_view complex_cot, std::string_view response) {
  return fmt::format("## Thinking\n\n{}\n\n## Final Response\n\n{}", complex_cot, response);
}

namespace {

// ---- byte source

// Buffered bytes of one file, with the current line number.
class ByteReader {
 public:
  explicit ByteReader(FILE* f) : f_(f) {}
  // Next byte, or -1 at end of file / read error (error() tells which).
  int get() {
    if (pos_ == len_ && !fill()) return -1;
    const int c = static_cast<unsigned char>(buf_[pos_++]);
    if (c == '\n') ++line_;
    return c;
  }
  // Next byte without consuming it (-1 at end).
  int peek() {
    if (pos_ == len_ && !fill()) return -1;
    return static_cast<unsigned char>(buf_[pos_]);
  }
  // Appends bytes up to (not including) the next '\n', which is consumed,
  // keeping at most `cap` bytes in out (*over set when more were seen).
  // False when the file ended before any byte or newline was read.
  bool read_line(std::string& out, size_t cap, bool* over) {
    bool any = false;
    for (;;) {
      if (pos_ == len_ && !fill()) return any;
      any = true;
      const char* start = buf_ + pos_;
      const auto* nl = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
      const size_t n = nl != nullptr ? static_cast<size_t>(nl - start) : len_ - pos_;
      if (!*over) {
        if (out.size() + n > cap) {
          *over = true;
          out.clear();
          out.shrink_to_fit();
        } else {
          out.append(start, n);
        }
      }
      pos_ += n;
      if (nl != nullptr) {
        ++pos_;
        ++line_;
        return true;
      }
    }
  }
  bool error() const { return std::ferror(f_) != 0; }
  int64_t line() const { return line_; }

 private:
  // Refills the buffer; false at end of file (or on a read error).
  bool fill() {
    len_ = std::fread(buf_, 1, sizeof(buf_), f_);
    pos_ = 0;
    return len_ > 0;
  }

  FILE* f_;
  char buf_[1 << 16];
  size_t pos_ = 0, len_ = 0;
  int64_t line_ = 1;
};

bool is_json_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// One record's bytes as cut from the file: at most `cap` bytes are stored;
// a longer record is consumed to its end and flagged.
struct RawRecord {
  std::string text;
  int64_t line = 0;
  bool too_long = false;
};

// Appends c unless the record is already over the cap.
inline void push_capped(RawRecord& r, int c, size_t cap) {
  if (r.too_long) return;
  if (r.text.size() >= cap) {
    r.too_long = true;
    r.text.clear();
    r.text.shrink_to_fit();
    return;
  }
  r.text.push_back(static_cast<char>(c));
}

// JSON Lines: the next non-blank line (trailing "\r" dropped); false at end.
// An over-long line counts as non-blank (its bytes were not kept to look at).
bool next_line(ByteReader& in, size_t cap, RawRecord& r) {
  for (;;) {
    r.text.clear();
    r.too_long = false;
    r.line = in.line();
    if (!in.read_line(r.text, cap, &r.too_long)) return false;
    if (r.too_long) return true;
    if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
    if (!std::all_of(r.text.begin(), r.text.end(), [](char c) { return is_json_space(c); }))
      return true;
  }
}

// A JSON array of records, cut into elements by tracking strings and nesting
// (each element is then parsed on its own). Structure errors (a missing
// comma, a truncated file) end the file: we cannot resynchronise.
class ArrayScanner {
 public:
  ArrayScanner(ByteReader& in, std::string path, size_t cap)
      : in_(in), path_(std::move(path)), cap_(cap) {}

  // Consumes the opening '['.
  Status open() {
    skip_space();
    if (in_.get() != '[') return structure_error("expected '[' to open the array");
    skip_space();
    if (in_.peek() == ']') {
      in_.get();
      done_ = true;
      return trailing();
    }
    return Status::Ok();
  }

  // The next element into r; *more = false (r untouched) after the last.
  Status next(RawRecord& r, bool* more) {
    *more = false;
    if (done_) return Status::Ok();
    r = RawRecord{};
    skip_space();
    r.line = in_.line();
    int depth = 0;
    bool in_string = false, escape = false;
    for (;;) {
      const int c = in_.peek();
      if (c < 0) return structure_error("the file ends inside the JSON array (truncated?)");
      if (in_string) {
        in_.get();
        push_capped(r, c, cap_);
        if (escape) escape = false;
        else if (c == '\\') escape = true;
        else if (c == '"') in_string = false;
        continue;
      }
      if (depth == 0 && (c == ',' || c == ']' || is_json_space(c)) && (r.text.size() > 0 || r.too_long))
        break;
      if (depth == 0 && (c == ',' || c == ']'))
        return structure_error("an empty element in the JSON array");
      in_.get();
      push_capped(r, c, cap_);
      if (c == '"') in_string = true;
      else if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (--depth < 0) return structure_error("unbalanced brackets in the JSON array");
        if (depth == 0) break;
      }
    }
    skip_space();
    const int sep = in_.get();
    if (sep == ']') {
      done_ = true;
      EL_TRY(trailing());
    } else if (sep != ',') {
      return structure_error(sep < 0 ? "the file ends inside the JSON array (truncated?)"
                                     : "expected ',' or ']' after an array element");
    }
    *more = true;
    return Status::Ok();
  }

 private:
  void skip_space() {
    while (is_json_space(in_.peek())) in_.get();
  }
  Status trailing() {
    skip_space();
    if (in_.peek() >= 0) return structure_error("text after the closing ']' of the JSON array");
    return Status::Ok();
  }
  Error structure_error(const std::string& what) const {
    return make_error(what, fmt::format("{}:{}", path_, in_.line()),
                      "a JSON array file must be one well-formed array of records");
  }

  ByteReader& in_;
  std::string path_;
  size_t cap_;
  bool done_ = false;
};

// ---- records -> conversations

// Why a record is bad; empty when it is good.
using Problem = std::string;

// "a number", "an array", "null": a value's type for messages.
std::string a_type(const json& j) {
  if (j.is_null()) return "null";
  if (j.is_array() || j.is_object()) return std::string("an ") + j.type_name();
  return std::string("a ") + j.type_name();
}

Problem get_string(const json& obj, const char* key, bool required_non_empty, std::string* out,
                   bool optional = false) {
  auto it = obj.find(key);
  if (it == obj.end() || (optional && it->is_null())) {
    if (optional) return {};
    return fmt::format("missing key '{}'", key);
  }
  if (!it->is_string())
    return fmt::format("key '{}' is {}, expected a string", key, a_type(*it));
  *out = it->get<std::string>();
  if (required_non_empty && out->empty()) return fmt::format("key '{}' is an empty string", key);
  return {};
}

// The shape a record's keys announce (auto_detect = none).
SftFormat detect(const json& obj) {
  if (obj.contains("messages")) return SftFormat::messages;
  if (obj.contains("Question") && obj.contains("Complex_CoT") && obj.contains("Response"))
    return SftFormat::medical_o1;
  if (obj.contains("instruction") && obj.contains("output"))
    return obj.contains("input") ? SftFormat::alpaca : SftFormat::openo1;
  return SftFormat::auto_detect;
}

std::string key_list(const json& obj) {
  std::string s;
  int n = 0;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (n == 8) return s + ", ...";
    s += fmt::format("{}'{}'", n++ == 0 ? "" : ", ", it.key());
  }
  return s.empty() ? "none" : s;
}

Problem to_conversation(const json& obj, SftFormat format, Conversation* conv) {
  conv->turns.clear();
  auto pair = [&](std::string user, std::string input, std::string assistant) {
    conv->turns.push_back({SftRole::user, std::move(user), std::move(input)});
    conv->turns.push_back({SftRole::assistant, std::move(assistant), {}});
  };
  std::string a, b, c;
  Problem p;
  switch (format) {
    case SftFormat::alpaca:
      if (!(p = get_string(obj, "instruction", true, &a)).empty()) return p;
      if (!(p = get_string(obj, "input", false, &b, /*optional=*/true)).empty()) return p;
      if (!(p = get_string(obj, "output", true, &c)).empty()) return p;
      pair(std::move(a), std::move(b), std::move(c));
      return {};
    case SftFormat::openo1:
      if (!(p = get_string(obj, "instruction", true, &a)).empty()) return p;
      if (!(p = get_string(obj, "output", true, &c)).empty()) return p;
      pair(std::move(a), {}, std::move(c));
      return {};
    case SftFormat::medical_o1:
      if (!(p = get_string(obj, "Question", true, &a)).empty()) return p;
      if (!(p = get_string(obj, "Complex_CoT", true, &b)).empty()) return p;
      if (!(p = get_string(obj, "Response", true, &c)).empty()) return p;
      pair(std::move(a), {}, medical_o1_response(b, c));
      return {};
    case SftFormat::messages: break;
    case SftFormat::auto_detect: return "internal: no format";
  }
  auto it = obj.find("messages");
  if (it == obj.end()) return "missing key 'messages'";
  if (!it->is_array())
    return fmt::format("key 'messages' is {}, expected an array", a_type(*it));
  if (it->empty()) return "key 'messages' is an empty array";
  bool answered = false;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object()) return fmt::format("messages[{}] is not an object", i);
    std::string role, content;
    const std::string at = fmt::format("messages[{}]: ", i);
    if (!(p = get_string(m, "role", true, &role)).empty()) return at + p;
    if (!(p = get_string(m, "content", false, &content)).empty()) return at + p;
    SftRole r;
    if (role == "system") r = SftRole::system;
    else if (role == "user") r = SftRole::user;
    else if (role == "assistant") r = SftRole::assistant;
    else return fmt::format("{}unknown role '{}' (expected system, user or assistant)", at, role);
    if (r == SftRole::system && i != 0) return at + "a system message can only come first";
    const bool first_turn = conv->turns.empty() ||
                            (conv->turns.size() == 1 && conv->turns[0].role == SftRole::system);
    if (first_turn && r == SftRole::assistant)
      return at + "the first non-system message must be from the user";
    if (r == SftRole::assistant && !content.empty()) answered = true;
    conv->turns.push_back({r, std::move(content), {}});
  }
  if (!answered) return "messages: no assistant message with non-empty content";
  return {};
}

std::string strip_json_prefix(const char* what) {
  // nlohmann prefixes "[json.exception.parse_error.101] "; the rest says
  // where in the record and what was expected.
  std::string s = what;
  if (s.rfind("[json.exception.", 0) == 0) {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

// Reads one file, delivering good records and accounting for bad ones.
class FileReader {
 public:
  FileReader(const std::string& path, size_t file_index, const SftReadOptions& o,
             const std::function<Status(SftRecord&&)>& fn, SftReadReport& rep, int64_t& index)
      : path_(path), file_index_(file_index), o_(o), fn_(fn), rep_(rep), index_(index),
        format_(o.format) {}

  // *stop = true once max_records good records were delivered.
  Status run(bool* stop) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path_.c_str(), "rb"), &std::fclose);
    if (!f) return make_error("cannot open the SFT data file", path_, "check the path");
    ByteReader in(f.get());
    const auto cap = static_cast<size_t>(o_.max_record_bytes);
    // A UTF-8 byte-order mark would make the first record invalid JSON.
    if (in.peek() == 0xEF) {
      in.get();
      if (in.get() != 0xBB || in.get() != 0xBF)
        return make_error("the file starts with invalid bytes", path_ + ":1");
    }
    while (is_json_space(in.peek())) in.get();
    const bool array = in.peek() == '[';
    RawRecord r;
    if (array) {
      ArrayScanner scan(in, path_, cap);
      EL_TRY(scan.open());
      for (;;) {
        bool more = false;
        EL_TRY(scan.next(r, &more));
        if (!more) break;
        EL_TRY(record(r, stop));
        if (*stop) return Status::Ok();
      }
    } else {
      // Lines are counted from the file start; skipped blank bytes above
      // were whitespace, and ByteReader already counted their newlines.
      while (next_line(in, cap, r)) {
        EL_TRY(record(r, stop));
        if (*stop) return Status::Ok();
      }
    }
    if (in.error()) return make_error("read error", path_);
    if (format_ == SftFormat::auto_detect && seen_ > 0)
      return make_error(
          fmt::format("no record matches a known SFT format; the first record's keys: {}",
                      first_keys_.empty() ? std::string("(not a JSON object)") : first_keys_),
          path_,
          "expected instruction+output (alpaca, openo1), messages, or Question+Complex_CoT+"
          "Response (medical-o1); set --format to read the records as one of them");
    return Status::Ok();
  }

  SftFormat format() const { return format_; }

 private:
  Status record(RawRecord& r, bool* stop) {
    const int64_t index = index_++;
    ++seen_;
    if (r.too_long)
      return bad(r, fmt::format("record longer than max_record_bytes ({} bytes)",
                                o_.max_record_bytes));
    json obj;
    try {
      obj = json::parse(r.text);
    } catch (const json::exception& e) {
      return bad(r, "invalid JSON: " + strip_json_prefix(e.what()));
    }
    if (!obj.is_object())
      return bad(r, fmt::format("expected a JSON object, found {}", a_type(obj)));
    if (format_ == SftFormat::auto_detect) {
      const SftFormat f = detect(obj);
      if (f == SftFormat::auto_detect) {
        if (first_keys_.empty()) first_keys_ = key_list(obj);
        // Under policy fail the first unrecognised record is the error; under
        // skip it counts as bad (run() fails if no record ever matches).
        return bad(r, fmt::format("keys {} match no known SFT format", key_list(obj)),
                   "expected instruction+output (alpaca, openo1), messages, or "
                   "Question+Complex_CoT+Response (medical-o1); or set --format");
      }
      format_ = f;
    }
    SftRecord rec;
    const Problem p = to_conversation(obj, format_, &rec.conversation);
    if (!p.empty()) return bad(r, fmt::format("{} ({} record)", p, sft_format_name(format_)));
    rec.index = index;
    rec.file_index = file_index_;
    rec.line = r.line;
    ++rep_.records;
    EL_TRY(fn_(std::move(rec)));
    if (o_.max_records > 0 && rep_.records >= o_.max_records) *stop = true;
    return Status::Ok();
  }

  Status bad(const RawRecord& r, std::string reason, std::string hint = {}) {
    std::string where = fmt::format("{}:{}", path_, r.line);
    if (o_.on_bad_record == BadRecordPolicy::fail)
      return make_error(std::move(reason), std::move(where),
                        hint.empty() ? "fix the record, or skip bad records (policy skip)" : hint);
    ++rep_.bad_records;
    if (static_cast<int>(rep_.first_bad.size()) < o_.max_reported_bad)
      rep_.first_bad.push_back({std::move(where), std::move(reason)});
    return Status::Ok();
  }

  const std::string& path_;
  size_t file_index_;
  const SftReadOptions& o_;
  const std::function<Status(SftRecord&&)>& fn_;
  SftReadReport& rep_;
  int64_t& index_;
  SftFormat format_;
  int64_t seen_ = 0;
  std::string first_keys_;
};

}  // namespace

Status for_each_sft_record(const std::vector<std::string>& files, const SftReadOptions& options,
                           const std::function<Status(SftRecord&&)>& fn, SftReadReport* report) {
  SftReadReport local;
  SftReadReport& rep = report != nullptr ? *report : local;
  rep = SftReadReport{};
  if (files.empty()) return make_error("no SFT data files given", "", "pass .jsonl or .json files");
  if (options.max_record_bytes < 2)
    return make_error(fmt::format("max_record_bytes {} is too small", options.max_record_bytes));
  int64_t index = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    rep.files.push_back(files[i]);
    FileReader reader(files[i], i, options, fn, rep, index);
    bool stop = false;
    const Status st = reader.run(&stop);
    rep.formats.push_back(reader.format());
    EL_TRY(st);
    if (stop) break;
  }
  return Status::Ok();
}

Result<std::vector<SftRecord>> read_sft_records(const std::vector<std::string>& files,
                                                const SftReadOptions& options,
                                                SftReadReport* report) {
  std::vector<SftRecord> out;
  EL_TRY(for_each_sft_record(
      files, options,
      [&](SftRecord&& r) {
        out.push_back(std::move(r));
        return Status::Ok();
      },
      report));
  return out;
}

}  // namespace el::data
