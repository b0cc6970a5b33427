// sft_format.cpp — built-in chat templates and Conversation -> ids + loss mask.
#include "data/sft_format.h"

#include <algorithm>

namespace el::data {

namespace {

constexpr const char* kAlpacaPreamble =
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.";
constexpr const char* kAlpacaPreambleInput =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.";

ChatTemplate alpaca_template() {
  ChatTemplate t;
  t.name = "alpaca";
  t.prefix = "{bos}";
  t.system = "{content}\n\n";
  t.default_system = kAlpacaPreamble;
  t.default_system_with_input = kAlpacaPreambleInput;
  t.user = "### Instruction:\n{content}\n\n### Response:\n";
  t.user_with_input = "### Instruction:\n{content}\n\n### Input:\n{input}\n\n### Response:\n";
  t.assistant_prefix = "";
  t.assistant = "{content}{eos}";
  t.assistant_suffix = "\n\n";
  t.suffix_after_last = false;
  return t;
}

ChatTemplate llama3_template() {
  ChatTemplate t;
  t.name = "llama3";
  t.prefix = "<|begin_of_text|>";
  t.system = "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>";
  t.user = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>";
  t.user_with_input = "<|start_header_id|>user<|end_header_id|>\n\n{content}\n\n{input}<|eot_id|>";
  t.assistant_prefix = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  t.assistant = "{content}<|eot_id|>";
  t.trim_content = true;
  return t;
}

ChatTemplate chatml_template() {
  ChatTemplate t;
  t.name = "chatml";
  t.system = "<|im_start|>system\n{content}<|im_end|>\n";
  t.default_system = "You are a helpful assistant.";
  t.user = "<|im_start|>user\n{content}<|im_end|>\n";
  t.user_with_input = "<|im_start|>user\n{content}\n\n{input}<|im_end|>\n";
  t.assistant_prefix = "<|im_start|>assistant\n";
  t.assistant = "{content}<|im_end|>";
  t.assistant_suffix = "\n";
  return t;
}

std::string_view trim_ascii(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

bool is_ident(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

Result<ChatTemplate> chat_template_by_name(std::string_view name) {
  if (name == "alpaca") return alpaca_template();
  if (name == "llama3") return llama3_template();
  if (name == "chatml") return chatml_template();
  return make_error(fmt::format("unknown chat template '{}'", name), "--template",
                    "use alpaca, chatml (Qwen2) or llama3");
}

std::vector<std::string> chat_template_names() { return {"alpaca", "chatml", "llama3"}; }

int64_t TokenizedSample::loss_tokens() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m;
  return n;
}

Result<SftFormatter::Parts> SftFormatter::parse(std::string_view f, std::string_view field,
                                                const ChatTemplate& tmpl,
                                                const TextTokenizer& tok) {
  const std::string where = fmt::format("chat template '{}': {}", tmpl.name, field);
  Parts parts;
  auto literal = [&](std::string_view s) {
    if (s.empty()) return;
    if (parts.empty() || parts.back().kind != Part::literal) parts.push_back({Part::literal, {}, -1});
    parts.back().text.append(s);
  };
  size_t i = 0;
  while (i < f.size()) {
    if (f[i] == '{') {
      const size_t close = f.find('}', i);
      const std::string_view name =
          close == std::string_view::npos ? std::string_view() : f.substr(i + 1, close - i - 1);
      if (is_ident(name)) {
        if (name == "content") parts.push_back({Part::content, {}, -1});
        else if (name == "input") parts.push_back({Part::input, {}, -1});
        else if (name == "bos") {
          // Optional: Qwen2-style tokenizers have no BOS and models trained
          // with them never see one.
          if (auto id = tok.bos_id()) parts.push_back({Part::special, tok.decode({*id}), *id});
        } else if (name == "eos") {
          auto id = tok.eos_id();
          if (!id)
            return make_error(
                fmt::format("the tokenizer ({}) has no EOS token, which the template needs",
                            tok.source_path()),
                where, "use a chat template that ends turns with a special token");
          parts.push_back({Part::special, tok.decode({*id}), *id});
        } else {
          return make_error(fmt::format("unknown placeholder '{{{}}}'", name), where,
                            "placeholders: {content} {input} {bos} {eos}");
        }
        i = close + 1;
        continue;
      }
    } else if (f.compare(i, 2, "<|") == 0) {
      const size_t close = f.find("|>", i + 2);
      if (close != std::string_view::npos) {
        const std::string_view token = f.substr(i, close + 2 - i);
        auto id = tok.token_to_id(token);
        if (!id)
          return make_error(
              fmt::format("the tokenizer ({}) has no special token '{}'", tok.source_path(), token),
              where,
              "the template belongs to another model family: use the model's own template "
              "(llama3 for Llama 3, chatml for Qwen2), or alpaca");
        parts.push_back({Part::special, std::string(token), *id});
        i = close + 2;
        continue;
      }
    }
    literal(f.substr(i, 1));
    ++i;
  }
  for (const Part& p : parts)
    if (p.kind == Part::special && (p.id < 0 || p.id >= tok.vocab_size()))
      return make_error(fmt::format("the tokenizer ({}) maps '{}' to id {}, outside [0, {})",
                                    tok.source_path(), p.text, p.id, tok.vocab_size()),
                        where);
  return parts;
}

Result<SftFormatter> SftFormatter::create(const ChatTemplate& tmpl, const TextTokenizer& tokenizer,
                                          std::optional<std::string> system_prompt) {
  SftFormatter f;
  f.tmpl_ = tmpl;
  f.tok_ = &tokenizer;
  auto has_content = [](const Parts& p) {
    return std::any_of(p.begin(), p.end(), [](const Part& x) { return x.kind == Part::content; });
  };
  struct Field {
    const std::string* fmt;
    Parts* out;
    const char* name;
    bool needs_content;
  };
  const Field fields[] = {{&tmpl.prefix, &f.prefix_, "prefix", false},
                          {&tmpl.system, &f.system_, "system", true},
                          {&tmpl.user, &f.user_, "user", true},
                          {&tmpl.user_with_input, &f.user_with_input_, "user_with_input", false},
                          {&tmpl.assistant_prefix, &f.assistant_prefix_, "assistant_prefix", false},
                          {&tmpl.assistant, &f.assistant_, "assistant", true},
                          {&tmpl.assistant_suffix, &f.assistant_suffix_, "assistant_suffix", false}};
  for (const Field& fd : fields) {
    EL_TRY_ASSIGN(*fd.out, parse(*fd.fmt, fd.name, tmpl, tokenizer));
    if (fd.needs_content && !has_content(*fd.out))
      return make_error("the format has no {content}",
                        fmt::format("chat template '{}': {}", tmpl.name, fd.name));
  }
  f.default_system_ = system_prompt ? *system_prompt : tmpl.default_system;
  f.default_system_with_input_ = system_prompt ? *system_prompt
                                 : tmpl.default_system_with_input.empty()
                                     ? tmpl.default_system
                                     : tmpl.default_system_with_input;
  return f;
}

void SftFormatter::emit(const Parts& parts, std::string_view content, std::string_view input,
                        bool loss, std::vector<Piece>& out) const {
  if (tmpl_.trim_content) {
    content = trim_ascii(content);
    input = trim_ascii(input);
  }
  auto text = [&](std::string_view s) {
    if (s.empty()) return;
    if (out.empty() || out.back().special || out.back().loss != loss)
      out.push_back({false, {}, -1, loss});
    out.back().text.append(s);
  };
  for (const Part& p : parts) {
    switch (p.kind) {
      case Part::literal: text(p.text); break;
      case Part::content: text(content); break;
      case Part::input: text(input); break;
      case Part::special: out.push_back({true, p.text, p.id, loss}); break;
    }
  }
}

std::vector<SftFormatter::Piece> SftFormatter::pieces(const Conversation& conv) const {
  std::vector<Piece> out;
  emit(prefix_, {}, {}, false, out);
  const auto& turns = conv.turns;
  size_t first = 0;
  if (!turns.empty() && turns[0].role == SftRole::system) {
    emit(system_, turns[0].content, {}, false, out);
    first = 1;
  } else {
    const bool with_input = first < turns.size() && !turns[first].input.empty();
    const std::string& sys = with_input ? default_system_with_input_ : default_system_;
    if (!sys.empty()) emit(system_, sys, {}, false, out);
  }
  for (size_t i = first; i < turns.size(); ++i) {
    const SftTurn& t = turns[i];
    switch (t.role) {
      case SftRole::system:  // readers only allow it first; render as a user-less system turn
        emit(system_, t.content, {}, false, out);
        break;
      case SftRole::user:
        if (t.input.empty()) emit(user_, t.content, {}, false, out);
        else if (!user_with_input_.empty()) emit(user_with_input_, t.content, t.input, false, out);
        else emit(user_, t.content + "\n\n" + t.input, {}, false, out);
        break;
      case SftRole::assistant:
        emit(assistant_prefix_, {}, {}, false, out);
        emit(assistant_, t.content, {}, true, out);
        if (i + 1 < turns.size() || tmpl_.suffix_after_last)
          emit(assistant_suffix_, {}, {}, false, out);
        break;
    }
  }
  return out;
}

Result<TokenizedSample> SftFormatter::format(const Conversation& conv) const {
  TokenizedSample s;
  const int vocab = tok_->vocab_size();
  for (const Piece& p : pieces(conv)) {
    if (p.special) {
      s.ids.push_back(p.id);
      s.loss_mask.push_back(p.loss ? 1 : 0);
      continue;
    }
    const std::vector<int32_t> ids = tok_->encode(p.text);
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab)
        return make_error(fmt::format("the tokenizer returned id {} outside [0, {})", id, vocab),
                          tok_->source_path());
      s.ids.push_back(id);
      s.loss_mask.push_back(p.loss ? 1 : 0);
    }
  }
  return s;
}

std::string SftFormatter::render(const Conversation& conv) const {
  std::string out;
  for (const Piece& p : pieces(conv)) out += p.text;
  return out;
}

}  // namespace el::data
