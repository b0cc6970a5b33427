// efficientllm generate — text generation with a KV cache (greedy,
// temperature, top-k, top-p, stop tokens, batched prompts), and with --bench
// the inference axis' speed measurement (IT at several batch sizes, TTFT,
// TPOT, latency percentiles, memory, energy, bandwidth).
#include <cmath>
#include <cstdio>
#include <fstream>

#include "cli/common.h"
#include "data/tokenizer_factory.h"
#include "infer/generator.h"
#include "infer/infer_bench.h"
#include "infer/infer_experiment.h"
#include "infer/model_loader.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "train/precision.h"

namespace el::cli {
namespace {

struct GenerateArgs {
  infer::InferExperimentConfig exp;  // model, precision, quantization, quality, bench
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::vector<int32_t> ids;  // one prompt as token ids (no tokenizer needed)
  infer::GenerationConfig gen;
  std::vector<std::string> stop;  // token strings
  bool ignore_eos = false;
  std::string device = "cpu";
  std::string method = "rtn";
  std::string eval_dataset;  // a prepared dataset directory: its validation shards
  bool bench = false;
  std::string report_path;
};

Result<std::vector<std::string>> read_prompt_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error("cannot open the prompts file", path, "one prompt per line");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  if (out.empty()) return make_error("the prompts file has no non-empty line", path);
  return out;
}

void print_bench(const nlohmann::json& r) {
  auto num = [](const nlohmann::json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN;
  };
  const nlohmann::json& b = r["bench"];
  const nlohmann::json& m = r["metrics"];
  std::printf("%s %s: weights read per decode step %.3f GB", r.value("card", "").c_str(),
              r.value("precision", "").c_str(), num(b, "weight_bytes_per_step") / 1e9);
  if (b["datasheet_memory_gbps"].is_number()) std::printf(" (datasheet bandwidth %.0f GB/s)", num(b, "datasheet_memory_gbps"));
  std::printf("\n");
  if (m["perplexity"].is_number()) std::printf("perplexity %.4f\n", num(m, "perplexity"));
  if (m["choice_acc"].is_number()) {
    std::printf("multiple choice: acc %.4f, acc_norm %.4f\n", num(m, "choice_acc"), num(m, "choice_acc_norm"));
  }
  std::printf("%6s %12s %12s %10s %10s %10s %10s %9s %8s\n", "batch", "IT tok/s", "decode tok/s", "TTFT p50",
              "TPOT p50", "TPOT p99", "lat p50", "GB/s", "of peak");
  for (const auto& x : b["batches"]) {
    std::printf("%6lld %12.1f %12.1f %9.2fms %9.3fms %9.3fms %9.1fms %9.1f %8s\n",
                static_cast<long long>(x["batch"].get<int64_t>()), num(x, "it_tokens_per_second"),
                num(x, "decode_tokens_per_second"), 1e3 * num(x["ttft_s"], "median"), 1e3 * num(x["tpot_s"], "median"),
                1e3 * num(x["tpot_s"], "p99"), 1e3 * num(x["latency_s"], "median"), num(x, "decode_gbps"),
                x["hbm_fraction"].is_number() ? fmt::format("{:.1f}%", 100 * num(x, "hbm_fraction")).c_str() : "-");
  }
  if (!b["batches"].empty()) std::printf("decode steps: %s\n", b["batches"].back().value("graph_note", "").c_str());
}

Status resolve(GenerateArgs& a) {
  EL_TRY_ASSIGN(a.exp.device, parse_device(a.device));
  EL_TRY_ASSIGN(a.exp.method, quant::parse_quant_method(a.method));
  if (!a.eval_dataset.empty()) {
    EL_TRY_ASSIGN(data::Dataset ds, data::load_dataset_manifest(a.eval_dataset));
    a.exp.val_shards.insert(a.exp.val_shards.end(), ds.val_shards.begin(), ds.val_shards.end());
  }
  return infer::validate_infer_experiment(a.exp);
}

int run_generate(GenerateArgs& a) {
  Status st = resolve(a);
  if (!st.ok()) return report_error(st.error());
  nlohmann::json report;
  if (a.bench) {
    Result<nlohmann::json> r = infer::run_infer_experiment(a.exp);
    if (!r.ok()) return report_error(r.error());
    report = std::move(*r);
    report["config"] = infer::to_json(a.exp);
    print_bench(report);
  } else {
    Result<infer::PreparedModel> prepared = infer::prepare_model(a.exp);
    if (!prepared.ok()) return report_error(prepared.error());
    infer::LoadedModel* loaded = &prepared->loaded;
    const DecoderLM& model = *loaded->model;
    report = {{"model", a.exp.source.describe()}, {"card", model.card().name}, {"device", a.exp.device.str()},
              {"precision", a.exp.precision}, {"quantization", prepared->quantization}};
    std::unique_ptr<data::TextTokenizer> tok;
    const std::string tok_path = !a.exp.tokenizer.empty() ? a.exp.tokenizer : loaded->tokenizer_dir;
    std::vector<std::string> texts = a.prompts;
    if (!a.prompts_file.empty()) {
      Result<std::vector<std::string>> lines = read_prompt_lines(a.prompts_file);
      if (!lines.ok()) return report_error(lines.error());
      texts.insert(texts.end(), lines->begin(), lines->end());
    }
    std::vector<std::vector<int32_t>> prompts;
    if (!texts.empty() || a.ids.empty()) {
      if (tok_path.empty()) {
        return report_error(make_error("no tokenizer for the prompts", "--tokenizer",
                                       "give --tokenizer, or the prompt as token ids with --ids"));
      }
      Result<std::unique_ptr<data::TextTokenizer>> t = data::load_text_tokenizer(tok_path);
      if (!t.ok()) return report_error(t.error());
      tok = std::move(*t);
      if (texts.empty()) return report_error(make_error("no prompt given", "--prompt", "give --prompt, --prompts-file or --ids"));
      for (const std::string& s : texts) {
        std::vector<int32_t> ids;
        if (tok->bos_id()) ids.push_back(*tok->bos_id());
        const std::vector<int32_t> body = tok->encode(s);
        ids.insert(ids.end(), body.begin(), body.end());
        prompts.push_back(std::move(ids));
      }
    }
    if (!a.ids.empty()) prompts.push_back(a.ids);
    a.gen.stop_tokens = loaded->stop_ids;
    if (tok && tok->eos_id()) a.gen.stop_tokens.push_back(*tok->eos_id());
    for (const std::string& s : a.stop) {
      std::optional<int32_t> id = tok ? tok->token_to_id(s) : std::nullopt;
      if (!id) return report_error(make_error(fmt::format("'{}' is not a token of the tokenizer", s), "--stop"));
      a.gen.stop_tokens.push_back(*id);
    }
    a.gen.ignore_stop = a.ignore_eos;
    Result<infer::GenerationResult> out = infer::generate(model, prompts, a.gen);
    if (!out.ok()) return report_error(out.error());
    nlohmann::json requests = nlohmann::json::array();
    for (size_t i = 0; i < out->requests.size(); ++i) {
      const infer::RequestResult& r = out->requests[i];
      const std::string text = tok ? tok->decode(r.tokens, /*skip_special=*/true) : std::string();
      if (tok) {
        std::printf("[%zu] %s%s\n", i, texts.size() > i ? texts[i].c_str() : "", text.c_str());
      } else {
        std::printf("[%zu]", i);
        for (int32_t id : r.tokens) std::printf(" %d", id);
        std::printf("\n");
      }
      requests.push_back({{"prompt_tokens", r.prompt_tokens}, {"tokens", r.tokens}, {"text", text},
                          {"finish_reason", r.finish_reason}, {"ttft_s", r.ttft_s}, {"latency_s", r.latency_s},
                          {"tpot_s", std::isnan(r.tpot_s()) ? nlohmann::json(nullptr) : nlohmann::json(r.tpot_s())}});
    }
    std::printf("%s\n", out->graph_note.c_str());
    std::printf("%lld tokens in %.3f s (TTFT %.1f ms, %.1f tokens/s)\n",
                static_cast<long long>(out->generated_tokens()), out->total_s, 1e3 * out->prefill_s,
                static_cast<double>(out->generated_tokens()) / out->total_s);
    report["requests"] = requests;
    report["step_s"] = out->step_s;
    report["prefill_s"] = out->prefill_s;
    report["graph_note"] = out->graph_note;
  }
  if (!a.report_path.empty()) {
    Status w = io::write_file_atomic(a.report_path, report.dump(1) + "\n");
    if (!w.ok()) return report_error(w.error());
  }
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("generate", "Generate text with a KV cache, or measure inference speed (--bench)");
  auto a = std::make_shared<GenerateArgs>();
  infer::InferExperimentConfig& x = a->exp;
  cmd->add_option("--hf", x.source.hf_dir, "Hugging Face checkpoint directory");
  cmd->add_option("--init", x.source.checkpoint, "A checkpoint.safetensors written by `efficientllm train`");
  cmd->add_option("--model", x.source.card, "A model card with random weights (speed runs)");
  cmd->add_option("--quantized", x.source.quantized_dir, "A directory written by `efficientllm quantize`");
  cmd->add_option("--tokenizer", x.tokenizer, "tokenizer.json / .model or a directory holding one");
  cmd->add_option("--prompt,-p", a->prompts, "A prompt (repeat for a batch)");
  cmd->add_option("--prompts-file", a->prompts_file, "One prompt per line (all in one batch)");
  cmd->add_option("--ids", a->ids, "One prompt as comma-separated token ids")->delimiter(',');
  cmd->add_option("--max-new-tokens,-n", a->gen.max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  cmd->add_option("--temperature", a->gen.sampling.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", a->gen.sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", a->gen.sampling.top_p, "Nucleus: smallest set with this much mass (1 = off)")->capture_default_str();
  cmd->add_option("--seed", a->gen.sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", a->stop, "Extra stop token strings (the tokenizer's EOS always stops)");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Always generate --max-new-tokens tokens");
  cmd->add_option("--profile-step", a->gen.profile_step,
                  "bracket this decode step (1-based) for a profiler started with capture off "
                  "(ncu --profile-from-start off); not with --bench")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-graph", [a](int64_t) { a->gen.use_graph = false; a->exp.bench.use_graph = false; },
                "Launch every decode step's kernels one by one (no CUDA graph replay)");
  cmd->add_flag("--no-look-ahead", [a](int64_t) { a->gen.look_ahead = false; a->exp.bench.look_ahead = false; },
                "Read each greedy step's tokens before queueing the next step");
  cmd->add_option("--device", a->device, "cpu | cuda[:N]")->capture_default_str();
  cmd->add_option("--precision", x.precision,
                  "f32 | bf16 | fp16, or int8 | int4 (weight-only, quantized on load)")->capture_default_str();
  cmd->add_option("--act-precision", x.act_precision, "int8 / int4: activation dtype (f32 | bf16 | fp16)")->capture_default_str();
  cmd->add_option("--quant-method", a->method, "int8 / int4: rtn | gptq")->capture_default_str();
  cmd->add_option("--group-size", x.group_size, "int8 / int4: inputs per scale (0 = per channel)")->capture_default_str();
  cmd->add_flag("--asym", [a](int64_t) { a->exp.symmetric = false; }, "int8 / int4: asymmetric (zero points)");
  cmd->add_option("--calib", x.calibration, "GPTQ calibration: builtin, token shards or dataset directories");
  cmd->add_option("--calib-samples", x.calibration_samples, "GPTQ calibration windows")->capture_default_str();
  cmd->add_option("--calib-seq-len", x.calibration_seq_len, "GPTQ calibration window length")->capture_default_str();
  cmd->add_flag("--bench", a->bench, "Measure quality and speed (random prompts) instead of generating text");
  cmd->add_option("--eval-dataset", a->eval_dataset, "--bench: perplexity on this prepared dataset's validation split");
  cmd->add_option("--eval-shard", x.val_shards, "--bench: perplexity on these token shards");
  cmd->add_option("--eval-seq-len", x.eval_seq_len, "--bench: perplexity window (0 = the model's context)")->capture_default_str();
  cmd->add_option("--eval-tokens", x.eval_tokens, "--bench: at most this many predicted tokens (0 = all)")->capture_default_str();
  cmd->add_option("--choice-task", x.choice_task, "--bench: builtin:corpus-cloze or a JSON Lines multiple-choice task");
  cmd->add_option("--choice-items", x.choice_items, "--bench: score the first N items (0 = all)")->capture_default_str();
  cmd->add_option("--batch-sizes", x.bench.batch_sizes, "--bench: batch sizes")->delimiter(',')->capture_default_str();
  cmd->add_option("--prompt-len", x.bench.prompt_len, "--bench: prompt tokens")->capture_default_str();
  cmd->add_option("--gen-len", x.bench.gen_len, "--bench: new tokens per prompt")->capture_default_str();
  cmd->add_option("--repetitions", x.bench.repetitions, "--bench: timed generations per batch size")->capture_default_str();
  cmd->add_option("--warmup", x.bench.warmup, "--bench: untimed generations first")->capture_default_str();
  cmd->add_option("--report", a->report_path, "Write the JSON report (raw timings and samples) here");
  cmd->callback([&action, a] { action = [a]() -> int { return run_generate(*a); }; });
}

}  // namespace el::cli
