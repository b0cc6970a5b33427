// eval.cpp — validation perplexity and multiple-choice log-likelihood
// scoring (eval.h).
#include "infer/eval.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <numeric>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "data/loader.h"
#include "metrics/timer.h"
#include "ops/backend.h"

namespace el::infer {
namespace {

// The longest sequence the model runs: `requested`, or the card's limit.
Result<int64_t> resolve_length(const ModelCard& card, int64_t requested, const char* key) {
  if (requested < 0)
    return make_error(fmt::format("{} {} must be >= 0 (0 = the model's limit)", key, requested),
                      "eval options");
  int64_t len = requested;
  if (len == 0) {
    len = card.max_seq_len;
    if (card.sliding_window > 0) len = std::min<int64_t>(len, card.sliding_window);
  }
  EL_TRY(check_sequence_length(card, len));
  return len;
}

// Per-position NLL of logits[N, V] against targets[N] (i32 on the host; < 0
// = not scored): one fused log-softmax pass on the model's device, N floats
// back to the host.
std::vector<float> token_nll(const Tensor& logits, const std::vector<int32_t>& targets) {
  const auto n = static_cast<int64_t>(targets.size());
  const Device dev = logits.device();
  const Tensor flat = logits.view({n, logits.dim(-1)});
  const Tensor tgt = Tensor::from_ints(targets, {n}).to(dev);
  Tensor losses = Tensor::empty({n}, DType::f32, dev);
  Tensor lse = Tensor::empty({n}, DType::f32, dev);
  backend_for(dev).cross_entropy_forward(flat, tgt, losses, lse);
  return losses.to_floats();
}

// Windows of T + 1 tokens, one at a time, into caller buffers.
using WindowSource = std::function<void(int32_t* inputs, int32_t* targets)>;

Result<PerplexityResult> run_perplexity(const DecoderLM& model, int64_t T, int64_t windows,
                                        const WindowSource& next, const EvalOptions& o) {
  if (o.max_tokens > 0) windows = std::min(windows, o.max_tokens / T);
  NoGrad no_grad;
  metrics::Stopwatch watch;
  const Device dev = model.device();
  const int64_t B = o.batch_size;
  std::vector<int32_t> inputs, targets;
  double sum = 0.0;
  for (int64_t done = 0; done < windows;) {
    const int64_t rows = std::min(B, windows - done);
    inputs.resize(static_cast<size_t>(rows * T));
    targets.resize(static_cast<size_t>(rows * T));
    for (int64_t r = 0; r < rows; ++r) next(inputs.data() + r * T, targets.data() + r * T);
    const Tensor logits = model.forward(Tensor::from_ints(inputs, {rows, T}).to(dev));  // [rows, T, V]
    for (const float l : token_nll(logits, targets)) sum += l;
    done += rows;
  }
  backend_for(dev).synchronize();
  PerplexityResult r;
  r.windows = windows;
  r.seq_len = T;
  r.tokens = windows * T;
  r.mean_nll = sum / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = watch.seconds();
  return r;
}

Status check_perplexity_options(const EvalOptions& o) {
  if (o.batch_size < 1 || o.max_tokens < 0)
    return make_error(fmt::format("batch_size ({}) must be >= 1 and max_tokens ({}) >= 0",
                                  o.batch_size, o.max_tokens),
                      "eval options");
  return Status::Ok();
}

Status check_max_tokens(int64_t max_tokens, int64_t T) {
  if (max_tokens > 0 && max_tokens < T)
    return make_error(fmt::format("max_tokens {} is smaller than one window of seq_len {}",
                                  max_tokens, T),
                      "eval options", "raise max_tokens or lower seq_len");
  return Status::Ok();
}

}  // namespace

Result<PerplexityResult> evaluate_perplexity(const DecoderLM& model,
                                             const std::vector<std::string>& shard_paths,
                                             const EvalOptions& o) {
  EL_TRY(check_perplexity_options(o));
  EL_TRY_ASSIGN(const int64_t T, resolve_length(model.card(), o.seq_len, "seq_len"));
  EL_TRY(check_max_tokens(o.max_tokens, T));
  // Batches of one window: the loader's sequential walk is exactly the
  // trainer's window order, and we batch them ourselves (partial last batch).
  EL_TRY_ASSIGN(data::DataLoader loader,
                data::DataLoader::open(shard_paths, model.card().vocab_size, 1, T, 0));
  return run_perplexity(model, T, loader.num_sequential_batches(),
                        [&](int32_t* in, int32_t* tg) { loader.next_sequential_into(in, tg); }, o);
}

Result<PerplexityResult> evaluate_perplexity(const DecoderLM& model,
                                             std::span<const int32_t> tokens,
                                             const EvalOptions& o) {
  EL_TRY(check_perplexity_options(o));
  EL_TRY_ASSIGN(const int64_t T, resolve_length(model.card(), o.seq_len, "seq_len"));
  EL_TRY(check_max_tokens(o.max_tokens, T));
  const int vocab = model.card().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return make_error(fmt::format("token {} at index {} is outside the model's vocabulary [0, {})",
                                    tokens[i], i, vocab),
                        "perplexity tokens", "use the tokenizer the model was trained with");
  }
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t windows = n >= T + 1 ? (n - 1) / T : 0;
  if (windows == 0)
    return make_error(fmt::format("{} tokens hold no window of seq_len + 1 = {} tokens", n, T + 1),
                      "perplexity tokens", "use more text or a shorter seq_len");
  int64_t w = 0;
  return run_perplexity(
      model, T, windows,
      [&](int32_t* in, int32_t* tg) {
        const int32_t* src = tokens.data() + w * T;
        std::copy(src, src + T, in);
        std::copy(src + 1, src + T + 1, tg);
        ++w;
      },
      o);
}

// ---- multiple choice --------------------------------------------------------

Result<EncodedPair> encode_pair(const data::TextTokenizer& tok, std::string_view context,
                                std::string_view continuation, std::optional<int32_t> prefix_arg) {
  // lm-eval's _encode_pair: trailing whitespace belongs to the continuation.
  size_t keep = context.size();
  while (keep > 0 && std::isspace(static_cast<unsigned char>(context[keep - 1]))) --keep;
  std::string ctx(context.substr(0, keep));
  std::string cont = std::string(context.substr(keep)) + std::string(continuation);
  EncodedPair p;
  p.context = tok.encode(ctx);
  const std::vector<int32_t> whole = tok.encode(ctx + cont);
  if (whole.size() > p.context.size()) {
    p.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(p.context.size()), whole.end());
  } else {
    p.continuation = tok.encode(cont);  // a merge swallowed the boundary (eval.h)
  }
  if (p.context.empty()) {
    const std::optional<int32_t> prefix =
        prefix_arg ? prefix_arg : tok.bos_id() ? tok.bos_id() : tok.eos_id();
    if (!prefix)
      return make_error("the context encodes to no token and the tokenizer has neither BOS nor "
                        "EOS to stand in for it",
                        tok.source_path(), "give every item a non-empty context");
    p.context.push_back(*prefix);
  }
  return p;
}

namespace {

// One (item, choice) sequence: input = (context + continuation) minus its
// last token, left-truncated; the continuation's tokens are predicted at
// the last `cont` positions.
struct Request {
  std::vector<int32_t> input;
  std::vector<int32_t> cont;
  bool truncated = false;
};

double stderr_of(int64_t hits, int64_t n) {
  if (n < 2) return 0.0;
  const double p = static_cast<double>(hits) / static_cast<double>(n);
  return std::sqrt(p * (1.0 - p) / static_cast<double>(n - 1));
}

// Index of the first maximum (numpy.argmax).
int argmax(const std::vector<double>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

Result<ChoiceResult> evaluate_choice(const DecoderLM& model, const data::TextTokenizer& tok,
                                     const data::ChoiceTask& task, const ChoiceOptions& o) {
  if (o.batch_size < 1 || o.max_items < 0)
    return make_error(fmt::format("batch_size ({}) must be >= 1 and max_items ({}) >= 0",
                                  o.batch_size, o.max_items),
                      "eval options");
  EL_TRY_ASSIGN(const int64_t max_len, resolve_length(model.card(), o.max_seq_len, "max_seq_len"));
  const size_t n_items = o.max_items > 0
                             ? std::min(task.items.size(), static_cast<size_t>(o.max_items))
                             : task.items.size();
  if (n_items == 0) return make_error("the task has no items", task.name);
  const int vocab = model.card().vocab_size;

  NoGrad no_grad;
  metrics::Stopwatch watch;
  // Requests in item order, per item: its choices with context, then (with
  // mutual_info) the same choices without.
  std::vector<Request> reqs;
  auto add_request = [&](const data::ChoiceItem& item, size_t c, std::string_view context,
                         std::string_view continuation) -> Status {
    EL_TRY_ASSIGN(EncodedPair p, encode_pair(tok, context, continuation, o.prefix_token));
    const auto cont_len = static_cast<int64_t>(p.continuation.size());
    if (cont_len > max_len)
      return make_error(fmt::format("choice {} is {} tokens long, more than max_seq_len {}", c,
                                    cont_len, max_len),
                        item.source, "shorten the choice or raise max_seq_len");
    Request r;
    r.input = std::move(p.context);
    r.input.insert(r.input.end(), p.continuation.begin(), p.continuation.end());
    for (const int32_t id : r.input) {
      if (id < 0 || id >= vocab)
        return make_error(fmt::format("the tokenizer made id {} (choice {}), outside the model's "
                                      "vocabulary [0, {})",
                                      id, c, vocab),
                          item.source, "use the tokenizer the model was trained with");
    }
    // (max_len + 1) tokens at most: the last one is only a target.
    const auto excess = static_cast<int64_t>(r.input.size()) - (max_len + 1);
    if (excess > 0) {
      r.input.erase(r.input.begin(), r.input.begin() + excess);
      r.truncated = true;
    }
    r.input.pop_back();
    r.cont = std::move(p.continuation);
    reqs.push_back(std::move(r));
    return Status::Ok();
  };
  for (size_t i = 0; i < n_items; ++i) {
    const data::ChoiceItem& item = task.items[i];
    if (item.choices.empty() || item.gold < 0 || item.gold >= static_cast<int>(item.choices.size()))
      return make_error(fmt::format("gold {} is not an index into {} choice(s)", item.gold,
                                    item.choices.size()),
                        item.source);
    for (size_t c = 0; c < item.choices.size(); ++c)
      EL_TRY(add_request(item, c, item.context, item.target_delimiter + item.choices[c]));
    if (o.mutual_info) {
      for (size_t c = 0; c < item.choices.size(); ++c) EL_TRY(add_request(item, c, "", item.choices[c]));
    }
  }

  // Longest first (as lm-eval), so a batch pads little.
  std::vector<size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return reqs[a].input.size() > reqs[b].input.size();
  });
  std::vector<double> logprob(reqs.size(), 0.0);
  ChoiceResult res;
  const Device dev = model.device();
  std::vector<int32_t> ids, targets;
  for (size_t at = 0; at < order.size();) {
    const size_t rows = std::min(order.size() - at, static_cast<size_t>(o.batch_size));
    const size_t L = reqs[order[at]].input.size();
    ids.assign(rows * L, 0);  // padding id 0: after every real token, never attended to
    targets.assign(rows * L, -1);
    for (size_t r = 0; r < rows; ++r) {
      const Request& q = reqs[order[at + r]];
      std::copy(q.input.begin(), q.input.end(), ids.begin() + static_cast<std::ptrdiff_t>(r * L));
      const size_t first = q.input.size() - q.cont.size();
      for (size_t k = 0; k < q.cont.size(); ++k) targets[r * L + first + k] = q.cont[k];
    }
    const Tensor logits = model.forward(
        Tensor::from_ints(ids, {static_cast<int64_t>(rows), static_cast<int64_t>(L)}).to(dev));
    const std::vector<float> nll = token_nll(logits, targets);  // [rows * L]
    for (size_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (size_t t = 0; t < L; ++t)
        if (targets[r * L + t] >= 0) s += nll[r * L + t];
      logprob[order[at + r]] = -s;
    }
    res.tokens_forwarded += static_cast<int64_t>(rows * L);
    at += rows;
  }
  backend_for(dev).synchronize();

  res.task = task.name;
  res.mutual_info = o.mutual_info;
  res.items = static_cast<int64_t>(n_items);
  res.sequences = static_cast<int64_t>(reqs.size());
  res.max_seq_len = max_len;
  for (size_t q = 0, i = 0; i < n_items; ++i) {
    const data::ChoiceItem& item = task.items[i];
    const size_t n_choices = item.choices.size();
    ChoiceRecord rec;
    rec.source = item.source;
    rec.gold = item.gold;
    std::vector<double> norm, mi;
    for (size_t c = 0; c < n_choices; ++c) {
      rec.logprob.push_back(logprob[q + c]);
      rec.tokens.push_back(static_cast<int64_t>(reqs[q + c].cont.size()));
      rec.bytes.push_back(static_cast<int64_t>(item.choices[c].size()));
      norm.push_back(logprob[q + c] / static_cast<double>(item.choices[c].size()));
      rec.truncated = rec.truncated || reqs[q + c].truncated;
      if (o.mutual_info) {
        rec.logprob_unconditional.push_back(logprob[q + n_choices + c]);
        mi.push_back(logprob[q + c] - logprob[q + n_choices + c]);
      }
    }
    q += o.mutual_info ? 2 * n_choices : n_choices;
    rec.pred = argmax(rec.logprob);
    rec.pred_norm = argmax(norm);
    res.correct += rec.pred == rec.gold ? 1 : 0;
    res.correct_norm += rec.pred_norm == rec.gold ? 1 : 0;
    if (o.mutual_info) {
      rec.pred_mutual_info = argmax(mi);
      res.correct_mutual_info += rec.pred_mutual_info == rec.gold ? 1 : 0;
    }
    res.truncated_items += rec.truncated ? 1 : 0;
    if (o.keep_records) res.records.push_back(std::move(rec));
  }
  const auto n = static_cast<double>(n_items);
  res.acc = static_cast<double>(res.correct) / n;
  res.acc_norm = static_cast<double>(res.correct_norm) / n;
  res.acc_stderr = stderr_of(res.correct, res.items);
  res.acc_norm_stderr = stderr_of(res.correct_norm, res.items);
  if (o.mutual_info) {
    res.acc_mutual_info = static_cast<double>(res.correct_mutual_info) / n;
    res.acc_mutual_info_stderr = stderr_of(res.correct_mutual_info, res.items);
  }
  res.seconds = watch.seconds();
  return res;
}

nlohmann::json to_json(const PerplexityResult& r) {
  return {{"mean_nll", r.mean_nll}, {"perplexity", r.perplexity}, {"tokens", r.tokens},
          {"windows", r.windows},   {"seq_len", r.seq_len},       {"seconds", r.seconds}};
}

nlohmann::json to_json(const ChoiceResult& r) {
  nlohmann::json j = {{"task", r.task},
                      {"items", r.items},
                      {"acc", r.acc},
                      {"acc_stderr", r.acc_stderr},
                      {"acc_norm", r.acc_norm},
                      {"acc_norm_stderr", r.acc_norm_stderr},
                      {"correct", r.correct},
                      {"correct_norm", r.correct_norm},
                      {"sequences", r.sequences},
                      {"tokens_forwarded", r.tokens_forwarded},
                      {"truncated_items", r.truncated_items},
                      {"max_seq_len", r.max_seq_len},
                      {"seconds", r.seconds}};
  if (r.mutual_info) {
    j["acc_mutual_info"] = r.acc_mutual_info;
    j["acc_mutual_info_stderr"] = r.acc_mutual_info_stderr;
    j["correct_mutual_info"] = r.correct_mutual_info;
  }
  if (!r.records.empty()) {
    nlohmann::json recs = nlohmann::json::array();
    for (const ChoiceRecord& c : r.records) {
      recs.push_back({{"source", c.source},     {"gold", c.gold},   {"pred", c.pred},
                      {"pred_norm", c.pred_norm}, {"logprob", c.logprob}, {"tokens", c.tokens},
                      {"bytes", c.bytes},       {"truncated", c.truncated}});
      if (r.mutual_info) {
        recs.back()["pred_mutual_info"] = c.pred_mutual_info;
        recs.back()["logprob_unconditional"] = c.logprob_unconditional;
      }
    }
    j["records"] = std::move(recs);
  }
  return j;
}

}  // namespace el::infer
