// sft_format.h — prompt templates as data: Conversation -> token ids + loss mask.
//
// A ChatTemplate is a handful of format strings (docs/FINETUNING.md prints the
// built-in ones verbatim). In them:
//   {content}   the turn's text (trimmed first when trim_content is set)
//   {input}     alpaca's input (user_with_input only)
//   {bos}       the tokenizer's BOS id; nothing when it has none (Qwen2)
//   {eos}       the tokenizer's EOS id; an Error when it has none
//   <|name|>    a special token, looked up whole with token_to_id(); an
//               Error at SftFormatter::create when the tokenizer lacks it
// Everything else is literal text. Built-in templates:
//   "alpaca"  the Stanford Alpaca prompt (alpaca-lora's "### Response:\n"
//             variant), response + EOS; for base models and SentencePiece
//             tokenizers.
//   "llama3"  Llama 3 Instruct: <|begin_of_text|>, <|start_header_id|>role
//             <|end_header_id|>\n\n content <|eot_id|>, content trimmed as
//             the official template does; no default system prompt.
//   "chatml"  Qwen2 / Qwen2.5 Instruct: <|im_start|>role\n content
//             <|im_end|>\n, default system "You are a helpful assistant."
//             (Qwen2's; pass Qwen2.5's own sentence as the system prompt to
//             match its template exactly).
//
// Loss mask: 1 exactly on the tokens of each assistant turn's `assistant`
// string ("{content}" plus its end-of-turn token: <|eot_id|>, <|im_end|>,
// EOS), 0 on everything else (BOS, system, user turns, the role headers in
// assistant_prefix and the separators in assistant_suffix).
//
// Tokenisation: the rendered conversation is a list of pieces (text with a
// loss flag, or a special id). Consecutive text pieces with the same flag are
// joined and encoded together, special ids are inserted directly, so a
// token never straddles the prompt/response boundary and the mask is exact.
// This equals encoding the whole rendered string wherever the tokenizer's
// pre-tokenizer already splits at that boundary (newline before the
// response: all built-in templates); elsewhere a token may differ there.
// Special-token text that appears inside {content} is encoded by the
// tokenizer like any text (TextTokenizer maps declared added tokens to their
// ids, as Hugging Face tokenizers do).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/sft_records.h"
#include "data/text_tokenizer.h"

namespace el::data {

struct ChatTemplate {
  std::string name;
  std::string prefix;            // once, before everything ("{bos}", "<|begin_of_text|>")
  std::string system;            // a system turn: "...{content}..."
  std::string default_system;    // content used when there is no system turn ("" = none)
  // Used instead of default_system when the first user turn has an input
  // (alpaca's two preambles); "" = default_system.
  std::string default_system_with_input;
  std::string user;              // a user turn: "...{content}..."
  std::string user_with_input;   // a user turn with alpaca's input: "{content}" and "{input}"
  std::string assistant_prefix;  // before each assistant turn, loss 0 (role header)
  std::string assistant;         // loss 1: "{content}" + end-of-turn token
  std::string assistant_suffix;  // after each assistant turn, loss 0 (separator)
  // Whether assistant_suffix also follows the conversation's last turn
  // (ChatML's template ends with "<|im_end|>\n"; alpaca's separator only
  // separates).
  bool suffix_after_last = true;
  bool trim_content = false;     // strip ASCII whitespace around every content/input
};

// The built-in templates (file comment). Error names the unknown template and
// lists the known ones.
Result<ChatTemplate> chat_template_by_name(std::string_view name);
std::vector<std::string> chat_template_names();  // {"alpaca", "chatml", "llama3"}

// One formatted sample: ids and a loss mask of the same length.
struct TokenizedSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;  // 1 = a response token (its prediction counts in the loss)
  int64_t loss_tokens() const;
};

// A template bound to a tokenizer (special tokens resolved once). Holds a
// pointer to the tokenizer, which must outlive it. format() is const and
// thread-safe when the tokenizer's encode() is.
class SftFormatter {
 public:
  // Errors: a format string with an unknown {placeholder}, a template
  // without {content} in system/user/assistant, a special token or EOS the
  // tokenizer does not have (names the token and the template).
  // `system_prompt`, when set, replaces the template's default system
  // content ("" = no system turn unless the conversation has one).
  static Result<SftFormatter> create(const ChatTemplate& tmpl, const TextTokenizer& tokenizer,
                                     std::optional<std::string> system_prompt = std::nullopt);

  // Ids + mask. Error only when an id the tokenizer returns is outside
  // [0, vocab_size) (a broken tokenizer).
  Result<TokenizedSample> format(const Conversation& conv) const;
  // The same conversation as one string (special tokens written out, {bos}/
  // {eos} as the tokenizer's token text when it can decode them): what
  // Hugging Face's apply_chat_template would produce, for checks and logs.
  std::string render(const Conversation& conv) const;

  const ChatTemplate& chat_template() const { return tmpl_; }

 private:
  SftFormatter() = default;  // create() builds a valid one
  // A format string, parsed: literal text, a placeholder, or a special id.
  struct Part {
    enum Kind { literal, content, input, special } kind = literal;
    std::string text;  // literal text; the token's text for special parts
    int32_t id = -1;   // special parts
  };
  using Parts = std::vector<Part>;
  struct Piece {  // a rendered piece: text or a special id, with its loss flag
    bool special = false;
    std::string text;
    int32_t id = -1;
    bool loss = false;
  };

  static Result<Parts> parse(std::string_view fmt, std::string_view field,
                             const ChatTemplate& tmpl, const TextTokenizer& tok);
  void emit(const Parts& parts, std::string_view content, std::string_view input, bool loss,
            std::vector<Piece>& out) const;
  std::vector<Piece> pieces(const Conversation& conv) const;

  ChatTemplate tmpl_;
  const TextTokenizer* tok_ = nullptr;
  std::string default_system_, default_system_with_input_;
  Parts prefix_, system_, user_, user_with_input_, assistant_prefix_, assistant_,
      assistant_suffix_;
};

}  // namespace el::data
