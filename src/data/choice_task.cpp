// choice_task.cpp — the multiple-choice JSON Lines reader and writer
// (choice_task.h). The built-in corpus-cloze task is in choice_task_cloze.cpp.
#include "data/choice_task.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/suggest.h"

namespace el::data {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Result<std::string> get_string(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end())
    return make_error(fmt::format("missing key '{}' (keys present: {})", key, io::json_keys_list(obj)),
                      where);
  if (!it->is_string())
    return make_error(fmt::format("key '{}' is a {}, expected a string", key, it->type_name()),
                      where);
  return it->get<std::string>();
}

Result<std::vector<std::string>> get_choices(const json& obj, const char* key,
                                             const std::string& where,
                                             const ChoiceReadOptions& o) {
  const auto it = obj.find(key);
  if (it == obj.end())
    return make_error(fmt::format("missing key '{}' (keys present: {})", key, io::json_keys_list(obj)),
                      where);
  if (!it->is_array())
    return make_error(
        fmt::format("key '{}' is a {}, expected an array of strings", key, it->type_name()), where);
  if (it->empty())
    return make_error(fmt::format("key '{}' is an empty array: an item needs at least one choice", key),
                      where);
  if (static_cast<int64_t>(it->size()) > o.max_choices)
    return make_error(fmt::format("key '{}' has {} choices, more than the limit of {}", key,
                                  it->size(), o.max_choices),
                      where);
  std::vector<std::string> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& c = (*it)[i];
    if (!c.is_string())
      return make_error(fmt::format("{}[{}] is a {}, expected a string", key, i, c.type_name()),
                        where);
    if (c.get_ref<const std::string&>().empty())
      return make_error(fmt::format("{}[{}] is an empty string: a choice needs text to score", key, i),
                        where);
    out.push_back(c.get<std::string>());
  }
  return out;
}

// The gold index under `key`: an integer, a string of decimal digits, or
// (letters = true, MMLU's "answer") a capital letter "A".."Z".
Result<int> get_gold(const json& obj, const char* key, const std::string& where, size_t n_choices,
                     bool letters) {
  const auto it = obj.find(key);
  if (it == obj.end())
    return make_error(fmt::format("missing key '{}' (keys present: {})", key, io::json_keys_list(obj)),
                      where);
  int64_t gold = -1;
  const std::string expected = letters ? "an integer, a digit string or a letter \"A\"..\"Z\""
                                       : "an integer or a digit string";
  if (it->is_number_integer()) {
    gold = it->get<int64_t>();
  } else if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (letters && s.size() == 1 && s[0] >= 'A' && s[0] <= 'Z') {
      gold = s[0] - 'A';
    } else if (!s.empty() && s.size() <= 9 &&
               std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
      gold = std::stoll(s);
    } else {
      return make_error(fmt::format("key '{}' is \"{}\", expected {}", key, s.substr(0, 40), expected),
                        where);
    }
  } else {
    return make_error(fmt::format("key '{}' is a {}, expected {}", key, it->type_name(), expected),
                      where);
  }
  if (gold < 0 || gold >= static_cast<int64_t>(n_choices))
    return make_error(fmt::format("key '{}' = {} is out of range for {} choice(s) (0..{})", key,
                                  it->dump(), n_choices, n_choices - 1),
                      where);
  return static_cast<int>(gold);
}

std::string strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
}

// lm-eval's hellaswag preprocess(): strip, " [title]" -> ". ", remove
// "[...]" (non-greedy, as re.sub("\\[.*?\\]", "")), "  " -> " " (one pass).
std::string hellaswag_preprocess(std::string_view text) {
  std::string s = strip(text);
  replace_all(s, " [title]", ". ");
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') {
      const size_t close = s.find(']', i + 1);
      if (close != std::string::npos) {
        i = close;
        continue;
      }
    }
    out += s[i];
  }
  // Python's str.replace("  ", " ") replaces non-overlapping pairs left to
  // right in one pass: "   " becomes "  ".
  std::string result;
  result.reserve(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    result += out[i];
    if (out[i] == ' ' && i + 1 < out.size() && out[i + 1] == ' ') ++i;
  }
  return result;
}

std::string capitalize_ascii(std::string_view s) {
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

bool has_string(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string();
}

}  // namespace

Result<ChoiceItem> parse_choice_item(std::string_view line, const std::string& where,
                                     const ChoiceReadOptions& options) {
  json v;
  try {
    v = json::parse(line);
  } catch (const json::parse_error& e) {
    return make_error(fmt::format("malformed JSON line: {}", e.what()), where,
                      "each line of a task file must be one JSON object");
  }
  if (!v.is_object())
    return make_error(fmt::format("expected a JSON object, found a {}", v.type_name()), where,
                      "each line of a task file must be one JSON object");
  ChoiceItem item;
  if (v.contains("endings")) {  // HellaSwag
    EL_TRY_ASSIGN(item.choices, get_choices(v, "endings", where, options));
    std::string ctx;
    if (has_string(v, "ctx_a") && has_string(v, "ctx_b")) {
      ctx = v["ctx_a"].get<std::string>() + " " + capitalize_ascii(v["ctx_b"].get<std::string>());
    } else {
      EL_TRY_ASSIGN(ctx, get_string(v, "ctx", where));
    }
    if (v.contains("activity_label")) {
      EL_TRY_ASSIGN(const std::string label, get_string(v, "activity_label", where));
      ctx = label + ": " + ctx;
    }
    item.context = hellaswag_preprocess(ctx);
    for (size_t i = 0; i < item.choices.size(); ++i) {
      item.choices[i] = hellaswag_preprocess(item.choices[i]);
      if (item.choices[i].empty())
        return make_error(fmt::format("endings[{}] is empty after preprocessing", i), where);
    }
    EL_TRY_ASSIGN(item.gold, get_gold(v, "label", where, item.choices.size(), false));
  } else if (v.contains("question")) {  // MMLU, cloze form
    EL_TRY_ASSIGN(const std::string q, get_string(v, "question", where));
    item.context = "Question: " + strip(q) + "\nAnswer:";
    EL_TRY_ASSIGN(item.choices, get_choices(v, "choices", where, options));
    EL_TRY_ASSIGN(item.gold, get_gold(v, "answer", where, item.choices.size(), true));
  } else if (v.contains("context") || v.contains("query")) {  // generic
    EL_TRY_ASSIGN(item.context, get_string(v, v.contains("context") ? "context" : "query", where));
    EL_TRY_ASSIGN(item.choices, get_choices(v, "choices", where, options));
    EL_TRY_ASSIGN(item.gold, get_gold(v, "gold", where, item.choices.size(), false));
  } else {
    return make_error(
        fmt::format("no context key (keys present: {})", io::json_keys_list(v)), where,
        "expected {\"ctx\", \"endings\", \"label\"} (HellaSwag), {\"question\", \"choices\", "
        "\"answer\"} (MMLU) or {\"context\" or \"query\", \"choices\", \"gold\"}");
  }
  if (v.contains("target_delimiter")) {
    EL_TRY_ASSIGN(item.target_delimiter, get_string(v, "target_delimiter", where));
  }
  if (v.contains("source")) {
    EL_TRY_ASSIGN(item.source, get_string(v, "source", where));
  } else {
    item.source = where;
  }
  return item;
}

Result<ChoiceTask> read_choice_task(const std::string& path, const ChoiceReadOptions& options) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return make_error(fmt::format("cannot open the task file: {}", ec.message()), path);
  if (static_cast<int64_t>(size) > options.max_file_bytes)
    return make_error(fmt::format("the task file has {} bytes, more than the limit of {}", size,
                                  options.max_file_bytes),
                      path, "split the task into smaller files");
  ChoiceTask task;
  task.name = path;
  std::string line;
  int64_t lineno = 0;
  bool too_long = false;
  Status failed;
  // One line at a time from 64 KiB chunks: a line is never held beyond
  // max_line_bytes, whatever the file holds.
  auto finish_line = [&]() -> Status {
    ++lineno;
    const std::string where = fmt::format("{}:{}", path, lineno);
    if (too_long)
      return make_error(fmt::format("line is longer than the limit of {} bytes", options.max_line_bytes),
                        where, "one item per line; is this a JSON Lines file?");
    if (lineno == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool blank = std::all_of(line.begin(), line.end(),
                                   [](unsigned char c) { return std::isspace(c) != 0; });
    if (!blank) {
      if (static_cast<int64_t>(task.items.size()) >= options.max_items)
        return make_error(fmt::format("more than {} items", options.max_items), where,
                          "split the task file or raise max_items");
      EL_TRY_ASSIGN(ChoiceItem item, parse_choice_item(line, where, options));
      task.items.push_back(std::move(item));
    }
    line.clear();
    too_long = false;
    return Status::Ok();
  };
  Status read = io::read_file_chunks(path, [&](std::string_view chunk) {
    if (!failed.ok()) return;
    while (!chunk.empty()) {
      const size_t nl = chunk.find('\n');
      const std::string_view part = chunk.substr(0, nl);
      if (!too_long) {
        if (static_cast<int64_t>(line.size() + part.size()) > options.max_line_bytes) {
          too_long = true;
          line.clear();
        } else {
          line.append(part);
        }
      }
      if (nl == std::string_view::npos) break;
      failed = finish_line();
      if (!failed.ok()) return;
      chunk.remove_prefix(nl + 1);
    }
  });
  EL_TRY(read);
  EL_TRY(failed);
  if (!line.empty() || too_long) EL_TRY(finish_line());  // last line without '\n'
  if (task.items.empty())
    return make_error("the task file holds no items", path,
                      "one JSON object per line (HellaSwag, MMLU or generic shape)");
  return task;
}

Status write_choice_task(const std::string& path, const ChoiceTask& task) {
  std::string content;
  for (const ChoiceItem& item : task.items) {
    nlohmann::ordered_json j;
    j["context"] = item.context;
    j["choices"] = item.choices;
    j["gold"] = item.gold;
    j["target_delimiter"] = item.target_delimiter;
    j["source"] = item.source;
    // replace: a stray invalid UTF-8 byte becomes U+FFFD instead of an exception.
    content += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    content += '\n';
  }
  return io::write_file_atomic(path, content);
}

}  // namespace el::data
