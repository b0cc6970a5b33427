// efficientllm train — pretrain a model card on a prepared dataset.
#include <cmath>
#include <cstdio>

#include "bench/table.h"
#include "cli/common.h"
#include "io/atomic_file.h"
#include "metrics/calibrate.h"
#include "metrics/stats.h"
#include "train/trainer.h"

namespace el::cli {

void add_train_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "Pretrain a model card on token shards");
  auto cfg = std::make_shared<TrainConfig>();
  auto device = std::make_shared<std::string>("cpu");
  auto report_path = std::make_shared<std::string>();
  auto precision = std::make_shared<std::string>("f32");
  auto peak_gflops = std::make_shared<double>(0.0);
  auto peak_dtype = std::make_shared<std::string>();
  cmd->add_option("--model", cfg->model, "Model card name or YAML path")->capture_default_str();
  cmd->add_option("--data", cfg->data_dir, "Dataset directory from `efficientllm data prepare`")->required();
  cmd->add_option("--device", *device, "cpu | cuda[:N]")->capture_default_str();
  cmd->add_option("--precision", *precision,
                  "f32 | bf16 | f16 (bf16/f16: f32 master weights; f16 adds dynamic loss scaling)")
      ->capture_default_str();
  cmd->add_option("--batch-size,-b", cfg->batch_size, "Micro-batch size B")->capture_default_str();
  cmd->add_option("--seq-len,-t", cfg->seq_len, "Sequence length T")->capture_default_str();
  cmd->add_option("--grad-accum", cfg->grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  cmd->add_option("--steps", cfg->steps, "Optimizer steps of the schedule")->capture_default_str();
  cmd->add_option("--stop-after", cfg->stop_after, "Stop after this many steps (0 = all)")->capture_default_str();
  cmd->add_option("--lr", cfg->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", cfg->min_lr, "Final learning rate of the cosine")->capture_default_str();
  cmd->add_option("--warmup", cfg->warmup_steps, "Linear warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", cfg->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--beta1", cfg->beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", cfg->beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--grad-clip", cfg->grad_clip, "Max global gradient norm (0 = off)")->capture_default_str();
  cmd->add_option("--eval-every", cfg->eval_every, "Validate every K steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--eval-batches", cfg->eval_batches, "Validation windows of B x T tokens")->capture_default_str();
  cmd->add_option("--checkpoint-every", cfg->checkpoint_every, "Checkpoint every K steps (0 = at the end)")->capture_default_str();
  cmd->add_option("--out", cfg->out_dir, "Directory for checkpoint.safetensors");
  cmd->add_option("--resume", cfg->resume, "Checkpoint to continue from (same card and schedule)");
  cmd->add_option("--seed", cfg->seed, "Seed for weights and data order")->capture_default_str();
  cmd->add_option("--sample-interval-ms", cfg->sample_interval_ms, "Metrics sampling period")->capture_default_str();
  cmd->add_option("--profile-step", cfg->profile_step,
                  "Bracket this step (1-based) for ncu/nsys --profile-from-start off");
  // bench passes its suite's warm-up (suite_yaml.h: warmup_steps) to each run.
  cmd->add_option("--timing-warmup", cfg->timing_warmup_steps,
                  "First steps left out of the AL/TT/MFU timing summaries")->capture_default_str();
  cmd->add_option("--max-nonfinite-skips", cfg->max_nonfinite_skips,
                  "Steps with NaN/Inf loss to skip before stopping")->capture_default_str();
  cmd->add_option("--report", *report_path, "Write the full JSON report (raw samples included) here");
  // A suite calibrates once and hands the peak to every run (bench --isolate
  // runs each experiment as `efficientllm train` in its own process).
  cmd->add_option("--peak-gflops", *peak_gflops,
                  "MFU denominator measured earlier (GFLOP/s); skips the start-up calibration");
  cmd->add_option("--peak-dtype", *peak_dtype, "The dtype that --peak-gflops was measured in");
  cmd->callback([&action, cfg, device, report_path, precision, peak_gflops, peak_dtype] {
    action = [cfg, device, report_path, precision, peak_gflops, peak_dtype]() -> int {
      auto dev = parse_device(*device);
      if (!dev.ok()) return report_error(dev.error());
      cfg->device = dev.value();
      if (*peak_gflops > 0) {
        metrics::PeakCalibration peak;
        peak.gflops = peak.mean_gflops = *peak_gflops;
        peak.device = cfg->device.str();
        if (!peak_dtype->empty()) peak.dtype = *peak_dtype;
        cfg->peak = peak;
      }
      auto prec = parse_precision(*precision, "--precision");
      if (!prec.ok()) return report_error(prec.error());
      cfg->precision = prec.value();
      bench::ProgressBar bar;
      TrainCallbacks cb;
      cb.on_step = [&bar](const StepRecord& r, const TrainConfig& c) {
        const double eta = r.seconds * static_cast<double>(c.steps - r.step);
        bar.update("train", r.step, c.steps, fmt::format("loss {:.4f} lr {:.2e}", r.loss, r.lr), eta);
      };
      cb.on_eval = [&bar](const EvalRecord& e) {
        bar.finish();
        std::printf("step %lld: val loss %.4f, perplexity %.2f\n", static_cast<long long>(e.step),
                    e.val_loss, e.perplexity);
      };
      auto report = run_training(*cfg, cb);
      bar.finish();
      if (!report.ok()) return report_error(report.error());
      const TrainReport& r = report.value();
      const auto& m = r.metrics;
      auto num = [](const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; };
      std::printf("model %s (%s): %lld parameters, %.1f tokens/s, AL %.4f s/step, MFU %.1f%%\n",
                  r.card.name.c_str(), precision_name(cfg->precision),
                  static_cast<long long>(r.parameters), num(m["tokens_per_second"]),
                  num(m["al_seconds"]["mean"]), 100.0 * num(m["mfu"]));
      if (m["loss_scale_skipped_steps"].get<int64_t>() > 0) {
        std::printf("f16 loss scaling skipped %lld overflow steps\n",
                    static_cast<long long>(m["loss_scale_skipped_steps"].get<int64_t>()));
      }
      if (!r.checkpoint.empty()) std::printf("checkpoint: %s\n", r.checkpoint.c_str());
      if (!report_path->empty()) {
        nlohmann::json j = {{"config", cfg->to_json()},
                            {"card", r.card.name},
                            {"parameters", r.parameters},
                            {"perplexity", metrics::json_number_or_null(r.final_perplexity())},
                            {"val_loss", metrics::json_number_or_null(r.final_val_loss())},
                            {"metrics", m}};
        Status st = io::write_file_atomic(*report_path, j.dump(1) + "\n");
        if (!st.ok()) return report_error(st.error());
      }
      return 0;
    };
  });
}

}  // namespace el::cli
