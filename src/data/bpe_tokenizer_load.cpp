// bpe_tokenizer_load.cpp — reading and checking tokenizer.json (and
// tokenizer_config.json) into BpeTokenizer::Impl. Every field an untrusted
// file supplies is checked before use; errors say "<file>: key '<path>'".
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "data/bpe_tokenizer.h"
#include "data/bpe_tokenizer_impl.h"
#include "io/file_util.h"

namespace el::data {
namespace {

using nlohmann::json;

// Builds errors that point at a key of one file.
struct Where {
  const std::string& file;
  Error operator()(const std::string& key, std::string what, std::string hint = {}) const {
    return make_error(std::move(what), fmt::format("{}: key '{}'", file, key), std::move(hint));
  }
};

const char* json_type(const json& j) { return j.type_name(); }

Result<bool> get_bool(const json& obj, const char* key, bool fallback, const std::string& path, const Where& at) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    return at(path + "." + key, fmt::format("expected true or false, found {}", json_type(*it)));
  return it->get<bool>();
}

// A null/absent or empty string is "not set".
Result<std::string> get_optional_string(const json& obj, const char* key, const std::string& path,
                                        const Where& at) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return at(path + "." + key, fmt::format("expected a string, found {}", json_type(*it)));
  return it->get<std::string>();
}

Result<std::string> get_type(const json& obj, const std::string& path, const Where& at) {
  if (!obj.is_object()) return at(path, fmt::format("expected an object, found {}", json_type(obj)));
  auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) return at(path + ".type", "missing or not a string");
  return it->get<std::string>();
}

Status check_token_string(const std::string& s, const std::string& key, const Where& at) {
  if (s.size() > kMaxTokenBytes)
    return at(key, fmt::format("a token of {} bytes (the limit is {})", s.size(), kMaxTokenBytes));
  return Status::Ok();
}

// ---- model

Status read_model(const json& root, BpeTokenizer::Impl& m, const Where& at) {
  auto mit = root.find("model");
  if (mit == root.end()) return at("model", "missing");
  const json& model = *mit;
  EL_TRY_ASSIGN(const std::string type, get_type(model, "model", at));
  if (type != "BPE")
    return at("model.type", fmt::format("unsupported tokenizer model type '{}' (only BPE is supported)", type),
              "SentencePiece checkpoints also ship tokenizer.model: load that instead");
  if (auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
    if (!d->is_number()) return at("model.dropout", "expected a number or null");
    if (d->get<double>() != 0.0) return at("model.dropout", "BPE dropout is not supported (it is a training-time option)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    EL_TRY_ASSIGN(const std::string v, get_optional_string(model, key, "model", at));
    if (!v.empty()) return at(std::string("model.") + key, "not supported (byte-level BPE does not use it)");
  }
  EL_TRY_ASSIGN(const bool byte_fallback, get_bool(model, "byte_fallback", false, "model", at));
  if (byte_fallback)
    return at("model.byte_fallback", "byte_fallback BPE (SentencePiece style) is not supported",
              "byte-level BPE (Llama 3, Qwen2) is; for SentencePiece checkpoints load tokenizer.model");
  EL_TRY_ASSIGN(m.ignore_merges, get_bool(model, "ignore_merges", false, "model", at));
  EL_TRY_ASSIGN(m.fuse_unk, get_bool(model, "fuse_unk", false, "model", at));
  EL_TRY_ASSIGN(const std::string unk, get_optional_string(model, "unk_token", "model", at));

  // vocab: {"token": id}
  auto vit = model.find("vocab");
  if (vit == model.end() || !vit->is_object()) return at("model.vocab", "missing or not an object");
  if (static_cast<int64_t>(vit->size()) > int64_t{kMaxBpeTokenId} + 1)
    return at("model.vocab", fmt::format("{} entries (the limit is {})", vit->size(), kMaxBpeTokenId + 1));
  m.vocab.reserve(vit->size());
  std::unordered_map<int32_t, const std::string*> by_id;
  by_id.reserve(vit->size());
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    const std::string key = it.key().size() <= 48 ? "model.vocab[\"" + it.key() + "\"]"
                                                   : "model.vocab[\"" + it.key().substr(0, 40) + "...\"]";
    EL_TRY(check_token_string(it.key(), key, at));
    if (!it->is_number_integer()) return at(key, fmt::format("expected an integer id, found {}", json_type(*it)));
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id > kMaxBpeTokenId) return at(key, fmt::format("id {} outside [0, {}]", id, kMaxBpeTokenId));
    auto [pos, fresh] = by_id.emplace(static_cast<int32_t>(id), &it.key());
    if (!fresh) return at(key, fmt::format("id {} is also the id of '{}'", id, *pos->second));
    m.vocab.emplace(it.key(), static_cast<int32_t>(id));
  }
  if (!unk.empty()) {
    auto u = m.vocab.find(unk);
    if (u == m.vocab.end()) return at("model.unk_token", fmt::format("'{}' is not in model.vocab", unk));
    m.unk_id = u->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(bpe::byte_char(static_cast<uint8_t>(b)));
    m.byte_ids[static_cast<size_t>(b)] = it == m.vocab.end() ? -1 : it->second;
  }

  // merges: ["a b", ...] or [["a", "b"], ...]; rank = position (a later
  // duplicate wins, as in HF's map).
  auto gi = model.find("merges");
  if (gi == model.end() || !gi->is_array()) return at("model.merges", "missing or not an array");
  if (static_cast<int64_t>(gi->size()) > kMaxBpeMerges)
    return at("model.merges", fmt::format("{} merges (the limit is {})", gi->size(), kMaxBpeMerges));
  m.merges.reserve(gi->size());
  uint32_t rank = 0;
  std::string left, right;
  for (size_t i = 0; i < gi->size(); ++i) {
    const json& e = (*gi)[i];
    const std::string key = fmt::format("model.merges[{}]", i);
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      if (s.rfind("#version", 0) == 0) continue;  // header line of merges.txt files
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return at(key, fmt::format("'{}' is not two tokens separated by one space", s));
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      return at(key, "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto a = m.vocab.find(left), b = m.vocab.find(right), c = m.vocab.find(left + right);
    for (const auto& [it, tok] : {std::pair{a, &left}, std::pair{b, &right}})
      if (it == m.vocab.end()) return at(key, fmt::format("merge token '{}' is not in model.vocab", *tok));
    if (c == m.vocab.end())
      return at(key, fmt::format("merged token '{}' is not in model.vocab", left + right));
    const uint64_t pair = (static_cast<uint64_t>(static_cast<uint32_t>(a->second)) << 32) |
                          static_cast<uint32_t>(b->second);
    m.merges[pair] = {rank++, c->second};
  }
  m.merge_count = rank;
  return Status::Ok();
}

// ---- normalizer, pre-tokenizer, decoder

Status read_normalizer(const json& root, BpeTokenizer::Impl& m, const Where& at) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return Status::Ok();
  EL_TRY_ASSIGN(const std::string type, get_type(*it, "normalizer", at));
  if (type == "NFC") {
    m.nfc = true;
    return Status::Ok();
  }
  if (type == "Sequence") {
    auto list = it->find("normalizers");
    if (list == it->end() || !list->is_array()) return at("normalizer.normalizers", "missing or not an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string key = fmt::format("normalizer.normalizers[{}]", i);
      EL_TRY_ASSIGN(const std::string t, get_type((*list)[i], key, at));
      if (t != "NFC") return at(key + ".type", fmt::format("unsupported normalizer type '{}' (only NFC is)", t));
      m.nfc = true;
    }
    return Status::Ok();
  }
  return at("normalizer.type", fmt::format("unsupported normalizer type '{}' (null and NFC are supported)", type));
}

Status read_byte_level(const json& step, const std::string& key, BpeTokenizer::Impl& m, const Where& at) {
  EL_TRY_ASSIGN(m.add_prefix_space, get_bool(step, "add_prefix_space", false, key, at));
  EL_TRY_ASSIGN(m.byte_level_regex, get_bool(step, "use_regex", true, key, at));  // HF's default
  if (m.byte_level_regex) {
    auto re = bpe::Regex::compile(bpe::kGpt2Pattern);
    if (!re.ok()) return at(key, re.error().what);
    m.gpt2 = std::move(re).value();
  }
  return Status::Ok();
}

Status read_split(const json& step, const std::string& key, BpeTokenizer::Impl& m, const Where& at) {
  auto pat = step.find("pattern");
  if (pat == step.end() || !pat->is_object() || pat->size() != 1)
    return at(key + ".pattern", "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}");
  const bool literal = pat->contains("String");
  const json& text = literal ? (*pat)["String"] : pat->value("Regex", json());
  if (!text.is_string()) return at(key + ".pattern", "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}");
  auto behavior = step.find("behavior");
  if (behavior == step.end() || !behavior->is_string() || behavior->get<std::string>() != "Isolated")
    return at(key + ".behavior",
              fmt::format("unsupported Split behavior {} (only \"Isolated\" is)",
                          behavior == step.end() ? std::string("(missing)") : behavior->dump()));
  EL_TRY_ASSIGN(const bool invert, get_bool(step, "invert", false, key, at));
  if (invert) return at(key + ".invert", "inverted Split is not supported");
  auto re = bpe::Regex::compile(text.get<std::string>(), literal);
  if (!re.ok()) return at(key + ".pattern", re.error().what, re.error().hint);
  m.splits.push_back(std::move(re).value());
  return Status::Ok();
}

Status read_pre_tokenizer(const json& root, BpeTokenizer::Impl& m, const Where& at) {
  auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null())
    return at("pre_tokenizer", "missing: a byte-level BPE needs the ByteLevel pre-tokenizer");
  EL_TRY_ASSIGN(const std::string type, get_type(*it, "pre_tokenizer", at));
  if (type == "ByteLevel") {
    m.pretokenizer_name = "ByteLevel";
    return read_byte_level(*it, "pre_tokenizer", m, at);
  }
  if (type != "Sequence")
    return at("pre_tokenizer.type", fmt::format("unsupported pre-tokenizer type '{}' (ByteLevel, or a Sequence of "
                                                "Split steps and ByteLevel, are supported)", type));
  auto list = it->find("pretokenizers");
  if (list == it->end() || !list->is_array() || list->empty())
    return at("pre_tokenizer.pretokenizers", "missing, empty or not an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string key = fmt::format("pre_tokenizer.pretokenizers[{}]", i);
    EL_TRY_ASSIGN(const std::string t, get_type((*list)[i], key, at));
    const bool last = i + 1 == list->size();
    if (t == "Split" && !last) {
      EL_TRY(read_split((*list)[i], key, m, at));
      m.pretokenizer_name += "Split+";
    } else if (t == "ByteLevel" && last) {
      EL_TRY(read_byte_level((*list)[i], key, m, at));
      m.pretokenizer_name += "ByteLevel";
    } else {
      return at(key + ".type", fmt::format("unsupported pre-tokenizer step '{}' here: expected Split steps "
                                           "followed by one ByteLevel", t));
    }
  }
  return Status::Ok();
}

Status read_decoder(const json& root, const Where& at) {
  auto it = root.find("decoder");
  if (it == root.end() || it->is_null()) return Status::Ok();
  EL_TRY_ASSIGN(const std::string type, get_type(*it, "decoder", at));
  if (type != "ByteLevel")
    return at("decoder.type", fmt::format("unsupported decoder type '{}' (only ByteLevel is)", type));
  return Status::Ok();
}

// ---- added tokens (ids assigned as HF's AddedVocabulary does, then checked
// against the file's: a mismatch means HF would tokenize differently)

Status read_added_tokens(const json& root, BpeTokenizer::Impl& m, const Where& at) {
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return Status::Ok();
  if (!it->is_array()) return at("added_tokens", "expected an array");
  if (static_cast<int64_t>(it->size()) > kMaxAddedTokens)
    return at("added_tokens", fmt::format("{} entries (the limit is {})", it->size(), kMaxAddedTokens));
  std::unordered_set<int32_t> model_ids;
  model_ids.reserve(m.vocab.size());
  for (const auto& [tok, id] : m.vocab) model_ids.insert(id);
  int64_t next_id = static_cast<int64_t>(m.vocab.size());
  std::unordered_set<int32_t> taken;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    const std::string key = fmt::format("added_tokens[{}]", i);
    if (!e.is_object()) return at(key, "expected an object");
    auto content = e.find("content");
    if (content == e.end() || !content->is_string()) return at(key + ".content", "missing or not a string");
    auto idj = e.find("id");
    if (idj == e.end() || !idj->is_number_integer()) return at(key + ".id", "missing or not an integer");
    bpe::AddedToken t;
    t.content = content->get<std::string>();
    if (t.content.empty()) continue;  // HF ignores empty tokens
    EL_TRY(check_token_string(t.content, key + ".content", at));
    EL_TRY_ASSIGN(t.single_word, get_bool(e, "single_word", false, key, at));
    EL_TRY_ASSIGN(t.lstrip, get_bool(e, "lstrip", false, key, at));
    EL_TRY_ASSIGN(t.rstrip, get_bool(e, "rstrip", false, key, at));
    EL_TRY_ASSIGN(t.normalized, get_bool(e, "normalized", true, key, at));
    EL_TRY_ASSIGN(t.special, get_bool(e, "special", false, key, at));
    if (m.added_ids.count(t.content) != 0)
      return at(key + ".content", fmt::format("'{}' is listed twice", t.content));
    int64_t expected;
    if (auto v = m.vocab.find(t.content); v != m.vocab.end()) {
      expected = v->second;
    } else {
      expected = next_id++;
    }
    const int64_t id = idj->get<int64_t>();
    if (id != expected)
      return at(key + ".id", fmt::format("'{}' has id {}, but Hugging Face tokenizers would give it id {} ({})",
                                         t.content, id, expected,
                                         expected < static_cast<int64_t>(m.vocab.size()) ? "its model.vocab id"
                                                                                         : "the next free id"));
    if (id > kMaxBpeTokenId) return at(key + ".id", fmt::format("id {} above {}", id, kMaxBpeTokenId));
    t.id = static_cast<int32_t>(id);
    if (m.vocab.count(t.content) == 0 && model_ids.count(t.id) != 0)
      return at(key + ".id", fmt::format("id {} of '{}' is already a model.vocab id", id, t.content));
    if (!taken.insert(t.id).second) return at(key + ".id", fmt::format("id {} is used twice", id));
    m.added_ids.emplace(t.content, t.id);
    m.added.push_back(std::move(t));
  }
  return Status::Ok();
}

// Fills the tries and the per-id tables once model and added tokens are read.
Status finish(BpeTokenizer::Impl& m) {
  std::unordered_set<std::string> special_contents;
  std::vector<std::string> added_token_form(m.added.size());  // HF's simple_id_to_token
  for (size_t i = 0; i < m.added.size(); ++i) {
    const bpe::AddedToken& t = m.added[i];
    if (t.special) special_contents.insert(t.content);
    std::string form = t.content;
    if (t.normalized && m.nfc) {
      EL_TRY_ASSIGN(form, bpe::nfc(t.content));
    }
    (t.normalized ? m.normalized_trie : m.raw_trie).insert(form, static_cast<int32_t>(i));
    added_token_form[i] = std::move(form);
  }
  int32_t max_id = -1;
  for (const auto& [tok, id] : m.vocab) max_id = std::max(max_id, id);
  for (const auto& t : m.added) max_id = std::max(max_id, t.id);
  const auto n = static_cast<size_t>(max_id + 1);
  m.id_token.assign(n, {});
  m.id_bytes.assign(n, {});
  m.id_flags.assign(n, 0);
  auto set = [&](int32_t id, const std::string& form) {
    const auto i = static_cast<size_t>(id);
    m.id_token[i] = form;
    m.id_flags[i] = BpeTokenizer::Impl::kHasToken | (special_contents.count(form) ? BpeTokenizer::Impl::kSpecial : 0);
    // HF's ByteLevel decoder: characters of the byte alphabet become their
    // bytes; a token with any other character is emitted as it is.
    std::string bytes;
    for (size_t p = 0; p < form.size();) {
      char32_t cp;
      p += static_cast<size_t>(bpe::decode_utf8(form, p, &cp));
      const int b = bpe::char_byte(cp);
      if (b < 0) {
        bytes = form;
        break;
      }
      bytes += static_cast<char>(b);
    }
    m.id_bytes[i] = std::move(bytes);
  };
  for (const auto& [tok, id] : m.vocab) set(id, tok);
  for (size_t i = 0; i < m.added.size(); ++i) set(m.added[i].id, added_token_form[i]);  // added tokens win
  return Status::Ok();
}

// bos/eos/pad: tokenizer_config.json's strings or {"content": ...}, else guesses.
Status read_special_ids(const BpeTokenizer& tok, std::string_view config_json, const std::string& config_source,
                        BpeTokenizer::Impl& m) {
  struct Slot {
    const char* key;
    std::optional<int32_t>* id;
    std::vector<const char*> guesses;
  };
  const Slot slots[] = {
      {"bos_token", &m.bos, {"<|begin_of_text|>", "<s>", "<|startoftext|>"}},
      {"eos_token", &m.eos, {"<|end_of_text|>", "</s>", "<|endoftext|>"}},
      {"pad_token", &m.pad, {"<pad>", "<|pad|>", "<|finetune_right_pad_id|>"}},
  };
  if (config_json.empty()) {
    for (const Slot& s : slots)
      for (const char* g : s.guesses)
        if (auto id = tok.token_to_id(g); id && !*s.id) *s.id = id;
    return Status::Ok();
  }
  const Where at{config_source};
  json cfg;
  try {
    cfg = json::parse(config_json);
  } catch (const json::exception& e) {
    return make_error(fmt::format("malformed JSON: {}", e.what()), config_source);
  }
  if (!cfg.is_object()) return make_error("expected a JSON object", config_source);
  for (const Slot& s : slots) {
    auto it = cfg.find(s.key);
    if (it == cfg.end() || it->is_null()) continue;
    const json* content = &*it;
    if (it->is_object()) {
      auto c = it->find("content");
      if (c == it->end()) return at(s.key, "an object without \"content\"");
      content = &*c;
    }
    if (!content->is_string()) return at(s.key, fmt::format("expected a token string, found {}", json_type(*content)));
    auto id = tok.token_to_id(content->get<std::string>());
    if (!id) return at(s.key, fmt::format("'{}' is not a token of the tokenizer", content->get<std::string>()));
    *s.id = id;
  }
  return Status::Ok();
}

}  // namespace

Result<BpeTokenizer> BpeTokenizer::from_json(std::string_view text, const std::string& source,
                                             std::string_view config_json, const std::string& config_source) {
  if (const std::string missing = bpe::support_missing(); !missing.empty())
    return make_error(missing, source, "install the packages, or load a SentencePiece tokenizer.model");
  if (static_cast<int64_t>(text.size()) > kMaxTokenizerJsonBytes)
    return make_error(fmt::format("{} bytes is more than a tokenizer.json may hold ({})", text.size(),
                                  kMaxTokenizerJsonBytes),
                      source);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return make_error(fmt::format("malformed JSON: {}", e.what()), source);
  }
  const Where at{source};
  if (!root.is_object()) return make_error("expected a JSON object (a tokenizer.json)", source);
  if (auto v = root.find("version"); v != root.end() && !(v->is_string() && v->get<std::string>() == "1.0"))
    return at("version", fmt::format("unknown tokenizer.json version {}", v->dump()));
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  EL_TRY(read_model(root, *impl, at));
  EL_TRY(read_normalizer(root, *impl, at));
  EL_TRY(read_pre_tokenizer(root, *impl, at));
  EL_TRY(read_decoder(root, at));
  EL_TRY(read_added_tokens(root, *impl, at));
  EL_TRY(finish(*impl));
  root = json();  // free the DOM before the config is read
  BpeTokenizer tok(std::move(impl));
  EL_TRY(read_special_ids(tok, config_json, config_source, *tok.impl_));
  return tok;
}

Result<BpeTokenizer> BpeTokenizer::load(const std::string& path) {
  if (const std::string missing = bpe::support_missing(); !missing.empty())
    return make_error(missing, path, "install the packages, or load a SentencePiece tokenizer.model");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return make_error("tokenizer.json not found", path);
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return make_error(fmt::format("cannot read the size: {}", ec.message()), path);
  if (static_cast<int64_t>(size) > kMaxTokenizerJsonBytes)
    return make_error(fmt::format("{} bytes is more than a tokenizer.json may hold ({})", size,
                                  kMaxTokenizerJsonBytes),
                      path);
  EL_TRY_ASSIGN(const std::string text, io::read_file(path));
  const std::string config_path =
      (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  std::string config;
  if (std::filesystem::is_regular_file(config_path, ec)) {
    if (static_cast<int64_t>(std::filesystem::file_size(config_path, ec)) > kMaxTokenizerConfigBytes)
      return make_error(fmt::format("more than {} bytes", kMaxTokenizerConfigBytes), config_path);
    EL_TRY_ASSIGN(config, io::read_file(config_path));
  }
  return from_json(text, path, config, config_path);
}

}  // namespace el::data
