#include "train/trainer.h"

#include <cmath>
#include <filesystem>

#include "autograd/tape.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "metrics/calibrate.h"
#include "metrics/sampler.h"
#include "metrics/stats.h"
#include "metrics/timer.h"
#include "ops/backend.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"

namespace el {

nlohmann::json TrainConfig::to_json() const {
  return {{"model", model},           {"data_dir", data_dir},       {"device", device.str()},
          {"batch_size", batch_size}, {"seq_len", seq_len},         {"grad_accum", grad_accum},
          {"steps", steps},           {"lr", lr},                   {"min_lr", min_lr},
          {"warmup_steps", warmup_steps}, {"weight_decay", weight_decay}, {"beta1", beta1},
          {"beta2", beta2},           {"grad_clip", grad_clip},     {"eval_every", eval_every},
          {"eval_batches", eval_batches}, {"seed", seed},           {"sample_interval_ms", sample_interval_ms},
          {"timing_warmup_steps", timing_warmup_steps}, {"precision", precision_name(precision)},
          {"loss_scale_init", loss_scale_init},
          {"loss_scale_growth_interval", loss_scale_growth_interval}};
}

namespace {

// Mean validation loss over the first eval_batches fixed windows of the val split.
Result<EvalRecord> evaluate(const DecoderLM& model, data::DataLoader& val, int64_t max_batches,
                            int64_t step) {
  NoGrad no_grad;
  val.reset();
  double sum = 0;
  int64_t n = 0, tokens = 0;
  Tensor ids, targets;
  while (n < max_batches && val.next_sequential(ids, targets)) {
    sum += model.loss(ids.to(model.device()), targets.to(model.device())).item();
    tokens += ids.numel();
    ++n;
  }
  if (n == 0) {
    return make_error("the validation split has no window of the requested length",
                      "validation", "lower --seq-len or prepare more validation text");
  }
  EvalRecord r;
  r.step = step;
  r.val_loss = sum / static_cast<double>(n);
  r.perplexity = std::exp(r.val_loss);
  r.tokens = tokens;
  return r;
}

}  // namespace

Result<TrainReport> run_training(const TrainConfig& cfg, const TrainCallbacks& callbacks) {
  if (cfg.batch_size <= 0 || cfg.seq_len <= 0 || cfg.grad_accum <= 0 || cfg.steps <= 0) {
    return make_error(fmt::format("batch_size ({}), seq_len ({}), grad_accum ({}) and steps ({}) must be positive",
                                  cfg.batch_size, cfg.seq_len, cfg.grad_accum, cfg.steps),
                      "train config");
  }
  const bool scaling = precision_uses_loss_scaling(cfg.precision);
  if (scaling && (!(cfg.loss_scale_init >= 1.0f) || !std::isfinite(cfg.loss_scale_init) ||
                  cfg.loss_scale_growth_interval <= 0)) {
    return make_error(fmt::format("loss_scale_init ({}) must be a finite number >= 1 and "
                                  "loss_scale_growth_interval ({}) positive",
                                  cfg.loss_scale_init, cfg.loss_scale_growth_interval),
                      "train config");
  }
  EL_TRY_ASSIGN(ModelCard card, find_model_card(cfg.model));
  EL_TRY(check_sequence_length(card, cfg.seq_len));  // max_seq_len and sliding_window
  EL_TRY_ASSIGN(data::Dataset dataset, data::load_dataset_manifest(cfg.data_dir));
  if (dataset.vocab_size > card.vocab_size) {
    return make_error(fmt::format("dataset vocabulary ({}) is larger than the model's vocab_size ({})",
                                  dataset.vocab_size, card.vocab_size),
                      cfg.data_dir, "use a model card whose vocab_size covers the tokenizer");
  }
  EL_TRY_ASSIGN(data::DataLoader train_loader,
                data::DataLoader::open(dataset.train_shards, card.vocab_size, cfg.batch_size,
                                       cfg.seq_len, cfg.seed));
  EL_TRY_ASSIGN(data::DataLoader val_loader,
                data::DataLoader::open(dataset.val_shards, card.vocab_size, cfg.batch_size,
                                       cfg.seq_len, cfg.seed));

  EL_TRY_ASSIGN(auto model,
                DecoderLM::create(card, cfg.device, cfg.seed, precision_dtype(cfg.precision)));
  AdamW optimizer(model->parameters(),
                  AdamWConfig{cfg.lr, cfg.beta1, cfg.beta2, 1e-8f, cfg.weight_decay});
  CosineSchedule schedule{cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps};
  LossScalerConfig scaler_config;
  scaler_config.initial_scale = cfg.loss_scale_init;
  scaler_config.growth_interval = cfg.loss_scale_growth_interval;
  LossScaler scaler(scaler_config);

  int64_t start_step = 0;
  if (!cfg.resume.empty()) {
    EL_TRY_ASSIGN(CheckpointState st, load_checkpoint(cfg.resume, *model, &optimizer));
    EL_TRY(train_loader.set_state(st.loader_state));
    start_step = st.step;
    if (scaling && st.loss_scale > 0.0f) {
      EL_TRY(scaler.set_state(st.loss_scale, st.loss_scale_good_steps));
    }
  }

  Backend& backend = backend_for(cfg.device);
  TrainReport report;
  report.card = card;
  report.parameters = model->num_parameters();
  report.flops = model->flops_per_token(cfg.seq_len);

  EL_TRY_ASSIGN(const metrics::PeakCalibration peak,
                cfg.peak ? Result<metrics::PeakCalibration>(*cfg.peak)
                         : metrics::try_calibrate_peak_gemm(
                               cfg.device, cfg.calibration_seconds, 0,
                               // The peak of the arithmetic the run does: the CPU
                               // computes every dtype in f32; a GPU runs the
                               // precision's own GEMMs.
                               cfg.device.is_cpu() ? DType::f32 : precision_dtype(cfg.precision)));
  metrics::SamplerOptions sampler_options;
  sampler_options.device = cfg.device;
  sampler_options.interval_ms = cfg.sample_interval_ms;
  metrics::Sampler sampler(sampler_options);
  EL_TRY(sampler.start());

  const int64_t end_step = cfg.stop_after > 0 ? std::min(cfg.steps, cfg.stop_after) : cfg.steps;
  const int64_t tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum;
  int64_t skipped = 0;
  int64_t overflow_skipped = 0;  // f16 steps skipped by the loss scaler
  nlohmann::json scale_history = nlohmann::json::array();
  std::string stop_reason;
  Tensor ids, targets;
  for (int64_t step = start_step; step < end_step; ++step) {
    const bool profiled = cfg.profile_step == step + 1;
    if (profiled) backend.profiler_range(true);
    metrics::Stopwatch watch;
    // f16: gradients of scale * loss, so small ones survive f16's range.
    const float seed = scaling ? scaler.scale() : 1.0f;
    double loss_sum = 0;
    for (int64_t micro = 0; micro < cfg.grad_accum; ++micro) {
      train_loader.next_random(ids, targets);
      Tensor loss = model->loss(ids.to(cfg.device), targets.to(cfg.device));
      tape().backward(loss, seed);
      // Read after the backward is queued: on a GPU the host then never waits
      // between the forward and the backward (item() synchronises).
      loss_sum += loss.item();
    }
    const double loss = loss_sum / static_cast<double>(cfg.grad_accum);
    // Gradients are summed over micro-batches; 1/grad_accum makes them a
    // mean, and 1/seed undoes the loss scale.
    const double inv_accum = 1.0 / static_cast<double>(cfg.grad_accum);
    const float lr = schedule.lr_at(step);
    // An overflow of the scaled f16 gradients is the scaler's business (skip,
    // back off), not a divergence; a non-finite loss still is one, and so are
    // non-finite gradients at the minimum scale (nothing left to back off).
    const bool overflow = scaling && seed > scaler_config.min_scale && std::isfinite(loss) &&
                          !grads_all_finite(model->parameters());
    double grad_norm = NAN;
    if (overflow) {
      ++overflow_skipped;
    } else {
      grad_norm = global_grad_norm(model->parameters()) * inv_accum / seed;
      if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
        optimizer.zero_grad();
        if (++skipped > cfg.max_nonfinite_skips) {
          stop_reason = fmt::format("non-finite loss ({}) or gradient norm ({}) at step {}", loss,
                                    grad_norm, step + 1);
          break;
        }
        continue;
      }
      optimizer.step(lr, static_cast<float>(inv_accum / seed) * clip_scale(grad_norm, cfg.grad_clip));
    }
    if (scaling) {
      scaler.update(!overflow);
      scale_history.push_back({{"step", step + 1}, {"scale", seed}, {"skipped", overflow}});
    }
    optimizer.zero_grad();
    backend.synchronize();
    if (profiled) backend.profiler_range(false);

    StepRecord rec{step + 1, loss, lr, grad_norm, watch.seconds(), tokens_per_step, seed, overflow};
    report.steps.push_back(rec);
    if (callbacks.on_step) callbacks.on_step(rec, cfg);

    const bool last = step + 1 == end_step;
    if ((cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || last) {
      EL_TRY_ASSIGN(EvalRecord ev, evaluate(*model, val_loader, cfg.eval_batches, step + 1));
      report.evals.push_back(ev);
      if (callbacks.on_eval) callbacks.on_eval(ev);
    }
    if (!cfg.out_dir.empty() &&
        ((cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) || last)) {
      std::error_code ec;
      std::filesystem::create_directories(cfg.out_dir, ec);
      const std::string path = cfg.out_dir + "/checkpoint.safetensors";
      CheckpointState st;
      st.step = step + 1;
      st.optimizer_steps = optimizer.steps_taken();
      if (scaling) {
        st.loss_scale = scaler.scale();
        st.loss_scale_good_steps = scaler.good_steps();
      }
      st.loader_state = train_loader.state();
      st.config_json = cfg.to_json().dump();
      st.model_card_yaml = model_card_to_yaml(card);
      EL_TRY(save_checkpoint(path, *model, &optimizer, st));
      report.checkpoint = path;
    }
  }
  sampler.stop();
  const metrics::SampleSet recording = sampler.recording();

  // ---- summaries (raw samples kept beside them)
  std::vector<double> step_seconds;
  for (size_t i = 0; i < report.steps.size(); ++i) {
    if (static_cast<int64_t>(i) >= cfg.timing_warmup_steps || report.steps.size() == 1) {
      step_seconds.push_back(report.steps[i].seconds);
    }
  }
  const metrics::Summary al = metrics::summarize(step_seconds);
  const double tokens_per_s = al.mean > 0 ? static_cast<double>(tokens_per_step) / al.mean : 0;
  const double flops_per_s = tokens_per_s * report.flops.train();
  nlohmann::json raw_steps = nlohmann::json::array();
  for (const auto& s : report.steps) {
    raw_steps.push_back({{"step", s.step}, {"loss", s.loss}, {"lr", s.lr},
                         {"grad_norm", s.grad_norm}, {"seconds", s.seconds}});
  }
  nlohmann::json raw_evals = nlohmann::json::array();
  for (const auto& e : report.evals) {
    raw_evals.push_back({{"step", e.step}, {"val_loss", e.val_loss}, {"perplexity", e.perplexity},
                         {"tokens", e.tokens}});
  }
  const double peak_flops = peak.gflops * 1e9;
  report.metrics = {
      {"al_seconds", metrics::to_json(al)},
      {"tokens_per_step", tokens_per_step},
      {"tokens_per_second", tokens_per_s},
      {"tt_tokens_per_param_per_second", tokens_per_s / static_cast<double>(report.parameters)},
      {"flops_per_token_train", report.flops.train()},
      {"flops_per_token_formula", report.flops.formula_train},
      {"achieved_flops_per_second", flops_per_s},
      {"peak_calibration", metrics::to_json(peak)},
      {"mfu", metrics::json_number_or_null(metrics::mfu(flops_per_s, peak_flops))},
      {"mfu_formula", metrics::json_number_or_null(
                          metrics::mfu(tokens_per_s * report.flops.formula_train, peak_flops))},
      {"memory_energy", metrics::to_json(metrics::summarize_samples(recording))},
      {"samples", metrics::to_json(recording)},
      {"steps", raw_steps},
      {"evals", raw_evals},
      {"skipped_nonfinite_steps", skipped},
      {"precision", precision_name(cfg.precision)},
      // f16 only (0 and [] otherwise): steps whose scaled gradients
      // overflowed, and the scale each step used (raw samples).
      {"loss_scale_skipped_steps", overflow_skipped},
      {"loss_scale_history", scale_history},
  };
  if (!stop_reason.empty()) {
    return make_error(stop_reason, "training", "lower the learning rate, or allow skips with --max-nonfinite-skips");
  }
  return report;
}

}  // namespace el
