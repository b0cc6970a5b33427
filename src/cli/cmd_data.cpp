// efficientllm data prepare / efficientllm tokenizer train|encode|decode — text to token shards.
#include <cstdio>

#include "cli/common.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "data/tokenizer_factory.h"

namespace el::cli {
namespace {

// The input list: the given paths, or the built-in corpus with --builtin.
Result<std::vector<std::string>> resolve_inputs(const std::vector<std::string>& paths, bool builtin) {
  if (builtin) return data::builtin_corpus_files();
  if (paths.empty()) {
    return make_error("no input files", "--input", "pass --input FILE_OR_DIR (repeatable) or --builtin");
  }
  return data::expand_inputs(paths);
}

}  // namespace

void add_data_command(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "Prepare token shards from text");
  data->require_subcommand(1);
  auto* prep = data->add_subcommand("prepare", "Tokenize text/JSONL files into train/val token shards");
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto builtin = std::make_shared<bool>(false);
  auto opts = std::make_shared<data::PrepareOptions>();
  prep->add_option("--input,-i", *inputs, "Text, Markdown, reST or JSON Lines files or directories");
  prep->add_flag("--builtin", *builtin, "Use the built-in corpus (python3-doc reST sources)");
  prep->add_option("--tokenizer", opts->tokenizer_path, "SentencePiece .model file")->required();
  prep->add_option("--out,-o", opts->out_dir, "Output directory (shards + dataset.json)")->required();
  prep->add_option("--val-fraction", opts->val_fraction, "Fraction of documents for validation")->capture_default_str();
  prep->add_option("--text-key", opts->text_key, "JSON key holding the text in JSON Lines")->capture_default_str();
  prep->add_option("--shard-tokens", opts->max_tokens_per_shard, "Maximum tokens per shard")->capture_default_str();
  prep->callback([&action, inputs, builtin, opts] {
    action = [inputs, builtin, opts]() -> int {
      auto files = resolve_inputs(*inputs, *builtin);
      if (!files.ok()) return report_error(files.error());
      opts->inputs = files.value();
      auto r = data::prepare_dataset(*opts);
      if (!r.ok()) return report_error(r.error());
      std::printf("%s\n", data::describe(r.value()).c_str());
      return 0;
    };
  });
}

void add_tokenizer_command(CLI::App& app, Action& action) {
  auto* tok = app.add_subcommand("tokenizer", "Train SentencePiece tokenizers; encode/decode with any tokenizer");
  tok->require_subcommand(1);
  auto* train = tok->add_subcommand("train", "Train a SentencePiece BPE tokenizer (libsentencepiece)");
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto builtin = std::make_shared<bool>(false);
  auto opts = std::make_shared<data::TokenizerTrainOptions>();
  train->add_option("--input,-i", *inputs, "Text, Markdown, reST or JSON Lines files or directories");
  train->add_flag("--builtin", *builtin, "Use the built-in corpus (python3-doc reST sources)");
  train->add_option("--out,-o", opts->model_prefix, "Output prefix: writes PREFIX.model and PREFIX.vocab")->required();
  train->add_option("--vocab-size", opts->vocab_size, "Vocabulary size")->capture_default_str();
  train->add_option("--model-type", opts->model_type, "bpe or unigram")->capture_default_str();
  train->add_option("--text-key", opts->text_key, "JSON key holding the text in JSON Lines")->capture_default_str();
  train->add_option("--max-sentences", opts->input_sentence_size, "Lines sampled for training (0 = all)")->capture_default_str();
  train->add_option("--seed", opts->seed, "Sampling seed")->capture_default_str();
  auto* encode = tok->add_subcommand("encode", "Print the token ids of a text");
  auto model = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  const char* tok_help = "tokenizer.json, SentencePiece .model, or a checkpoint directory holding one";
  encode->add_option("--tokenizer,--model,-m", *model, tok_help)->required();
  encode->add_option("text", *text, "Text to encode")->required();
  auto* decode = tok->add_subcommand("decode", "Print the text of token ids");
  auto ids = std::make_shared<std::vector<int32_t>>();
  auto skip_special = std::make_shared<bool>(false);
  decode->add_option("--tokenizer,--model,-m", *model, tok_help)->required();
  decode->add_flag("--skip-special", *skip_special, "Drop special tokens");
  decode->add_option("ids", *ids, "Token ids")->required();
  train->callback([&action, inputs, builtin, opts] {
    action = [inputs, builtin, opts]() -> int {
      auto files = resolve_inputs(*inputs, *builtin);
      if (!files.ok()) return report_error(files.error());
      opts->input_files = files.value();
      data::TokenizerTrainStats stats;
      Status st = data::train_tokenizer(*opts, &stats);
      if (!st.ok()) return report_error(st.error());
      std::printf("tokenizer: %s.model (%d pieces) from %lld documents, %lld of %lld lines, %.1f s\n",
                  opts->model_prefix.c_str(), opts->vocab_size, static_cast<long long>(stats.documents),
                  static_cast<long long>(stats.lines_used), static_cast<long long>(stats.lines_seen), stats.seconds);
      return 0;
    };
  });
  encode->callback([&action, model, text] {
    action = [model, text]() -> int {
      auto tok = data::load_text_tokenizer(*model);
      if (!tok.ok()) return report_error(tok.error());
      for (int32_t id : tok.value()->encode(*text)) std::printf("%d ", id);
      std::printf("\n");
      return 0;
    };
  });
  decode->callback([&action, model, ids, skip_special] {
    action = [model, ids, skip_special]() -> int {
      auto tok = data::load_text_tokenizer(*model);
      if (!tok.ok()) return report_error(tok.error());
      std::printf("%s\n", tok.value()->decode(*ids, *skip_special).c_str());
      return 0;
    };
  });
}

}  // namespace el::cli
