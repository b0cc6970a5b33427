// sft_builtin.cpp — SFT records derived from the built-in corpus's reST
// structure (the rules are in sft_builtin.h).
#include "data/sft_builtin.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_set>

#include "data/corpus.h"
#include "data/sha256.h"
#include "io/atomic_file.h"
#include "io/file_util.h"

namespace el::data {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxTitleChars = 120;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

std::string_view rstrip(std::string_view s) {
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}
std::string_view trim(std::string_view s) {
  s = rstrip(s);
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return s;
}
bool is_blank(std::string_view s) { return rstrip(s).empty(); }
bool is_indented(std::string_view s) { return !s.empty() && (s[0] == ' ' || s[0] == '\t'); }

// Code points of UTF-8 text (continuation bytes not counted): the unit of
// every length rule, so non-ASCII prose is not penalised.
int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// A section adornment or transition: one punctuation character repeated.
bool is_adornment(std::string_view line) {
  line = rstrip(line);
  if (line.size() < 2 || std::ispunct(static_cast<unsigned char>(line[0])) == 0) return false;
  return std::all_of(line.begin(), line.end(), [&](char c) { return c == line[0]; });
}

// "=====  ======": a simple table's border (at least two columns).
bool is_simple_table_border(std::string_view line) {
  line = rstrip(line);
  if (line.empty() || line[0] != '=') return false;
  bool gap = false;
  for (char c : line) {
    if (c == ' ') gap = true;
    else if (c != '=') return false;
  }
  return gap;
}

bool is_directive(std::string_view line) {
  line = rstrip(line);
  return line == ".." || starts_with(line, ".. ");
}

// ":name:`" starting at s[i]: returns the index of the backquote, or npos.
size_t role_backquote(std::string_view s, size_t i) {
  if (i >= s.size() || s[i] != ':' || (i > 0 && is_alnum(s[i - 1]))) return std::string_view::npos;
  size_t j = i + 1;
  while (j < s.size() && (is_alnum(s[j]) || s[j] == '-' || s[j] == '_' || s[j] == '.' ||
                          s[j] == '+' || s[j] == ':'))
    ++j;
  if (j >= s.size() || s[j] != '`' || j < i + 3 || s[j - 1] != ':') return std::string_view::npos;
  return j;
}

// Whether a paragraph starting with `line` is a list, a field list, an
// option list, a doctest or a line block rather than prose.
bool starts_non_prose(std::string_view line) {
  line = rstrip(line);
  if (line.empty()) return true;
  for (std::string_view marker : {"* ", "- ", "+ ", "\xE2\x80\xA2 ", "#. ", ">>>", "| "})
    if (starts_with(line, marker)) return true;
  if (line == "*" || line == "-" || line == "+" || line == "|") return true;
  if (line[0] == '-') return true;  // option list: -v, --help
  if (line[0] == ':') return role_backquote(line, 0) == std::string_view::npos;  // field list
  // Enumerated lists: "1. ", "12) ", "a. ", "(1) ", "(a) ".
  size_t i = line[0] == '(' ? 1 : 0;
  const size_t start = i;
  while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
  if (i == start && i < line.size() && std::isalpha(static_cast<unsigned char>(line[i])) &&
      i + 1 < line.size() && !std::isalpha(static_cast<unsigned char>(line[i + 1])))
    ++i;  // a single letter
  if (i > start && i + 1 < line.size() && (line[i] == '.' || line[i] == ')') && line[i + 1] == ' ')
    return start == 0 || line[i] == ')';
  return false;
}

// Backslash escapes resolved ("char\\*" -> "char*"); "\\ " is nothing.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      if (!is_space(s[++i])) out += s[i];
      continue;
    }
    out += s[i];
  }
  return out;
}

std::string render_role(std::string_view role, std::string_view raw) {
  if (const size_t colon = role.rfind(':'); colon != std::string_view::npos)
    role = role.substr(colon + 1);  // "py:func" -> "func"
  const std::string unescaped = unescape(raw);
  std::string_view content = unescaped;
  // "Title <target>" (the space is optional for Sphinx): the title is shown,
  // or the target when the title is empty.
  if (ends_with(content, ">")) {
    const size_t lt = content.rfind('<');
    if (lt != std::string_view::npos) {
      const std::string_view title = trim(content.substr(0, lt));
      if (!title.empty()) return std::string(title);
      content = content.substr(lt + 1, content.size() - lt - 2);
      if (role.empty()) return std::string(content);  // a bare `<url>`_ link
    }
  }
  if (role == "pep") return "PEP " + std::string(content);
  if (role == "rfc") return "RFC " + std::string(content);
  bool shorten = false;
  if (starts_with(content, "!")) content.remove_prefix(1);
  if (starts_with(content, "~")) {
    content.remove_prefix(1);
    shorten = true;
  }
  if (shorten)
    if (const size_t dot = content.rfind('.'); dot != std::string_view::npos)
      content = content.substr(dot + 1);
  std::string out(content);
  if ((role == "func" || role == "meth") && !ends_with(out, ")")) out += "()";
  return out;
}

// Emphasis or strong emphasis opening at s[i] (`mark` is "*" or "**"):
// the index of the closing mark, or npos. reST's rules, simplified: the
// start is not preceded by an alphanumeric and not followed by a space, the
// end not preceded by a space and not followed by an alphanumeric.
size_t emphasis_end(std::string_view s, size_t i, std::string_view mark) {
  if (i > 0 && is_alnum(s[i - 1])) return std::string_view::npos;
  const size_t from = i + mark.size();
  if (from >= s.size() || is_space(s[from]) || s[from] == '*') return std::string_view::npos;
  for (size_t k = s.find(mark, from); k != std::string_view::npos; k = s.find(mark, k + 1)) {
    const size_t after = k + mark.size();
    if (is_space(s[k - 1]) || (after < s.size() && (is_alnum(s[after]) || s[after] == '*')))
      continue;
    return k;
  }
  return std::string_view::npos;
}

// "[#]_", "[#note]_", "[1]_", "[Label]_" starting at s[i]: the index after
// "_", or npos.
size_t footnote_ref_end(std::string_view s, size_t i) {
  if (s[i] != '[') return std::string_view::npos;
  size_t j = i + 1;
  while (j < s.size() && (is_alnum(s[j]) || s[j] == '#' || s[j] == '*' || s[j] == '-' ||
                          s[j] == '_' || s[j] == '.'))
    ++j;
  if (j + 1 < s.size() && s[j] == ']' && s[j + 1] == '_' && j > i + 1) return j + 2;
  return std::string_view::npos;
}

// The sentence(s) before the last one of `text`, or "" when it has one
// sentence. A sentence ends at '.', '!' or '?' (optionally followed by ')'
// or '"') before a space, unless the word is an abbreviation ("e.g.").
std::string drop_last_sentence(std::string_view text) {
  for (size_t p = text.size(); p-- > 1;) {
    if (text[p] != ' ') continue;
    size_t e = p - 1;
    if ((text[e] == ')' || text[e] == '"') && e > 0) --e;
    if (text[e] != '.' && text[e] != '!' && text[e] != '?') continue;
    if (text[e] == '.') {
      size_t w = e;
      while (w > 0 && text[w - 1] != ' ') --w;
      const std::string_view word = text.substr(w, e - w);
      static const char* kAbbrev[] = {"e.g", "i.e", "etc", "vs", "cf", "Mr", "Dr", "No"};
      if (word.empty() || word.find('.') != std::string_view::npos ||
          std::any_of(std::begin(kAbbrev), std::end(kAbbrev),
                      [&](const char* a) { return word == a; }))
        continue;
    }
    return std::string(text.substr(0, p));
  }
  return {};
}

// A substitution reference left in the text ("|version|"): its value is
// defined outside the document, so the text would be wrong.
bool has_substitution(std::string_view text) {
  for (size_t i = text.find('|'); i != std::string_view::npos; i = text.find('|', i + 1)) {
    size_t j = i + 1;
    while (j < text.size() && (is_alnum(text[j]) || text[j] == '_' || text[j] == '-')) ++j;
    if (j > i + 1 && j < text.size() && text[j] == '|' &&
        std::isalpha(static_cast<unsigned char>(text[i + 1])) != 0)
      return true;
  }
  return false;
}

bool ends_sentence(std::string_view text) {
  if (text.empty()) return false;
  char last = text.back();
  if ((last == ')' || last == '"') && text.size() > 1) last = text[text.size() - 2];
  return last == '.' || last == '!' || last == '?';
}

// ---- blocks

// markup: directives, comments, labels, transitions (passed over before a
// section's first paragraph); content: lists, tables, literal blocks, block
// quotes, definition lists (text the record cannot carry, so they end it).
enum class BlockKind { title, paragraph, markup, content };

struct Block {
  BlockKind kind = BlockKind::content;
  std::vector<std::string_view> lines;  // title: the title line; paragraph: its lines
  int64_t line = 0;                     // 1-based line of the first line
};

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

// The document's blocks in order (file comment of sft_builtin.h: which
// blocks are skipped).
std::vector<Block> split_blocks(const std::vector<std::string_view>& lines) {
  std::vector<Block> blocks;
  const size_t n = lines.size();
  size_t i = 0;
  auto skip_indented = [&](size_t j) {
    while (j < n && (is_blank(lines[j]) || is_indented(lines[j]))) ++j;
    return j;
  };
  while (i < n) {
    const std::string_view line = rstrip(lines[i]);
    const int64_t lineno = static_cast<int64_t>(i) + 1;
    if (line.empty()) {
      ++i;
      continue;
    }
    if (is_indented(line)) {  // literal block, block quote, stray directive body
      i = skip_indented(i);
      blocks.push_back({BlockKind::content, {}, lineno});
      continue;
    }
    if (is_directive(line)) {
      i = skip_indented(i + 1);
      blocks.push_back({BlockKind::markup, {}, lineno});
      continue;
    }
    if (is_adornment(line) && i + 2 < n && !is_blank(lines[i + 1]) && rstrip(lines[i + 2]) == line) {
      blocks.push_back({BlockKind::title, {trim(lines[i + 1])}, lineno + 1});  // overlined title
      i += 3;
      continue;
    }
    if (!is_adornment(line) && i + 1 < n && is_adornment(lines[i + 1])) {
      const std::string_view adorn = rstrip(lines[i + 1]);
      if (adorn.size() >= 4 || static_cast<int64_t>(adorn.size()) >= utf8_length(line)) {
        blocks.push_back({BlockKind::title, {line}, lineno});
        i += 2;
        continue;
      }
    }
    if (is_simple_table_border(line)) {
      // Header-less tables have two borders, others three; rows may hold
      // blank lines, so the table ends at a border followed by a blank line.
      int borders = 1;
      for (++i; i < n;) {
        const std::string_view l = rstrip(lines[i++]);
        const bool border = is_simple_table_border(l) || (is_adornment(l) && l[0] == '=');
        if (border && ++borders >= 2 && (i >= n || is_blank(lines[i]))) break;
      }
      blocks.push_back({BlockKind::content, {}, lineno});
      continue;
    }
    if (is_adornment(line)) {  // a transition
      ++i;
      blocks.push_back({BlockKind::markup, {}, lineno});
      continue;
    }
    if (starts_with(line, "+-") || starts_with(line, "+=")) {  // a grid table
      while (i < n && !is_blank(lines[i])) ++i;
      blocks.push_back({BlockKind::content, {}, lineno});
      continue;
    }
    size_t j = i;
    while (j < n && !is_blank(lines[j]) && !is_indented(lines[j])) ++j;
    if (j < n && !is_blank(lines[j])) {  // an indented line right after: a definition list
      i = skip_indented(j);
      blocks.push_back({BlockKind::content, {}, lineno});
      continue;
    }
    Block b{BlockKind::paragraph, {}, lineno};
    for (size_t k = i; k < j; ++k) b.lines.push_back(rstrip(lines[k]));
    blocks.push_back(std::move(b));
    i = j;
  }
  return blocks;
}

struct Prose {
  std::string text;
  int64_t chars = 0;
  bool qualifies = false;    // the paragraph rule holds
  bool passable = false;     // a short line such as "Source code: Lib/json/__init__.py"
  bool ends_output = false;  // the paragraph introduced something the record lacks
};

// The paragraph as output prose (the paragraph rule in sft_builtin.h).
Prose prose_of(const Block& b, const BuiltinSftOptions& o) {
  Prose p;
  if (starts_non_prose(b.lines.front())) return p;
  std::string joined;
  for (std::string_view l : b.lines) {
    if (starts_with(trim(l), ">>>")) return p;
    if (!joined.empty()) joined += ' ';
    joined += trim(l);
  }
  // Cleaning never lengthens text much (":pep:`8`" -> "PEP 8"), so a huge
  // paragraph cannot qualify; skipping it keeps a pathological input from
  // costing quadratic time in the markup scanner.
  if (static_cast<int64_t>(joined.size()) > 16 * o.max_output_chars + 1024) return p;
  p.text = clean_rst_inline(joined);
  if (ends_with(p.text, ":")) {
    p.text = drop_last_sentence(p.text);
    p.ends_output = true;
  }
  p.chars = utf8_length(p.text);
  p.passable = !p.ends_output && p.chars < o.min_paragraph_chars;
  if (!ends_sentence(p.text) || p.chars < o.min_paragraph_chars || p.chars > o.max_output_chars)
    return p;
  for (std::string_view leftover : {"`", "::", "]_"})
    if (p.text.find(leftover) != std::string::npos) return p;
  p.qualifies = !has_substitution(p.text);
  return p;
}

// The output of the section whose body is blocks [begin, end) (the output
// rule in sft_builtin.h).
std::string section_output(const std::vector<Block>& blocks, size_t begin, size_t end,
                           const BuiltinSftOptions& o) {
  std::string out;
  int64_t chars = 0;
  for (size_t k = begin; k < end; ++k) {
    const Block& b = blocks[k];
    if (b.kind == BlockKind::markup) {
      if (!out.empty()) break;
      continue;
    }
    if (b.kind != BlockKind::paragraph) break;
    const Prose p = prose_of(b, o);
    if (!p.qualifies) {
      if (out.empty() && p.passable) continue;
      break;
    }
    if (!out.empty()) {
      if (chars + 2 + p.chars > o.max_output_chars) break;
      out += "\n\n";
      chars += 2;
    }
    out += p.text;
    chars += p.chars;
    if (p.ends_output) break;
  }
  return out;
}

bool valid_title(std::string_view title) {
  return utf8_length(title) <= kMaxTitleChars &&
         std::any_of(title.begin(), title.end(),
                     [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; });
}

Status check_options(const BuiltinSftOptions& o) {
  const std::string hint = "min_paragraph_chars >= 1, max_output_chars >= min_paragraph_chars, "
                           "max_records >= 0";
  if (o.min_paragraph_chars < 1 || o.max_output_chars < o.min_paragraph_chars || o.max_records < 0)
    return make_error(fmt::format("invalid built-in SFT options: min_paragraph_chars {}, "
                                  "max_output_chars {}, max_records {}",
                                  o.min_paragraph_chars, o.max_output_chars, o.max_records),
                      "built-in SFT data", hint);
  return Status::Ok();
}

// A corpus file's path below .../_sources/ ("library/json.rst.txt").
std::string relative_source(const std::string& path) {
  const std::string marker = "/_sources/";
  const size_t at = path.rfind(marker);
  return at == std::string::npos ? fs::path(path).filename().string()
                                 : path.substr(at + marker.size());
}

// The corpus directory holding `path` (".../html/_sources").
std::string corpus_root_of(const std::string& path) {
  const size_t at = path.rfind("/_sources/");
  return at == std::string::npos ? fs::path(path).parent_path().string()
                                 : path.substr(0, at + 9);
}

}  // namespace

std::string clean_rst_inline(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size()) {  // escaped character; "\ " is nothing
      if (!is_space(s[i + 1])) out += s[i + 1];
      i += 2;
      continue;
    }
    if (c == ':') {
      const size_t bq = role_backquote(s, i);
      const size_t close = bq == std::string_view::npos ? bq : s.find('`', bq + 1);
      if (close != std::string_view::npos) {
        out += render_role(s.substr(i + 1, bq - i - 2), s.substr(bq + 1, close - bq - 1));
        i = close + 1;
        continue;
      }
    }
    if (c == '`') {
      if (i + 1 < s.size() && s[i + 1] == '`') {  // ``literal``
        const size_t close = s.find("``", i + 2);
        if (close != std::string_view::npos) {
          out += s.substr(i + 2, close - i - 2);
          i = close + 2;
          continue;
        }
      } else if (const size_t close = s.find('`', i + 1); close != std::string_view::npos) {
        // `interpreted text`, `link <url>`_, `reference`__
        out += render_role("", s.substr(i + 1, close - i - 1));
        i = close + 1;
        while (i < s.size() && s[i] == '_') ++i;
        continue;
      }
    }
    if (c == '*') {
      const std::string_view mark = i + 1 < s.size() && s[i + 1] == '*' ? "**" : "*";
      if (const size_t end = emphasis_end(s, i, mark); end != std::string_view::npos) {
        out += s.substr(i + mark.size(), end - i - mark.size());
        i = end + mark.size();
        continue;
      }
    }
    if (c == '[') {
      if (const size_t end = footnote_ref_end(s, i); end != std::string_view::npos) {
        while (!out.empty() && out.back() == ' ') out.pop_back();
        i = end;
        continue;
      }
    }
    out += c;
    ++i;
  }
  // Collapse whitespace, then the em dash written as "---".
  std::string collapsed;
  collapsed.reserve(out.size());
  for (char ch : out) {
    if (is_space(ch)) {
      if (!collapsed.empty() && collapsed.back() != ' ') collapsed += ' ';
    } else {
      collapsed += ch;
    }
  }
  while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
  for (size_t at = collapsed.find(" --- "); at != std::string::npos;
       at = collapsed.find(" --- ", at + 3))
    collapsed.replace(at, 5, " - ");
  return collapsed;
}

namespace {

// extract_sft_records, also counting the section titles seen.
std::vector<BuiltinSftRecord> extract_records(std::string_view rst, std::string_view source,
                                              const BuiltinSftOptions& options, int64_t* titles) {
  const std::vector<std::string_view> lines = split_lines(rst);
  const std::vector<Block> blocks = split_blocks(lines);
  std::vector<BuiltinSftRecord> records;
  std::string page_title;
  bool first_title = true;
  for (size_t k = 0; k < blocks.size(); ++k) {
    if (blocks[k].kind != BlockKind::title) continue;
    ++*titles;
    const std::string title = clean_rst_inline(blocks[k].lines.front());
    const bool is_page = first_title;
    if (first_title) page_title = title;
    first_title = false;
    size_t end = k + 1;
    while (end < blocks.size() && blocks[end].kind != BlockKind::title) ++end;
    if (!valid_title(title)) continue;
    std::string output = section_output(blocks, k + 1, end, options);
    if (output.empty()) continue;
    BuiltinSftRecord r;
    // A question title (the FAQ pages) is asked as it stands.
    const std::string ask = ends_with(title, "?") ? title : "Explain " + title;
    const std::string stop = ends_with(title, "?") ? "" : ".";
    r.instruction = is_page || !valid_title(page_title)
                        ? fmt::format("{} (from the Python documentation){}", ask, stop)
                        : fmt::format("{} (from the Python documentation on {}){}", ask,
                                      page_title, stop);
    r.output = std::move(output);
    r.source = fmt::format("{}:{}", source, blocks[k].line);
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace

std::vector<BuiltinSftRecord> extract_sft_records(std::string_view rst, std::string_view source,
                                                  const BuiltinSftOptions& options) {
  int64_t titles = 0;
  return extract_records(rst, source, options, &titles);
}

Result<std::vector<BuiltinSftRecord>> builtin_sft_records(const BuiltinSftOptions& options,
                                                          BuiltinSftStats* stats) {
  EL_TRY(check_options(options));
  EL_TRY_ASSIGN(const std::vector<std::string> files, builtin_corpus_files(options.doc_root));
  BuiltinSftStats local;
  BuiltinSftStats& st = stats != nullptr ? *stats : local;
  st = BuiltinSftStats{};
  std::vector<BuiltinSftRecord> out;
  std::unordered_set<std::string> instructions, outputs;
  for (const std::string& file : files) {
    EL_TRY_ASSIGN(const std::string text, io::read_file(file));
    ++st.files;
    for (BuiltinSftRecord& r :
         extract_records(text, relative_source(file), options, &st.sections)) {
      ++st.extracted;
      if (instructions.count(r.instruction) != 0 || outputs.count(r.output) != 0) {
        ++st.duplicates;
        continue;
      }
      instructions.insert(r.instruction);
      outputs.insert(r.output);
      out.push_back(std::move(r));
      if (options.max_records > 0 && static_cast<int64_t>(out.size()) >= options.max_records) break;
    }
    if (options.max_records > 0 && static_cast<int64_t>(out.size()) >= options.max_records) break;
  }
  st.records = static_cast<int64_t>(out.size());
  if (out.empty())
    return make_error("the built-in corpus gave no SFT records",
                      corpus_root_of(files.front()),
                      "check that the corpus holds reST sources with prose under section titles, "
                      "or lower min_paragraph_chars");
  return out;
}

Result<int64_t> write_builtin_sft(const std::string& path, const BuiltinSftOptions& options,
                                  BuiltinSftStats* stats) {
  EL_TRY_ASSIGN(const std::vector<BuiltinSftRecord> records, builtin_sft_records(options, stats));
  std::string content;
  for (const BuiltinSftRecord& r : records) {
    nlohmann::ordered_json j;  // keys in alpaca's order
    j["instruction"] = r.instruction;
    j["input"] = "";
    j["output"] = r.output;
    j["source"] = r.source;
    // replace: a stray invalid UTF-8 byte in the corpus becomes U+FFFD
    // instead of an exception.
    content += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    content += '\n';
  }
  EL_TRY(io::write_file_atomic(path, content));
  return static_cast<int64_t>(records.size());
}

std::string builtin_sft_file_name(const BuiltinSftOptions& options) {
  const BuiltinSftOptions defaults;
  std::string name = fmt::format("builtin-sft-v{}", kBuiltinSftVersion);
  if (options.max_records != defaults.max_records) name += fmt::format("-n{}", options.max_records);
  if (options.min_paragraph_chars != defaults.min_paragraph_chars ||
      options.max_output_chars != defaults.max_output_chars)
    name += fmt::format("-p{}-{}", options.min_paragraph_chars, options.max_output_chars);
  return name + ".jsonl";
}

namespace {

// SHA-256 over every corpus file's path and content hash: changes when the
// installed documentation does (another Python version, an EL_DOC_ROOT copy
// with other text).
Result<std::string> corpus_fingerprint(const std::vector<std::string>& files) {
  std::string summary;
  for (const std::string& f : files) {
    EL_TRY_ASSIGN(const std::string h, sha256_file(f));
    summary += relative_source(f) + '\t' + h + '\n';
  }
  return sha256_hex(summary);
}

nlohmann::json options_json(const BuiltinSftOptions& o) {
  return {{"max_records", o.max_records},
          {"min_paragraph_chars", o.min_paragraph_chars},
          {"max_output_chars", o.max_output_chars}};
}

// Whether `path` is a complete copy written for this corpus and options
// (its sidecar `meta_path` agrees, and the file's size and hash match).
bool cache_is_current(const std::string& path, const std::string& meta_path,
                      const nlohmann::json& expected) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) || !fs::is_regular_file(meta_path, ec)) return false;
  Result<std::string> text = io::read_file(meta_path);
  if (!text.ok()) return false;
  const nlohmann::json meta = nlohmann::json::parse(text.value(), nullptr, false);
  if (!meta.is_object()) return false;
  for (const char* key : {"version", "corpus_sha256", "options"})
    if (!meta.contains(key) || meta[key] != expected[key]) return false;
  const auto bytes = meta.find("bytes");
  const auto sha = meta.find("sha256");
  if (bytes == meta.end() || !bytes->is_number_unsigned() || sha == meta.end() ||
      !sha->is_string())
    return false;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec || size != bytes->get<uintmax_t>()) return false;
  Result<std::string> actual = sha256_file(path);
  return actual.ok() && actual.value() == sha->get<std::string>();
}

}  // namespace

Result<std::string> ensure_builtin_sft(const std::string& cache_dir,
                                       const BuiltinSftOptions& options) {
  EL_TRY(check_options(options));
  EL_TRY_ASSIGN(const std::vector<std::string> files, builtin_corpus_files(options.doc_root));
  EL_TRY_ASSIGN(const std::string fingerprint, corpus_fingerprint(files));
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec)
    return make_error(fmt::format("cannot create the cache directory: {}", ec.message()),
                      cache_dir, "choose a writable cache directory");
  const std::string path = (fs::path(cache_dir) / builtin_sft_file_name(options)).string();
  const std::string meta_path = path + ".meta.json";
  nlohmann::json meta = {{"version", kBuiltinSftVersion},
                         {"corpus_sha256", fingerprint},
                         {"options", options_json(options)}};
  if (cache_is_current(path, meta_path, meta)) return path;

  BuiltinSftStats stats;
  EL_TRY_ASSIGN(const int64_t records, write_builtin_sft(path, options, &stats));
  EL_TRY_ASSIGN(const std::string sha, sha256_file(path));
  const uintmax_t bytes = fs::file_size(path, ec);
  if (ec) return make_error(fmt::format("cannot stat the written file: {}", ec.message()), path);
  meta["corpus_root"] = corpus_root_of(files.front());
  meta["corpus_files"] = files.size();
  meta["records"] = records;
  meta["sections"] = stats.sections;
  meta["duplicates"] = stats.duplicates;
  meta["bytes"] = bytes;
  meta["sha256"] = sha;
  // The sidecar is written last: a crash between the two leaves a file that
  // the next call does not trust and rewrites.
  EL_TRY(io::write_file_atomic(meta_path, meta.dump(2) + "\n"));
  return path;
}

}  // namespace el::data
