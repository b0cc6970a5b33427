// eval.h — quality measurements of the inference axis: validation perplexity
// over token shards, and multiple-choice accuracy by log-likelihood in the
// manner of lm-eval-harness (tasks from data/choice_task.h).
//
// Both only run model.forward and the backend's per-row cross-entropy on the
// logits (one log-softmax per scored position, in f32 on the model's device;
// only the per-position losses come back to the host, where they are summed
// in f64). So they work on CPU and CUDA models, any parameter dtype, and
// models whose projection slots were swapped for quantized ones.
//
//   auto ds = data::load_dataset_manifest(dir);
//   auto ppl = infer::evaluate_perplexity(*model, ds->val_shards, {.seq_len = 256});
//   auto task = data::builtin_choice_task("corpus-cloze");
//   auto mc = infer::evaluate_choice(*model, *tokenizer, *task, {});
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/choice_task.h"
#include "data/text_tokenizer.h"
#include "models/decoder_lm.h"

namespace el::infer {

// ---- perplexity -------------------------------------------------------------

struct EvalOptions {
  // Window length T; 0 = the card's max_seq_len (its sliding_window when
  // that is smaller). Checked with check_sequence_length.
  int64_t seq_len = 0;
  // At most this many predicted tokens: the first max_tokens / T windows;
  // 0 = every window. Error when > 0 and smaller than one window.
  int64_t max_tokens = 0;
  int64_t batch_size = 8;  // windows per forward (memory: B x T x V logits)
};

struct PerplexityResult {
  double mean_nll = 0;    // nats per predicted token, summed in f64
  double perplexity = 0;  // exp(mean_nll)
  int64_t tokens = 0;     // predicted tokens = windows x seq_len
  int64_t windows = 0;
  int64_t seq_len = 0;
  double seconds = 0;     // wall time of the whole evaluation, device synchronised
};

// Mean next-token NLL over non-overlapping windows of the validation shards
// (a prepared dataset's val_shards: the split the pretraining axis holds
// out). The windows are the trainer's validation windows (DataLoader's
// sequential walk): window w of a shard feeds tokens [wT, wT + T) and
// predicts [wT + 1, wT + T]; a shard's tail shorter than T + 1 tokens is
// left out; windows follow shard order. Unlike the trainer, the last batch
// may be partial, so the result does not depend on batch_size: with
// max_tokens = eval_batches x B x T it is the trainer's final validation
// loss (which averages per-batch f32 means). Errors: bad options, a shard
// that fails to open or holds an id >= the model's vocab (TokenShard::open),
// no shard with T + 1 tokens.
Result<PerplexityResult> evaluate_perplexity(const DecoderLM& model,
                                             const std::vector<std::string>& shard_paths,
                                             const EvalOptions& options);
// The same over one in-memory token stream (windows as in one shard).
// Errors also name the first id outside [0, vocab).
Result<PerplexityResult> evaluate_perplexity(const DecoderLM& model,
                                             std::span<const int32_t> tokens,
                                             const EvalOptions& options);

// ---- multiple choice --------------------------------------------------------

struct ChoiceOptions {
  // Longest scored sequence (context + choice) in tokens; longer ones lose
  // context tokens from the left. 0 = the card's max_seq_len (its
  // sliding_window when smaller).
  int64_t max_seq_len = 0;
  int64_t batch_size = 8;     // sequences per forward, padded to the longest
  int64_t max_items = 0;      // score the first N items; 0 = all
  bool keep_records = false;  // fill ChoiceResult::records
  // Also score every choice without its context and report
  // acc_mutual_info = mean of [argmax (logprob - logprob_unconditional) ==
  // gold] (lm-eval's metric of that name: the unconditional request is
  // ("", choice), no delimiter). It takes out how likely a choice's text is
  // on its own, which dominates the sum for small models. On corpus-cloze
  // (258 items, stderr ~0.03) the tiny card pretrained as the quick suite
  // does (400 steps, val ppl 131) scores acc 0.275, acc_norm 0.267, but
  // acc_mutual_info 0.357 (EOS prefix); the same card at random init 0.256,
  // 0.240 and 0.236.
  bool mutual_info = false;
  // The token that stands in for an empty context (lm-eval's
  // custom_prefix_token_id); unset = BOS, else EOS. Our own SentencePiece
  // models never see BOS in training (documents are separated by EOS), so
  // pass the tokenizer's EOS for them.
  std::optional<int32_t> prefix_token;
};

// One item's scores (ChoiceOptions::keep_records).
struct ChoiceRecord {
  std::string source;
  int gold = 0;
  int pred = 0;                  // argmax of logprob (first on ties, as numpy)
  int pred_norm = 0;             // argmax of logprob / bytes
  int pred_mutual_info = 0;      // argmax of logprob - logprob_unconditional (mutual_info)
  std::vector<double> logprob;   // per choice: sum of the continuation's token log-probs
  std::vector<double> logprob_unconditional;  // per choice, without context (mutual_info)
  std::vector<int64_t> tokens;   // per choice: continuation tokens scored
  std::vector<int64_t> bytes;    // per choice: UTF-8 bytes of the choice text
  bool truncated = false;        // some choice lost context tokens to max_seq_len
};

struct ChoiceResult {
  std::string task;
  int64_t items = 0;
  int64_t correct = 0, correct_norm = 0;
  double acc = 0, acc_norm = 0;
  // Standard error of the mean over items (lm-eval's mean_stderr:
  // sqrt(p (1 - p) / (n - 1)); 0 for one item).
  double acc_stderr = 0, acc_norm_stderr = 0;
  // With ChoiceOptions::mutual_info only (else 0 and left out of the JSON).
  bool mutual_info = false;
  int64_t correct_mutual_info = 0;
  double acc_mutual_info = 0, acc_mutual_info_stderr = 0;
  int64_t sequences = 0;         // (item, choice) pairs scored (twice with mutual_info)
  int64_t tokens_forwarded = 0;  // tokens run through the model, padding included
  int64_t truncated_items = 0;
  int64_t max_seq_len = 0;
  double seconds = 0;
  std::vector<ChoiceRecord> records;
};

// lm-eval's tokenisation of one (context, continuation) pair. Trailing
// whitespace of the context moves to the front of the continuation (so
// "ctx " + "x" is scored as "ctx" + " x"); then continuation =
// encode(context + continuation) minus its first |encode(context)| tokens:
// the tail, so the continuation is tokenised as it would be in running text.
// The boundary: when a merge across it makes encode(context + continuation)
// no longer than encode(context), the tail would be empty, and we take
// encode(continuation) instead (lm-eval would score nothing). An empty
// context encoding becomes the prefix token: `prefix` when given, else BOS,
// else EOS (lm-eval's prefix_token_id); Error when there is none.
struct EncodedPair {
  std::vector<int32_t> context, continuation;
};
Result<EncodedPair> encode_pair(const data::TextTokenizer& tokenizer, std::string_view context,
                                std::string_view continuation,
                                std::optional<int32_t> prefix = std::nullopt);

// Scores every (item, choice) as the sum of log p(continuation token |
// everything before it), with context + target_delimiter + choice encoded by
// encode_pair; one forward per sequence, batch_size sequences per forward
// (longest first, padded on the right: causal attention never sees the
// padding). acc = mean of [argmax logprob == gold]; acc_norm = mean of
// [argmax logprob / bytes(choice) == gold], bytes without the delimiter (lm-eval
// divides by len(choice) in characters: the same for ASCII text);
// acc_mutual_info with ChoiceOptions::mutual_info (see there).
// Errors: bad options, an empty task, an id the tokenizer makes that the
// model's vocab does not hold, a continuation longer than max_seq_len (names
// the item's source and the choice).
Result<ChoiceResult> evaluate_choice(const DecoderLM& model, const data::TextTokenizer& tokenizer,
                                     const data::ChoiceTask& task, const ChoiceOptions& options);

// JSON for reports (every field above; records only when kept).
nlohmann::json to_json(const PerplexityResult& r);
nlohmann::json to_json(const ChoiceResult& r);

}  // namespace el::infer
