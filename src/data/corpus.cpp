// corpus.cpp — built-in corpus discovery, input expansion, document reading.
#include "data/corpus.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_util.h"
#include "io/suggest.h"

namespace el::data {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// "python3.11" -> 11; anything else (python3, python3-doc) -> -1.
int python_minor(const std::string& dir_name) {
  if (dir_name.rfind("python3.", 0) != 0) return -1;
  const std::string rest = dir_name.substr(8);
  if (rest.empty() || !std::all_of(rest.begin(), rest.end(), ::isdigit)) return -1;
  return std::stoi(rest);
}

bool has_corpus_extension(const fs::path& p) {
  static const char* kExts[] = {".txt", ".rst", ".md", ".jsonl", ".json"};
  const std::string ext = p.extension().string();
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// The document text of one JSON value (a string, or an object holding
// `key`); `where` is "file:line" or "file: element i".
Result<std::string> json_document(const json& v, const std::string& key, const std::string& where,
                                  bool allow_bare_string) {
  if (allow_bare_string && v.is_string()) return v.get<std::string>();
  if (!v.is_object())
    return make_error(fmt::format("expected a JSON object with key '{}', found a {}", key,
                                  v.type_name()),
                      where);
  auto it = v.find(key);
  if (it == v.end())
    return make_error(fmt::format("no key '{}' (keys present: {})", key, io::json_keys_list(v)), where,
                      "choose the key holding the text with --text-key");
  if (!it->is_string())
    return make_error(fmt::format("key '{}' is a {}, expected a string", key, it->type_name()),
                      where);
  return it->get<std::string>();
}

}  // namespace

Result<std::vector<std::string>> builtin_corpus_files(const std::string& doc_root_arg) {
  const std::string hint =
      "run scripts/setup.sh (installs python3-doc), or point EL_DOC_ROOT at a copy of its "
      "/usr/share/doc";
  // EL_DOC_ROOT replaces the default root (a machine where python3-doc cannot
  // be installed gets a copy of the directory).
  const char* env_root = std::getenv("EL_DOC_ROOT");
  const std::string doc_root =
      doc_root_arg == "/usr/share/doc" && env_root && *env_root ? std::string(env_root) : doc_root_arg;
  std::error_code ec;
  // Candidates: doc_root/python3*/html/_sources, resolved (Debian links
  // python3-doc, python3.11-doc, ... to the same python3.11 directory).
  std::set<fs::path> roots;
  for (fs::directory_iterator it(doc_root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("python3", 0) != 0) continue;
    const fs::path src = it->path() / "html" / "_sources";
    if (!fs::is_directory(src, ec)) continue;
    const fs::path canon = fs::canonical(src, ec);
    if (!ec) roots.insert(canon);
  }
  // Prefer the newest python3.N; a directory of another name only if no
  // python3.N has one (then the first by path, for determinism).
  fs::path best;
  int best_minor = -2;
  for (const fs::path& r : roots) {
    const int minor = python_minor(r.parent_path().parent_path().filename().string());
    if (minor > best_minor) {
      best = r;
      best_minor = minor;
    }
  }
  if (best.empty())
    return make_error("the built-in corpus (Python documentation sources) is not installed",
                      doc_root + "/python3*/html/_sources", hint);
  std::vector<std::string> files;
  for (fs::recursive_directory_iterator it(best, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && ends_with(it->path().string(), ".rst.txt"))
      files.push_back(it->path().string());
  }
  if (ec) return make_error(fmt::format("cannot list the corpus: {}", ec.message()), best.string(), hint);
  if (files.empty())
    return make_error("the Python documentation directory holds no .rst.txt files", best.string(),
                      hint);
  std::sort(files.begin(), files.end());
  return files;
}

Result<std::vector<std::string>> expand_inputs(const std::vector<std::string>& paths) {
  if (paths.empty())
    return make_error("no input files or directories given", "", "pass at least one path");
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const fs::path& p) {
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(p, ec);
    if (seen.insert(ec ? p.string() : canon.string()).second) out.push_back(p.string());
  };
  for (const std::string& path : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (ec || !fs::exists(st))
      return make_error("input path does not exist", path, "check the path (files or directories)");
    if (fs::is_regular_file(st)) {
      add(path);
      continue;
    }
    if (!fs::is_directory(st))
      return make_error("input is neither a regular file nor a directory", path);
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec);
    for (fs::recursive_directory_iterator end; !ec && it != end; it.increment(ec)) {
      if (is_hidden(it->path())) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(ec) && has_corpus_extension(it->path()))
        found.push_back(it->path().string());
    }
    if (ec) return make_error(fmt::format("cannot list directory: {}", ec.message()), path);
    if (found.empty())
      return make_error("directory holds no .txt, .rst, .md, .jsonl or .json files", path);
    std::sort(found.begin(), found.end());
    for (const std::string& f : found) add(f);
  }
  return out;
}

Result<FileFormat> detect_format(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".jsonl") return FileFormat::jsonl;
  if (ext != ".json") return FileFormat::text;
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(fmt::format("cannot open file: {}", std::strerror(errno)), path);
  char c = 0;
  while (in.get(c))
    if (!std::isspace(static_cast<unsigned char>(c))) break;
  return c == '[' ? FileFormat::json_array : FileFormat::jsonl;
}

const char* format_name(FileFormat f) {
  switch (f) {
    case FileFormat::text: return "text";
    case FileFormat::jsonl: return "jsonl";
    case FileFormat::json_array: return "json_array";
  }
  return "?";
}

Status for_each_document(const std::vector<std::string>& files, const std::string& text_key,
                         const std::function<Status(Document&&)>& fn, ReadStats* stats) {
  ReadStats local;
  ReadStats& st = stats != nullptr ? *stats : local;
  auto deliver = [&](std::string&& text, size_t file_index, int64_t line) -> Status {
    if (text.empty()) {
      ++st.empty_documents;
      return Status::Ok();
    }
    ++st.documents;
    st.bytes += static_cast<int64_t>(text.size());
    return fn(Document{std::move(text), file_index, line});
  };

  for (size_t fi = 0; fi < files.size(); ++fi) {
    const std::string& path = files[fi];
    EL_TRY_ASSIGN(const FileFormat format, detect_format(path));
    if (format == FileFormat::text) {
      EL_TRY_ASSIGN(std::string text, io::read_file(path));
      EL_TRY(deliver(std::move(text), fi, 0));
    } else if (format == FileFormat::json_array) {
      EL_TRY_ASSIGN(const std::string bytes, io::read_file(path));
      json arr;
      try {
        arr = json::parse(bytes);
      } catch (const json::parse_error& e) {
        return make_error(fmt::format("malformed JSON: {}", e.what()), path);
      }
      if (!arr.is_array())
        return make_error(fmt::format("expected a JSON array of documents, found a {}",
                                      arr.type_name()),
                          path);
      for (size_t i = 0; i < arr.size(); ++i) {
        EL_TRY_ASSIGN(std::string text,
                      json_document(arr[i], text_key, fmt::format("{}: element {}", path, i), true));
        EL_TRY(deliver(std::move(text), fi, 0));
      }
    } else {
      std::ifstream in(path, std::ios::binary);
      if (!in) return make_error(fmt::format("cannot open file: {}", std::strerror(errno)), path);
      std::string line;
      int64_t lineno = 0;
      while (std::getline(in, line)) {
        ++lineno;
        if (std::all_of(line.begin(), line.end(),
                        [](unsigned char ch) { return std::isspace(ch) != 0; }))
          continue;  // blank lines (e.g. a trailing newline) carry no document
        const std::string where = fmt::format("{}:{}", path, lineno);
        json v;
        try {
          v = json::parse(line);
        } catch (const json::parse_error& e) {
          return make_error(fmt::format("malformed JSON line: {}", e.what()), where,
                            "each line of a .jsonl file must be one JSON object");
        }
        EL_TRY_ASSIGN(std::string text, json_document(v, text_key, where, false));
        EL_TRY(deliver(std::move(text), fi, lineno));
      }
      if (in.bad()) return make_error("read error", path);
    }
  }
  return Status::Ok();
}

Error empty_corpus_error(const std::vector<std::string>& files) {
  return make_error(
      fmt::format("empty corpus: {} input file(s) hold no text (no non-empty documents)",
                  files.size()),
      files.empty() ? std::string() : files.front() + (files.size() > 1 ? " ..." : ""),
      "check the inputs and --text-key");
}

Result<std::vector<std::string>> read_documents(const std::vector<std::string>& files,
                                                const std::string& text_key) {
  std::vector<std::string> docs;
  ReadStats st;
  EL_TRY(for_each_document(
      files, text_key,
      [&](Document&& d) {
        docs.push_back(std::move(d.text));
        return Status::Ok();
      },
      &st));
  if (st.documents == 0 || st.bytes == 0) return empty_corpus_error(files);
  return docs;
}

}  // namespace el::data
