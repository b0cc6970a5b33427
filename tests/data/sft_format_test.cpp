// sft_format_test.cpp — chat templates: exact strings, ids, and loss masks
// exactly on the response tokens, for every built-in template.
#include <gtest/gtest.h>

#include "common/data_fake_tokenizer.h"
#include "data/sft_format.h"
#include "data/tokenizer.h"
#include "data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::FakeTokenizer;

Conversation conv(std::vector<SftTurn> turns) { return Conversation{std::move(turns)}; }
SftTurn user(std::string c, std::string input = {}) {
  return {SftRole::user, std::move(c), std::move(input)};
}
SftTurn assistant(std::string c) { return {SftRole::assistant, std::move(c), {}}; }
SftTurn system(std::string c) { return {SftRole::system, std::move(c), {}}; }

SftFormatter formatter(const std::string& name, const TextTokenizer& tok,
                       std::optional<std::string> system_prompt = std::nullopt) {
  auto t = chat_template_by_name(name);
  EXPECT_TRUE(t.ok());
  auto f = SftFormatter::create(t.value(), tok, std::move(system_prompt));
  EXPECT_TRUE(f.ok()) << (f.ok() ? "" : f.error().message());
  return std::move(f).value();
}

// The decoded text of each maximal run of loss-mask-1 tokens.
std::vector<std::string> loss_spans(const TokenizedSample& s, const TextTokenizer& tok) {
  std::vector<std::string> out;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= s.ids.size(); ++i) {
    if (i < s.ids.size() && s.loss_mask[i] != 0) {
      run.push_back(s.ids[i]);
    } else if (!run.empty()) {
      out.push_back(tok.decode(run));
      run.clear();
    }
  }
  return out;
}

// Formats, checks the sample against the rendered string (a byte tokenizer
// encodes both the same way) and returns it.
TokenizedSample format_checked(const SftFormatter& f, const FakeTokenizer& tok,
                               const Conversation& c, const std::string& expected_text) {
  EXPECT_EQ(f.render(c), expected_text);
  auto s = f.format(c);
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s->ids, tok.encode(expected_text));
  EXPECT_EQ(s->ids.size(), s->loss_mask.size());
  return s.value();
}

TEST(SftFormat, AlpacaNoInput) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("alpaca", tok);
  const auto s = format_checked(
      f, tok, conv({user("Say hi."), assistant("Hi!")}),
      "<s>Below is an instruction that describes a task. Write a response that appropriately "
      "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\nHi!</s>");
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"Hi!</s>"}));
  EXPECT_EQ(s.loss_tokens(), 4);  // 'H' 'i' '!' EOS
  EXPECT_EQ(s.ids.front(), tok.id("<s>"));
  EXPECT_EQ(s.loss_mask.front(), 0);
  EXPECT_EQ(s.ids.back(), tok.id("</s>"));
  EXPECT_EQ(s.loss_mask.back(), 1);
}

TEST(SftFormat, AlpacaWithInputUsesItsOwnPreambleAndSection) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("alpaca", tok);
  const auto s = format_checked(
      f, tok, conv({user("Translate to French.", "Good morning"), assistant("Bonjour")}),
      "<s>Below is an instruction that describes a task, paired with an input that provides "
      "further context. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\n"
      "Bonjour</s>");
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"Bonjour</s>"}));
}

TEST(SftFormat, AlpacaMultiTurnSystemAndNoBos) {
  FakeTokenizer::Options o;
  o.bos = "";  // Qwen2-style: {bos} renders nothing
  FakeTokenizer tok(o);
  const SftFormatter f = formatter("alpaca", tok);
  const auto s = format_checked(
      f, tok, conv({system("Be brief."), user("2+2?"), assistant("4"), user("3+3?"), assistant("6")}),
      "Be brief.\n\n### Instruction:\n2+2?\n\n### Response:\n4</s>\n\n"
      "### Instruction:\n3+3?\n\n### Response:\n6</s>");
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"4</s>", "6</s>"}));
}

TEST(SftFormat, Llama3) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("llama3", tok);
  // Content is trimmed, as Llama 3's template does; no default system prompt.
  const auto s = format_checked(
      f, tok, conv({user("  Hi \n"), assistant("\nHello.  ")}),
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>");
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"Hello.<|eot_id|>"}));
  // Role headers are single special ids, never in the loss.
  EXPECT_EQ(s.ids[0], tok.id("<|begin_of_text|>"));
  EXPECT_EQ(s.ids[1], tok.id("<|start_header_id|>"));
}

TEST(SftFormat, Llama3MultiTurnWithSystemAndInput) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("llama3", tok);
  const auto s = format_checked(
      f, tok,
      conv({system("Be terse."), user("Translate.", "chat"), assistant("cat"), user("Again?"),
            assistant("tac")}),
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nTranslate.\n\nchat<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\ncat<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nAgain?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\ntac<|eot_id|>");
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"cat<|eot_id|>", "tac<|eot_id|>"}));
}

TEST(SftFormat, ChatmlDefaultSystemAsQwen2) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("chatml", tok);
  const auto s = format_checked(
      f, tok, conv({user("Hi"), assistant("Hello.")}),
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello.<|im_end|>\n");
  // The end-of-turn token counts; the newline after it does not.
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"Hello.<|im_end|>"}));
  EXPECT_EQ(s.loss_mask.back(), 0);
  EXPECT_EQ(s.ids.back(), '\n');
}

TEST(SftFormat, ChatmlSystemPromptOverrideAndConversationSystem) {
  FakeTokenizer tok;
  const Conversation c = conv({user("Hi"), assistant("Yo")});
  EXPECT_EQ(formatter("chatml", tok, std::string()).render(c),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
  EXPECT_EQ(formatter("chatml", tok, "Be brief.").render(c),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nYo<|im_end|>\n");
  // A system turn in the data wins over the default.
  EXPECT_EQ(formatter("chatml", tok).render(conv({system("S"), user("Hi"), assistant("Yo")})),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nYo<|im_end|>\n");
  // Alpaca: the override replaces both preambles.
  EXPECT_EQ(formatter("alpaca", tok, "P").render(conv({user("I", "x"), assistant("O")})),
            "<s>P\n\n### Instruction:\nI\n\n### Input:\nx\n\n### Response:\nO</s>");
}

TEST(SftFormat, NoTokenStraddlesThePromptResponseBoundary) {
  // "\nH" and "He" are merges: encoding the whole string would fuse the
  // prompt's last newline with the response's first letter.
  FakeTokenizer::Options o;
  o.merges = {"\nH", "He"};
  FakeTokenizer tok(o);
  const SftFormatter f = formatter("chatml", tok, std::string());
  const Conversation c = conv({user("Hi"), assistant("Hello")});
  const auto s = f.format(c).value();
  EXPECT_NE(s.ids, tok.encode(f.render(c)));  // the whole string fuses "\nH"
  EXPECT_EQ(tok.decode(s.ids), f.render(c));  // but the text is the same
  EXPECT_EQ(loss_spans(s, tok), (std::vector<std::string>{"Hello<|im_end|>"}));
  // Inside a segment merges still apply: "He" is one id.
  const int32_t he = tok.vocab_size() - 1;
  EXPECT_NE(std::find(s.ids.begin(), s.ids.end(), he), s.ids.end());
}

TEST(SftFormat, SpecialTokenTextInsideContentIsEncodedByTheTokenizer) {
  FakeTokenizer tok;
  const SftFormatter f = formatter("chatml", tok, std::string());
  const auto s = f.format(conv({user("x<|im_end|>y"), assistant("z")})).value();
  // As with Hugging Face tokenizers, the added token in the text becomes its id.
  EXPECT_EQ(std::count(s.ids.begin(), s.ids.end(), tok.id("<|im_end|>")), 3);
}

TEST(SftFormat, TemplateErrors) {
  expect_error(chat_template_by_name("vicuna"), {"unknown chat template 'vicuna'", "llama3"});
  EXPECT_EQ(chat_template_names(), (std::vector<std::string>{"alpaca", "chatml", "llama3"}));

  FakeTokenizer::Options o;
  o.specials = {"<s>", "</s>"};
  o.pad = "";
  FakeTokenizer plain(o);
  expect_error(SftFormatter::create(chat_template_by_name("chatml").value(), plain),
               {"chat template 'chatml': system", "no special token '<|im_start|>'",
                "fake-tokenizer", "use the model's own template"});
  expect_error(SftFormatter::create(chat_template_by_name("llama3").value(), plain),
               {"chat template 'llama3': prefix", "'<|begin_of_text|>'"});
  o.eos = "";
  FakeTokenizer no_eos(o);
  expect_error(SftFormatter::create(chat_template_by_name("alpaca").value(), no_eos),
               {"chat template 'alpaca': assistant", "has no EOS token"});

  FakeTokenizer tok;
  ChatTemplate t = chat_template_by_name("alpaca").value();
  t.user = "Q: {question}\n";
  expect_error(SftFormatter::create(t, tok),
               {"chat template 'alpaca': user", "unknown placeholder '{question}'"});
  t = chat_template_by_name("alpaca").value();
  t.assistant = "{eos}";
  expect_error(SftFormatter::create(t, tok),
               {"chat template 'alpaca': assistant", "the format has no {content}"});
  // Braces that are not a placeholder stay literal text.
  t = chat_template_by_name("alpaca").value();
  t.user = "{ {content} }\n";
  t.prefix = "";
  t.default_system = "";
  auto f = SftFormatter::create(t, tok);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->render(conv({user("q"), assistant("a")})), "{ q }\na</s>");
}

// ---- the same with a real subword tokenizer (SentencePiece, trained once per process)

class SentencePieceText : public TextTokenizer {
 public:
  explicit SentencePieceText(Tokenizer t) : t_(std::move(t)) {}
  std::vector<int32_t> encode(std::string_view text) const override { return t_.encode(text); }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return t_.decode(ids); }
  int vocab_size() const override { return t_.vocab_size(); }
  std::optional<int32_t> bos_id() const override { return t_.bos_id(); }
  std::optional<int32_t> eos_id() const override { return t_.eos_id(); }
  std::optional<int32_t> pad_id() const override { return std::nullopt; }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    for (int i = 0; i < t_.vocab_size(); ++i)
      if (t_.id_to_piece(i) == token) return i;
    return std::nullopt;
  }
  const std::string& source_path() const override { return t_.model_path(); }

 private:
  Tokenizer t_;
};

TEST(SftFormat, SentencePieceAlpacaMaskDecodesToTheResponse) {
  SentencePieceText tok(Tokenizer::load(testing::shared_tokenizer_model()).value());
  const SftFormatter f = formatter("alpaca", tok);
  const std::string answer = "The interpreter reads each line, then runs it.\n  Indented too.";
  const auto s = f.format(conv({user("Explain the loop.", "for x in range(3): print(x)"),
                                assistant(answer)}))
                     .value();
  std::vector<int32_t> response;
  for (size_t i = 0; i < s.ids.size(); ++i)
    if (s.loss_mask[i] != 0) response.push_back(s.ids[i]);
  ASSERT_FALSE(response.empty());
  EXPECT_EQ(response.back(), *tok.eos_id());
  response.pop_back();
  EXPECT_EQ(tok.decode(response, false), answer);
  EXPECT_EQ(s.ids.front(), *tok.bos_id());
  // A SentencePiece model has no chat special tokens.
  expect_error(SftFormatter::create(chat_template_by_name("chatml").value(), tok),
               {"no special token '<|im_start|>'", ".model"});
}

}  // namespace
}  // namespace el::data
