// bpe_tokenizer.cpp — BpeTokenizer's encode (added tokens, normalizer,
// pre-tokenizer, BPE merges) and decode. Loading is in bpe_tokenizer_load.cpp.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <queue>

#include "data/bpe_tokenizer_impl.h"

namespace el::data {

// ---- TokenTrie

namespace bpe {

void TokenTrie::insert(std::string_view key, int32_t value) {
  int32_t node = 0;
  for (char ch : key) {
    const auto b = static_cast<uint8_t>(ch);
    auto& next = nodes_[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
    if (it != next.end() && it->first == b) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes_.size());
      next.insert(it, {b, child});
      nodes_.emplace_back();  // invalidates `next`; not used after this
      node = child;
    }
  }
  nodes_[static_cast<size_t>(node)].value = value;
}

std::pair<size_t, int32_t> TokenTrie::longest_at(std::string_view text, size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    const auto& next = nodes_[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
    if (it == next.end() || it->first != b) break;
    node = it->second;
    if (nodes_[static_cast<size_t>(node)].value >= 0) best = {i + 1 - pos, nodes_[static_cast<size_t>(node)].value};
  }
  return best;
}

}  // namespace bpe

// ---- encode

namespace {

// The code point before byte offset `end` of well-formed UTF-8 text.
char32_t last_char(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  char32_t cp;
  bpe::decode_utf8(s, i, &cp);
  return cp;
}

}  // namespace

void BpeTokenizer::Impl::split_added(std::string_view text, const bpe::TokenTrie& trie,
                                     const std::function<void(std::string_view, int32_t)>& piece) const {
  if (trie.empty()) {
    piece(text, -1);
    return;
  }
  size_t start_offset = 0;  // end of what has been handed out
  size_t pos = 0;           // where the search for the next token resumes
  while (pos < text.size()) {
    const auto [len, index] = trie.longest_at(text, pos);
    if (len == 0) {
      ++pos;  // tokens are whole UTF-8 strings, so they only ever match at character starts
      continue;
    }
    const bpe::AddedToken& tok = added[static_cast<size_t>(index)];
    size_t start = pos, stop = pos + len;
    pos = stop;  // the next search starts after the match even when rstrip extends it
    if (tok.single_word) {
      const bool space_before = start == 0 || !bpe::is_word_char(last_char(text, start));
      char32_t after = 0;
      if (stop < text.size()) bpe::decode_utf8(text, stop, &after);
      const bool space_after = stop == text.size() || !bpe::is_word_char(after);
      if (!space_before || !space_after) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0 && bpe::is_unicode_space(last_char(text, s))) {
        do --s;
        while (s > 0 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80);
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      char32_t cp;
      while (stop < text.size()) {
        const int n = bpe::decode_utf8(text, stop, &cp);
        if (!bpe::is_unicode_space(cp)) break;
        stop += static_cast<size_t>(n);
      }
    }
    if (start_offset < start) piece(text.substr(start_offset, start - start_offset), -1);
    piece({}, tok.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) piece(text.substr(start_offset), -1);
}

void BpeTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges) {
    std::string mapped;
    mapped.reserve(word.size() * 2);
    for (char ch : word) mapped += bpe::byte_char(static_cast<uint8_t>(ch));
    if (auto it = vocab.find(mapped); it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // One symbol per byte (HF's merge_word over the byte-level characters).
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(sym.size());
    if (n > 0) sym.back().next = n;
    sym.push_back({id, n - 1, -1, true});
  };
  bool pending_unk = false;
  for (char ch : word) {
    const int32_t id = byte_ids[static_cast<uint8_t>(ch)];
    if (id >= 0) {
      if (pending_unk) add(unk_id), pending_unk = false;
      add(id);
    } else if (unk_id >= 0) {  // a byte the vocabulary lacks: <unk>, fused or not
      if (pending_unk && !fuse_unk) add(unk_id);
      pending_unk = true;
    }  // else dropped, as HF does without an unk_token
  }
  if (pending_unk) add(unk_id);

  // HF's Word::merge_all: a min-heap of (rank, position); stale entries are
  // recognised by the pair no longer producing the same new id.
  struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  auto find_merge = [&](int32_t a, int32_t b) -> const std::pair<uint32_t, int32_t>* {
    auto it = merges.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<>> queue;
  for (size_t i = 0; i + 1 < sym.size(); ++i)
    if (const auto* m = find_merge(sym[i].id, sym[i + 1].id))
      queue.push({m->first, static_cast<int32_t>(i), m->second});
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& left = sym[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = sym[static_cast<size_t>(right_pos)];
    const auto* current = find_merge(left.id, right.id);
    if (current == nullptr || current->second != top.new_id) continue;
    left.id = top.new_id;
    left.next = right.next;
    sym[static_cast<size_t>(right_pos)].alive = false;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0)
      if (const auto* m = find_merge(sym[static_cast<size_t>(left.prev)].id, left.id))
        queue.push({m->first, left.prev, m->second});
    if (left.next >= 0)
      if (const auto* m = find_merge(left.id, sym[static_cast<size_t>(left.next)].id))
        queue.push({m->first, top.pos, m->second});
  }
  for (const Symbol& s : sym)
    if (s.alive) ids.push_back(s.id);
}

void BpeTokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text}, next;
  for (const bpe::Regex& re : splits) {
    next.clear();
    for (std::string_view p : pieces) re.split(p, next);
    pieces.swap(next);
  }
  std::string prefixed;
  std::vector<std::string_view> words;
  for (std::string_view p : pieces) {
    if (add_prefix_space && p.front() != ' ') {
      prefixed.assign(1, ' ');
      prefixed.append(p);
      p = prefixed;
    }
    if (!byte_level_regex) {
      encode_word(p, ids);
      continue;
    }
    words.clear();
    gpt2.split(p, words);
    for (std::string_view w : words) encode_word(w, ids);
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!bpe::is_valid_utf8(text)) {
    repaired = bpe::repair_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  m.split_added(text, m.raw_trie, [&](std::string_view raw, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    std::string normalized;
    if (m.nfc) {
      auto r = bpe::nfc(raw);
      // Cannot fail on repaired UTF-8 short of memory; keep the text as it is then.
      normalized = r.ok() ? std::move(r).value() : std::string(raw);
      raw = normalized;
    }
    m.split_added(raw, m.normalized_trie, [&](std::string_view plain, int32_t id2) {
      if (id2 >= 0) {
        ids.push_back(id2);
      } else {
        m.encode_plain(plain, ids);
      }
    });
  });
  return ids;
}

// ---- decode and lookups

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.id_flags.size()) continue;
    const uint8_t f = m.id_flags[static_cast<size_t>(id)];
    if ((f & Impl::kHasToken) == 0 || (skip_special && (f & Impl::kSpecial) != 0)) continue;
    out += m.id_bytes[static_cast<size_t>(id)];
  }
  return bpe::is_valid_utf8(out) ? out : bpe::repair_utf8(out);
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::vocab_size() const { return static_cast<int>(impl_->id_flags.size()); }
std::optional<int32_t> BpeTokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> BpeTokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> BpeTokenizer::pad_id() const { return impl_->pad; }
const std::string& BpeTokenizer::source_path() const { return impl_->source; }

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || (impl_->id_flags[static_cast<size_t>(id)] & Impl::kHasToken) == 0)
    return std::nullopt;
  return impl_->id_token[static_cast<size_t>(id)];
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && (impl_->id_flags[static_cast<size_t>(id)] & Impl::kSpecial) != 0;
}

std::string BpeTokenizer::describe() const {
  const Impl& m = *impl_;
  return fmt::format("BPE: {} tokens + {} added, {} merges{}{}, {} ({})", m.vocab.size(), m.added.size(),
                     m.merge_count, m.ignore_merges ? ", ignore_merges" : "", m.nfc ? ", NFC" : "",
                     m.pretokenizer_name, m.source);
}

}  // namespace el::data
