#include "finetune/sft_trainer.h"

#include <cmath>
#include <filesystem>
#include <memory>

#include "autograd/tape.h"
#include "data/sft.h"
#include "data/sft_builtin.h"
#include "data/tokenizer_factory.h"
#include "finetune/peft_io.h"
#include "metrics/sampler.h"
#include "metrics/stats.h"
#include "metrics/timer.h"
#include "models/hf_model.h"
#include "ops/backend.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace el::finetune {

namespace fs = std::filesystem;

const char* method_name(Method m) {
  switch (m) {
    case Method::full: return "full";
    case Method::freeze: return "freeze";
    case Method::lora: return "lora";
    case Method::lora_plus: return "lora_plus";
    case Method::rslora: return "rslora";
    case Method::dora: return "dora";
    case Method::pissa: return "pissa";
  }
  return "?";
}

Result<Method> parse_method(std::string_view name) {
  for (Method m : {Method::full, Method::freeze, Method::lora, Method::lora_plus, Method::rslora,
                   Method::dora, Method::pissa}) {
    if (name == method_name(m)) return m;
  }
  if (name == "loraplus" || name == "lora+") return Method::lora_plus;
  return make_error(fmt::format("unknown fine-tuning method '{}'", name), "method",
                    "expected one of: full, freeze, lora, lora_plus, rslora, dora, pissa");
}

bool method_uses_adapters(Method m) { return m != Method::full && m != Method::freeze; }

nlohmann::json FinetuneConfig::to_json() const {
  nlohmann::json targets = lora.target_modules;
  return {{"hf_dir", hf_dir},
          {"init_checkpoint", init_checkpoint},
          {"card", card},
          {"tokenizer", tokenizer},
          {"data", data},
          {"format", format},
          {"template", template_name},
          {"cutoff_len", cutoff_len},
          {"val_fraction", val_fraction},
          {"skip_bad_records", skip_bad_records},
          {"max_records", max_records},
          {"synthetic_samples", synthetic_samples},
          {"method", method_name(method)},
          {"adapter_dir", adapter_dir},
          {"eval_only", eval_only},
          {"lora_r", lora.r},
          {"lora_alpha", lora.alpha},
          {"lora_dropout", lora.dropout},
          {"lora_targets", targets},
          {"loraplus_ratio", loraplus_ratio},
          {"freeze_mode", freeze.mode == FreezeConfig::Mode::last_k_trainable ? "last_k_trainable"
                                                                               : "first_k_frozen"},
          {"freeze_k", freeze.k},
          {"device", device.str()},
          {"precision", precision_name(precision)},
          {"batch_size", batch_size},
          {"grad_accum", grad_accum},
          {"seq_len", seq_len},
          {"pad_to_multiple", pad_to_multiple},
          {"epochs", epochs},
          {"steps", steps},
          {"lr", lr},
          {"warmup_ratio", warmup_ratio},
          {"weight_decay", weight_decay},
          {"beta1", beta1},
          {"beta2", beta2},
          {"grad_clip", grad_clip},
          {"eval_every", eval_every},
          {"eval_batches", eval_batches},
          {"seed", seed},
          {"timing_warmup_steps", timing_warmup_steps},
          {"merge", merge}};
}

Status validate_finetune_config(const FinetuneConfig& c) {
  const int sources = !c.hf_dir.empty() + !c.init_checkpoint.empty() + !c.card.empty();
  if (sources != 1) {
    return make_error(fmt::format("{} model sources given", sources), "finetune config",
                      "give exactly one of --hf DIR, --init CHECKPOINT or --model CARD");
  }
  if (c.synthetic_samples < 0) {
    return make_error("synthetic_samples must be >= 0", "finetune config: synthetic_samples");
  }
  if (c.synthetic_samples == 0 && c.data.empty()) {
    return make_error("no training data", "finetune config: data",
                      "give --data FILE... (or builtin), or --synthetic-samples N");
  }
  if (c.synthetic_samples > 0 && c.seq_len <= 1) {
    return make_error("synthetic samples need a fixed sequence length >= 2",
                      "finetune config: seq_len", "give --seq-len T");
  }
  if (!c.card.empty() && c.synthetic_samples == 0 && c.tokenizer.empty()) {
    return make_error("a model card with random weights needs a tokenizer for SFT data",
                      "finetune config: tokenizer", "give --tokenizer, or use --synthetic-samples");
  }
  if (c.batch_size < 1 || c.grad_accum < 1 || c.epochs < 1 || c.steps < 0 || c.seq_len < 0 ||
      c.eval_every < 0 || c.eval_batches < 0 || c.timing_warmup_steps < 0 || c.pad_to_multiple < 1) {
    return make_error(fmt::format("batch_size ({}), grad_accum ({}), epochs ({}) must be >= 1; steps "
                                  "({}), seq_len ({}), eval_every ({}), eval_batches ({}), "
                                  "timing_warmup_steps ({}) >= 0",
                                  c.batch_size, c.grad_accum, c.epochs, c.steps, c.seq_len,
                                  c.eval_every, c.eval_batches, c.timing_warmup_steps),
                      "finetune config");
  }
  if (!(c.lr > 0) || !std::isfinite(c.lr)) {
    return make_error(fmt::format("lr must be a positive number, got {}", c.lr), "finetune config: lr");
  }
  if (!(c.warmup_ratio >= 0 && c.warmup_ratio < 1)) {
    return make_error(fmt::format("warmup_ratio must be in [0, 1), got {}", c.warmup_ratio),
                      "finetune config: warmup_ratio");
  }
  if (!(c.val_fraction >= 0 && c.val_fraction < 1)) {
    return make_error(fmt::format("val_fraction must be in [0, 1), got {}", c.val_fraction),
                      "finetune config: val_fraction");
  }
  if (c.method == Method::lora_plus && !(c.loraplus_ratio > 0)) {
    return make_error(fmt::format("loraplus_ratio must be positive, got {}", c.loraplus_ratio),
                      "finetune config: loraplus_ratio");
  }
  if (c.merge && !method_uses_adapters(c.method)) {
    return make_error(fmt::format("--merge folds adapters into the weights; method '{}' has none",
                                  method_name(c.method)),
                      "finetune config: merge", "drop --merge: --out already writes the full model");
  }
  if (c.merge && c.out_dir.empty()) {
    return make_error("--merge needs --out DIR", "finetune config: merge");
  }
  if (!c.adapter_dir.empty() && !method_uses_adapters(c.method)) {
    return make_error(fmt::format("--adapter starts from adapters; method '{}' trains none",
                                  method_name(c.method)),
                      "finetune config: adapter_dir", "use an adapter method (lora, dora, ...)");
  }
  if (c.eval_only && (c.synthetic_samples == 0 && c.val_fraction <= 0)) {
    return make_error("--eval-only needs a validation split", "finetune config: val_fraction",
                      "give --val-fraction > 0");
  }
  if (method_uses_adapters(c.method)) EL_TRY(validate_lora_config(c.lora));
  return Status();
}

namespace {

struct LoadedModel {
  std::unique_ptr<DecoderLM> model;
  io::HfSaveOptions save_options;  // passthrough config keys of an HF source
  std::string tokenizer_dir;       // where the tokenizer files are (HF source)
};

Result<LoadedModel> load_model(const FinetuneConfig& c) {
  const DType dtype = precision_dtype(c.precision);
  LoadedModel out;
  if (!c.hf_dir.empty()) {
    EL_TRY_ASSIGN(HfModel hf, load_hf_model(c.hf_dir, c.device, dtype));
    out.model = std::move(hf.model);
    out.save_options.passthrough = hf.config.passthrough;
    out.tokenizer_dir = c.hf_dir;
    return out;
  }
  if (!c.init_checkpoint.empty()) {
    EL_TRY_ASSIGN(CheckpointState st, read_checkpoint_state(c.init_checkpoint));
    if (st.model_card_yaml.empty()) {
      return make_error("the checkpoint has no model card in its metadata", c.init_checkpoint,
                        "use a checkpoint written by `efficientllm train`");
    }
    EL_TRY_ASSIGN(ModelCard card, parse_model_card(st.model_card_yaml, c.init_checkpoint));
    EL_TRY_ASSIGN(out.model, DecoderLM::create(card, c.device, c.seed, dtype, false));
    EL_TRY_ASSIGN(CheckpointState loaded, load_checkpoint(c.init_checkpoint, *out.model, nullptr));
    (void)loaded;
    return out;
  }
  EL_TRY_ASSIGN(ModelCard card, find_model_card(c.card));
  EL_TRY_ASSIGN(out.model, DecoderLM::create(card, c.device, c.seed, dtype));
  return out;
}

// Samples of exactly T random tokens, every position after the first in the
// loss (the throughput yardstick's labels = ids).
std::shared_ptr<data::SftDataset> synthetic_dataset(int64_t samples, int64_t T, int vocab,
                                                    uint64_t seed) {
  auto ds = std::make_shared<data::SftDataset>();
  Rng rng(seed);
  data::TokenizedSample s;
  s.ids.resize(T);
  s.loss_mask.assign(T, 1);
  for (int64_t i = 0; i < samples; ++i) {
    for (auto& id : s.ids) id = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(vocab));
    ds->add(s, i);
  }
  return ds;
}

struct PreparedData {
  std::shared_ptr<const data::SftDataset> train, val;
  int32_t pad_id = 0;
  nlohmann::json description;
};

Result<PreparedData> prepare_data(const FinetuneConfig& c, const DecoderLM& model,
                                  const std::string& tokenizer_dir) {
  PreparedData out;
  const int vocab = static_cast<int>(model.card().vocab_size);
  if (c.synthetic_samples > 0) {
    EL_TRY(check_sequence_length(model.card(), c.seq_len));  // max_seq_len and sliding_window
    out.train = synthetic_dataset(c.synthetic_samples, c.seq_len, vocab, c.seed);
    const int64_t val_samples = std::max<int64_t>(c.batch_size, c.synthetic_samples / 10);
    out.val = synthetic_dataset(val_samples, c.seq_len, vocab, c.seed ^ 0x9e3779b97f4a7c15ull);
    out.description = {{"kind", "synthetic"},
                       {"train_samples", c.synthetic_samples},
                       {"val_samples", val_samples},
                       {"seq_len", c.seq_len},
                       {"note", "uniform random tokens, every position in the loss (throughput only)"}};
    return out;
  }
  const std::string tok_path = !c.tokenizer.empty() ? c.tokenizer : tokenizer_dir;
  if (tok_path.empty()) {
    return make_error("no tokenizer for the SFT data", "finetune config: tokenizer",
                      "give --tokenizer (the .model of the dataset the checkpoint was trained on)");
  }
  EL_TRY_ASSIGN(std::unique_ptr<data::TextTokenizer> tok, data::load_text_tokenizer(tok_path));
  if (tok->vocab_size() > vocab) {
    return make_error(fmt::format("the tokenizer has {} ids but the model's vocab_size is {}",
                                  tok->vocab_size(), vocab),
                      tok_path, "use the tokenizer the model was trained with");
  }
  data::SftOptions o;
  for (const std::string& d : c.data) {
    if (d == "builtin") {
      // Records derived from the built-in corpus (data/sft_builtin.h), cached
      // next to the other derived data.
      EL_TRY_ASSIGN(std::string path, data::ensure_builtin_sft(c.cache_dir, {}));
      o.inputs.push_back(path);
    } else {
      o.inputs.push_back(d);
    }
  }
  EL_TRY_ASSIGN(o.read.format, data::parse_sft_format(c.format));
  o.read.on_bad_record = c.skip_bad_records ? data::BadRecordPolicy::skip : data::BadRecordPolicy::fail;
  o.read.max_records = c.max_records;
  o.template_name = c.template_name;
  o.cutoff_len = c.cutoff_len;
  o.val_fraction = c.val_fraction;
  o.seed = c.seed;
  EL_TRY_ASSIGN(data::SftData d, data::load_sft_data(o, *tok));
  if (c.seq_len > 0 && d.stats.max_length > c.seq_len) {
    return make_error(fmt::format("the longest sample has {} tokens, more than --seq-len {}",
                                  d.stats.max_length, c.seq_len),
                      "finetune config: seq_len", "set --cutoff-len <= --seq-len, or --seq-len 0");
  }
  const int64_t longest = c.seq_len > 0 ? c.seq_len : d.stats.max_length;
  if (Status st = check_sequence_length(model.card(), longest); !st.ok()) {
    Error e = st.error();
    e.what = fmt::format("samples of up to {} tokens: {}", longest, e.what);
    e.hint = "lower --cutoff-len";
    return e;
  }
  out.train = d.train;
  out.val = d.val;
  out.pad_id = tok->pad_id().value_or(tok->eos_id().value_or(0));
  out.description = {{"kind", "sft"},
                     {"files", o.inputs},
                     {"template", d.template_name},
                     {"cutoff_len", d.cutoff_len},
                     {"records", d.stats.records},
                     {"bad_records", d.stats.bad_records},
                     {"truncated", d.stats.truncated},
                     {"dropped", d.stats.dropped},
                     {"train_samples", d.stats.train_samples},
                     {"val_samples", d.stats.val_samples},
                     {"train_tokens", d.stats.train_tokens},
                     {"train_loss_tokens", d.stats.train_loss_tokens},
                     {"val_tokens", d.stats.val_tokens},
                     {"max_length", d.stats.max_length},
                     {"tokenizer", tok_path},
                     {"summary", data::describe(d)}};
  return out;
}

struct AppliedMethod {
  int64_t adapted_modules = 0;
  std::shared_ptr<AdapterRuntime> runtime;  // null without adapters
};

Result<AppliedMethod> apply_method(const FinetuneConfig& c, DecoderLM& model, LoraConfig& lora) {
  AppliedMethod out;
  if (!c.adapter_dir.empty()) {
    EL_TRY_ASSIGN(lora, read_peft_config(c.adapter_dir + "/" + kPeftConfigFile));
    EL_TRY_ASSIGN(LoraSummary s, load_peft_adapter(model, c.adapter_dir));
    out.adapted_modules = s.adapted_modules;
    out.runtime = s.runtime;
    return out;
  }
  if (c.eval_only) return out;  // the model as loaded: no method applies
  switch (c.method) {
    case Method::full:
      for (const NamedParameter& p : model.parameters()) Tensor(p.tensor).set_requires_grad(true);
      return out;
    case Method::freeze: {
      EL_TRY_ASSIGN(FreezeSummary s, apply_freeze(model, c.freeze));
      (void)s;
      return out;
    }
    case Method::rslora: lora.use_rslora = true; break;
    case Method::dora: lora.use_dora = true; break;
    case Method::pissa: lora.init = LoraConfig::Init::pissa; break;
    case Method::lora:
    case Method::lora_plus: break;
  }
  lora.seed = c.seed;
  EL_TRY_ASSIGN(LoraSummary s, apply_lora(model, lora));
  out.adapted_modules = s.adapted_modules;
  out.runtime = s.runtime;
  return out;
}

int64_t count(const ParameterList& params) {
  int64_t n = 0;
  for (const NamedParameter& p : params) n += p.tensor.numel();
  return n;
}

Result<EvalRecord> evaluate(const DecoderLM& model, data::SftBatcher& val, int64_t max_batches,
                            int64_t step, AdapterRuntime* runtime) {
  NoGrad no_grad;
  if (runtime) runtime->training = false;
  val.reset();
  double sum = 0;
  int64_t n = 0, tokens = 0;
  data::SftBatch b;
  while ((max_batches == 0 || n < max_batches) && val.next(b)) {
    if (b.info.loss_tokens == 0) continue;
    sum += model.loss(b.ids.to(model.device()), b.targets.to(model.device())).item();
    tokens += b.info.loss_tokens;
    ++n;
  }
  if (runtime) runtime->training = true;
  EvalRecord r;
  r.step = step;
  r.val_loss = n > 0 ? sum / static_cast<double>(n) : NAN;
  r.perplexity = std::exp(r.val_loss);
  r.tokens = tokens;
  return r;
}

Status write_outputs(const FinetuneConfig& c, DecoderLM& model, const LoraConfig& lora,
                     const LoadedModel& loaded, std::string* written) {
  const std::string base = !c.hf_dir.empty() ? c.hf_dir : !c.init_checkpoint.empty() ? c.init_checkpoint : c.card;
  if (method_uses_adapters(c.method)) {
    const std::string adapter_dir = c.merge ? c.out_dir + "/adapter" : c.out_dir;
    EL_TRY(save_peft_adapter(model, lora, adapter_dir, base));
    *written = adapter_dir + " (PEFT adapter)";
    if (!c.merge) return Status();
    merge_lora(model);
  }
  EL_TRY(save_hf_model(model, c.out_dir, loaded.save_options));
  // The tokenizer next to the weights makes the directory a whole checkpoint.
  const std::string tok_src = !c.tokenizer.empty() ? c.tokenizer : loaded.tokenizer_dir;
  if (!tok_src.empty()) {
    std::error_code ec;
    const fs::path src(tok_src);
    std::vector<fs::path> files;
    if (fs::is_directory(src, ec)) {
      for (const char* f : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                            "special_tokens_map.json", "generation_config.json"}) {
        if (fs::exists(src / f, ec)) files.push_back(src / f);
      }
    } else if (fs::is_regular_file(src, ec)) {
      files.push_back(src);
    }
    for (const fs::path& f : files) {
      fs::copy_file(f, fs::path(c.out_dir) / f.filename(), fs::copy_options::overwrite_existing, ec);
      if (ec) {
        return make_error(fmt::format("cannot copy the tokenizer file: {}", ec.message()), f.string());
      }
    }
  }
  *written = c.merge ? fmt::format("{} (merged model) and {}/adapter (PEFT adapter)", c.out_dir, c.out_dir)
                     : c.out_dir + " (Hugging Face model)";
  return Status();
}

}  // namespace

Result<FinetuneReport> run_finetune(const FinetuneConfig& c, const TrainCallbacks& callbacks) {
  EL_TRY(validate_finetune_config(c));
  EL_TRY_ASSIGN(LoadedModel loaded, load_model(c));
  DecoderLM& model = *loaded.model;
  EL_TRY_ASSIGN(PreparedData prepared, prepare_data(c, model, loaded.tokenizer_dir));

  LoraConfig lora = c.lora;
  EL_TRY_ASSIGN(AppliedMethod method, apply_method(c, model, lora));
  const ParameterList trainable = trainable_parameters(model);
  AdamW optimizer(trainable, AdamWConfig{c.lr, c.beta1, c.beta2, 1e-8f, c.weight_decay});
  if (c.method == Method::lora_plus) optimizer.scale_lr(".lora_B.weight", c.loraplus_ratio);

  data::SftBatchOptions train_opts;
  train_opts.batch_size = c.batch_size;
  train_opts.seq_len = c.seq_len;
  train_opts.shuffle = true;
  train_opts.seed = c.seed;
  train_opts.pad_id = prepared.pad_id;
  const int64_t longest = std::max(prepared.train->max_length(), prepared.val ? prepared.val->max_length() : 0);
  const int64_t m = std::max<int64_t>(1, c.pad_to_multiple);
  train_opts.pad_to_multiple = (longest + m - 1) / m * m <= model.card().max_seq_len ? m : 1;
  EL_TRY_ASSIGN(data::SftBatcher train, data::SftBatcher::create(prepared.train, train_opts));
  std::optional<data::SftBatcher> val;
  if (prepared.val && !prepared.val->empty()) {
    data::SftBatchOptions val_opts = train_opts;
    val_opts.shuffle = false;
    EL_TRY_ASSIGN(data::SftBatcher v, data::SftBatcher::create(prepared.val, val_opts));
    val.emplace(std::move(v));
  }

  const int64_t micro_per_epoch = train.batches_per_epoch();
  const int64_t total_steps =
      c.eval_only ? 0
      : c.steps > 0 ? c.steps
                  : std::max<int64_t>(1, (c.epochs * micro_per_epoch + c.grad_accum - 1) / c.grad_accum);
  // In double, as transformers computes it: 0.1f * 10 in float is 1.0000000149 and would ceil to 2.
  const auto warmup = static_cast<int64_t>(
      std::ceil(static_cast<double>(c.warmup_ratio) * static_cast<double>(total_steps) - 1e-6));
  CosineSchedule schedule{c.lr, 0.0f, warmup, total_steps};

  FinetuneReport report;
  report.card = model.card();
  report.model_source = !c.hf_dir.empty() ? c.hf_dir : !c.init_checkpoint.empty() ? c.init_checkpoint : c.card;
  report.total_parameters = model.num_parameters();
  report.trainable_parameters = count(trainable);
  report.adapted_modules = method.adapted_modules;
  report.data = prepared.description;

  Backend& backend = backend_for(c.device);
  metrics::SamplerOptions sampler_options;
  sampler_options.device = c.device;
  sampler_options.interval_ms = c.sample_interval_ms;
  metrics::Sampler sampler(sampler_options);
  EL_TRY(sampler.start());

  int64_t skipped = 0;
  std::string stop_reason;
  data::SftBatch batch;
  for (int64_t step = 0; step < total_steps; ++step) {
    metrics::Stopwatch watch;
    double loss_sum = 0;
    int64_t samples = 0, tokens = 0;
    for (int64_t micro = 0; micro < c.grad_accum; ++micro) {
      if (!train.next(batch)) {
        train.next_epoch();
        train.next(batch);  // create() guarantees at least one batch per epoch
      }
      if (method.runtime) ++method.runtime->step;  // a new dropout mask
      Tensor loss = model.loss(batch.ids.to(c.device), batch.targets.to(c.device));
      tape().backward(loss, 1.0f);
      loss_sum += loss.item();  // read after the backward is queued (no GPU stall between them)
      samples += batch.info.samples;
      tokens += batch.info.tokens;
    }
    const double loss = loss_sum / static_cast<double>(c.grad_accum);
    const double inv_accum = 1.0 / static_cast<double>(c.grad_accum);
    const float lr = schedule.lr_at(step);
    const double grad_norm = global_grad_norm(trainable) * inv_accum;
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      optimizer.zero_grad();
      if (++skipped > c.max_nonfinite_skips) {
        stop_reason = fmt::format("non-finite loss ({}) or gradient norm ({}) at step {}", loss,
                                  grad_norm, step + 1);
        break;
      }
      continue;
    }
    optimizer.step(lr, static_cast<float>(inv_accum) * clip_scale(grad_norm, c.grad_clip));
    optimizer.zero_grad();
    backend.synchronize();

    StepRecord rec{step + 1, loss, lr, grad_norm, watch.seconds(), tokens, 1.0, false};
    report.steps.push_back(rec);
    report.step_samples.push_back(samples);
    if (callbacks.on_step) {
      TrainConfig progress;  // what the progress callback reads: the schedule's length
      progress.steps = total_steps;
      callbacks.on_step(rec, progress);
    }
    const bool last = step + 1 == total_steps;
    if (val && ((c.eval_every > 0 && (step + 1) % c.eval_every == 0) || last)) {
      EL_TRY_ASSIGN(EvalRecord ev, evaluate(model, *val, c.eval_batches, step + 1, method.runtime.get()));
      report.evals.push_back(ev);
      if (callbacks.on_eval) callbacks.on_eval(ev);
    }
  }
  // A skipped (non-finite) last step jumps over the final evaluation above.
  if (!c.eval_only && val && stop_reason.empty() && !report.steps.empty() &&
      (report.evals.empty() || report.evals.back().step != total_steps)) {
    EL_TRY_ASSIGN(EvalRecord ev, evaluate(model, *val, c.eval_batches, total_steps, method.runtime.get()));
    report.evals.push_back(ev);
    if (callbacks.on_eval) callbacks.on_eval(ev);
  }
  if (c.eval_only && val) {
    EL_TRY_ASSIGN(EvalRecord ev, evaluate(model, *val, c.eval_batches, 0, method.runtime.get()));
    report.evals.push_back(ev);
    if (callbacks.on_eval) callbacks.on_eval(ev);
  }
  sampler.stop();
  const metrics::SampleSet recording = sampler.recording();
  if (!stop_reason.empty()) {
    return make_error(stop_reason, "fine-tuning", "lower the learning rate, or allow skips with --max-nonfinite-skips");
  }

  // ---- summaries (raw per-step records kept beside them)
  std::vector<double> step_seconds;
  int64_t timed_samples = 0, timed_tokens = 0;
  for (size_t i = 0; i < report.steps.size(); ++i) {
    if (static_cast<int64_t>(i) >= c.timing_warmup_steps || report.steps.size() == 1) {
      step_seconds.push_back(report.steps[i].seconds);
      timed_samples += report.step_samples[i];
      timed_tokens += report.steps[i].tokens;
    }
  }
  const metrics::Summary al = metrics::summarize(step_seconds);
  const double timed_seconds = al.mean * static_cast<double>(al.n);
  const double samples_per_s = timed_seconds > 0 ? static_cast<double>(timed_samples) / timed_seconds : 0;
  const double tokens_per_s = timed_seconds > 0 ? static_cast<double>(timed_tokens) / timed_seconds : 0;
  nlohmann::json raw_steps = nlohmann::json::array();
  for (size_t i = 0; i < report.steps.size(); ++i) {
    const StepRecord& s = report.steps[i];
    raw_steps.push_back({{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
                         {"seconds", s.seconds}, {"samples", report.step_samples[i]}, {"tokens", s.tokens}});
  }
  nlohmann::json raw_evals = nlohmann::json::array();
  for (const auto& e : report.evals) {
    raw_evals.push_back({{"step", e.step}, {"val_loss", e.val_loss}, {"loss_tokens", e.tokens}});
  }
  // The training loss the paper's tables would show: the mean over the last
  // tenth of the steps (one step's loss is one batch's, and noisy).
  const size_t tail = std::min(report.steps.size(), std::max<size_t>(1, report.steps.size() / 10));
  double tail_sum = 0;
  for (size_t i = report.steps.size() - tail; i < report.steps.size(); ++i) tail_sum += report.steps[i].loss;
  report.metrics = {
      {"al_seconds", metrics::to_json(al)},
      // null when no step was timed (--eval-only)
      {"samples_per_second", metrics::json_number_or_null(timed_seconds > 0 ? samples_per_s : NAN)},
      {"tokens_per_second", metrics::json_number_or_null(timed_seconds > 0 ? tokens_per_s : NAN)},
      {"st_samples_per_param_per_second",
       metrics::json_number_or_null(timed_seconds > 0 ? samples_per_s / static_cast<double>(report.total_parameters) : NAN)},
      {"train_loss", metrics::json_number_or_null(report.steps.empty() ? NAN : tail_sum / static_cast<double>(tail))},
      {"val_loss", metrics::json_number_or_null(report.final_val_loss())},
      {"total_parameters", report.total_parameters},
      {"trainable_parameters", report.trainable_parameters},
      {"optimizer_steps", optimizer.steps_taken()},
      {"memory_energy", metrics::to_json(metrics::summarize_samples(recording))},
      {"samples", metrics::to_json(recording)},
      {"steps", raw_steps},
      {"evals", raw_evals},
      {"skipped_nonfinite_steps", skipped},
      {"precision", precision_name(c.precision)},
      {"method", method_name(c.method)},
  };
  if (!c.out_dir.empty()) EL_TRY(write_outputs(c, model, lora, loaded, &report.output));
  return report;
}

nlohmann::json report_to_json(const FinetuneConfig& c, const FinetuneReport& r) {
  return {{"axis", "finetune"},
          {"config", c.to_json()},
          {"model", r.model_source},
          {"card", r.card.name},
          {"parameters", r.total_parameters},
          {"trainable_parameters", r.trainable_parameters},
          {"adapted_modules", r.adapted_modules},
          {"val_loss", metrics::json_number_or_null(r.final_val_loss())},
          {"train_loss", r.metrics.value("train_loss", nlohmann::json())},
          {"data", r.data},
          {"output", r.output},
          {"metrics", r.metrics}};
}

}  // namespace el::finetune
