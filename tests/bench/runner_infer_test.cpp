// The runner's inference rows (bench/runner_infer.h): the config an infer
// experiment resolves to and its child command line, the run object of one
// repetition, MCR against the bf16 row, and tiny suites run in process: rows
// on a pretrained source (quality and speed recorded, cached, filtered) and
// a card row (random weights: quality null with the reason).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "bench/result_stats.h"
#include "bench/runner.h"
#include "bench/runner_infer.h"
#include "common/train_env.h"
#include "runner_test_util.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

SuiteFile parse_ok(const std::string& text) {
  auto r = parse_suite_yaml(text, "s.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message() << "\n" << text;
  return r.ok() ? r.value() : SuiteFile{};
}

SuiteOptions quiet_options(const std::string& dir) {
  SuiteOptions o;
  o.results_dir = dir;
  o.in_process = true;
  o.progress = nullptr;
  o.calibration_seconds = 0.05;
  return o;
}

std::string arg_after(const std::vector<std::string>& argv, const std::string& flag) {
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == flag) return argv[i + 1];
  return "(absent)";
}

TEST(InferRows, ConfigAndChildCommandLine) {
  const SuiteFile s = parse_ok(
      "name: t\nwarmup_steps: 2\ndefaults: {prompt_len: 64, gen_len: 32}\nexperiments:\n"
      "  - {axis: pretrain, label: P, card: tiny-gqa}\n"
      "  - {axis: infer, label: g, model: \"pretrained:P\", precision: int4, quant_method: gptq, group_size: 64,\n"
      "     scheme: asymmetric, act_precision: f32, batch_sizes: \"1,4\", calib_samples: 8, calib_seq_len: 64}\n"
      "  - {axis: infer, label: f, model: \"pretrained:P\", precision: fp16, quant_method: gptq, group_size: 64}\n"
      "  - {axis: infer, label: c, model: tiny-gqa, precision: int8}\n");
  const InferPretrainedSource src{"/r/ckpt.safetensors", "/d/tok.model", {"/d/val_000.bin"}, "/d"};
  const infer::InferExperimentConfig g = infer_experiment_config(s.experiments[1], Device::cpu(), src);
  EXPECT_EQ(g.source.checkpoint, "/r/ckpt.safetensors");
  EXPECT_EQ(g.tokenizer, "/d/tok.model");
  EXPECT_EQ(g.val_shards, std::vector<std::string>{"/d/val_000.bin"});
  EXPECT_EQ(g.calibration, std::vector<std::string>{"/d"});  // GPTQ on the source's train shards
  EXPECT_EQ(g.calibration_samples, 8);
  EXPECT_EQ(g.method, quant::QuantMethod::gptq);
  EXPECT_FALSE(g.symmetric);
  EXPECT_EQ(g.act_precision, "f32");
  EXPECT_EQ(g.bench.batch_sizes, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(g.bench.warmup, 2);  // the suite's warmup_steps
  EXPECT_EQ(g.choice_task, "builtin:corpus-cloze");
  const auto argv = infer::infer_command_line(g, "/r/rep.json");
  EXPECT_EQ(argv.front(), "generate");
  EXPECT_EQ(arg_after(argv, "--init"), "/r/ckpt.safetensors");
  EXPECT_EQ(arg_after(argv, "--calib"), "/d");
  EXPECT_EQ(arg_after(argv, "--eval-shard"), "/d/val_000.bin");
  EXPECT_EQ(arg_after(argv, "--batch-sizes"), "1,4");
  EXPECT_EQ(arg_after(argv, "--report"), "/r/rep.json");

  // A float row: the quantization settings are not part of it.
  const infer::InferExperimentConfig f = infer_experiment_config(s.experiments[2], Device::cpu(), src);
  EXPECT_EQ(f.act_precision, "fp16");
  EXPECT_EQ(f.method, quant::QuantMethod::rtn);
  EXPECT_EQ(f.group_size, 128);
  // A card: random weights, nothing to measure the quality of.
  const infer::InferExperimentConfig c = infer_experiment_config(s.experiments[3], Device::cpu(), src);
  EXPECT_EQ(c.source.card, "tiny-gqa");
  EXPECT_TRUE(c.source.checkpoint.empty());
  EXPECT_TRUE(c.val_shards.empty());
  EXPECT_EQ(c.choice_task, "");

  // The hash covers no path: the same source elsewhere is the same experiment.
  const json id = {{"pretrained", "abc"}};
  const InferPretrainedSource moved{"/x/ckpt.safetensors", "/y/tok.model", {"/y/val_000.bin"}, "/y"};
  const json a = infer_resolved_config(s.experiments[1], g, id, true).value();
  const json b =
      infer_resolved_config(s.experiments[1], infer_experiment_config(s.experiments[1], Device::cpu(), moved), id, true)
          .value();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a["infer"]["calibration"], "source train shards");
  EXPECT_EQ(a["infer"]["choice_task"]["builtin"], "corpus-cloze");
  EXPECT_EQ(a["model"], id);
  EXPECT_EQ(a["axis"], "infer");
  EXPECT_FALSE(a.dump().find("/r/") != std::string::npos) << a.dump();
  EXPECT_NE(infer_resolved_config(s.experiments[1], g, id, false).value(), a);  // isolated or not
}

TEST(InferRows, RunObjectFromTheReport) {
  const json me_small = {{"amu_live_gb", 0.1}}, me_large = {{"amu_live_gb", 0.4}, {"avg_power_w", 30.0}};
  const json report = {
      {"card", "tiny-gqa"},
      {"parameters", 1000},
      {"precision", "bf16"},
      {"quantization", nullptr},
      {"quality", json::object()},
      {"bench",
       {{"batches",
         {{{"batch", 1}, {"memory_energy", me_small}, {"raw", {{"total_s", {0.5, 0.25}}}}},
          {{"batch", 4}, {"memory_energy", me_large}, {"raw", {{"total_s", {1.0}}}}}}}}},
      {"metrics", {{"perplexity", 12.5}, {"bits", 16}, {"it_tokens_per_second", 100.0}}},
  };
  json run = {{"repetition", 1}};
  fill_infer_run(run, report);
  EXPECT_EQ(run["status"], "ok");
  EXPECT_EQ(run["card"], "tiny-gqa");
  EXPECT_EQ(run["perplexity"], 12.5);
  EXPECT_EQ(run["metrics"]["memory_energy"], me_large);  // the largest batch's
  EXPECT_EQ(run["metrics"]["bits_per_weight"], 16);     // a float row: its width
  EXPECT_DOUBLE_EQ(run["measured_seconds"].get<double>(), 1.75);
  EXPECT_DOUBLE_EQ(infer_measured_seconds(run), 1.75);
  EXPECT_EQ(infer_measured_seconds(json::object()), 0.0);
  // The headline pointers find the inference numbers.
  const json summary = summarize_runs({run});
  EXPECT_EQ(summary["perplexity"]["mean"], 12.5);
  EXPECT_EQ(summary["amu_live_gb"]["mean"], 0.4);
  EXPECT_EQ(summary["aec_avg_power_w"]["mean"], 30.0);
  EXPECT_EQ(summary["it_tokens_per_second"]["mean"], 100.0);
  EXPECT_EQ(summary["bits_per_weight"]["mean"], 16.0);
}

TEST(InferRows, McrAgainstTheBf16RowOfTheSameModel) {
  std::vector<McrInput> in(6);
  in[0] = {"A", "bf16", 16, 0.60, 10.0, 2000};
  in[1] = {"A", "int4", 4, 0.54, 11.0, 600};    // accuracy ratio 0.9
  in[2] = {"A", "int8", 8, NAN, 10.5, 1100};    // no accuracy: PPL ratio 10 / 10.5
  in[3] = {"A", "f32", 32, 0.60, 10.0, 4000};
  in[4] = {"B", "int4", 4, 0.5, 5.0, 100};      // no bf16 row of model B
  in[5] = {"A", "fp16", 16, NAN, NAN, 2000};    // no quality
  const auto r = compute_mcr(in);
  EXPECT_DOUBLE_EQ(r[0].mcr, 1.0);
  EXPECT_DOUBLE_EQ(r[0].mcr_bytes, 1.0);
  EXPECT_DOUBLE_EQ(r[1].mcr, 4.0 * 0.9);
  EXPECT_DOUBLE_EQ(r[1].mcr_bytes, 2000.0 / 600.0 * 0.9);
  EXPECT_DOUBLE_EQ(r[2].mcr, 2.0 * 10.0 / 10.5);
  EXPECT_DOUBLE_EQ(r[2].mcr_bytes, 2000.0 / 1100.0 * 10.0 / 10.5);
  EXPECT_DOUBLE_EQ(r[3].mcr, 0.5);
  EXPECT_DOUBLE_EQ(r[3].mcr_bytes, 0.5);
  EXPECT_TRUE(std::isnan(r[4].mcr));
  EXPECT_TRUE(std::isnan(r[4].mcr_bytes));
  EXPECT_TRUE(std::isnan(r[5].mcr));
  // A bf16 row without any quality is still the reference (1).
  const auto speed = compute_mcr({{"C", "bf16", 16, NAN, NAN, 2000}, {"C", "int4", 4, NAN, NAN, 500}});
  EXPECT_DOUBLE_EQ(speed[0].mcr, 1.0);
  EXPECT_TRUE(std::isnan(speed[1].mcr));
}

// Infer rows start from the checkpoint of the pretrain row they name, with
// its tokenizer and validation split: perplexity, accuracy and speed are
// recorded, the rows get their own table, a second run is cached, --filter
// keeps the source. A card row runs with random weights and says why it has
// no quality.
TEST(InferRows, RunInProcessFromThePretrainedSource) {
  test::TrainEnv& env = test::TrainEnv::get();
  TempDir d("el_runner_infer_test", "src");
  const std::string task = std::string(EL_TEST_DATA_DIR) + "/eval/generic.jsonl";
  const std::string text = fmt::format(
      "name: inf\nwarmup_steps: 1\n"
      "defaults: {{dataset: {}, batch_size: 2, seq_len: 16, steps: 3, warmup: 1, eval_batches: 1,\n"
      "           batch_sizes: \"1,2\", prompt_len: 6, gen_len: 3, eval_tokens: 128, group_size: 32,\n"
      "           act_precision: f32, choice_task: {}, choice_items: 3, calib_samples: 4, calib_seq_len: 16}}\n"
      "experiments:\n  - {{axis: pretrain, label: src, card: {}}}\n"
      "  - {{axis: infer, label: \"q {{precision}}\", model: \"pretrained:src\", precision: [bf16, int8]}}\n"
      "  - {{axis: infer, label: q gptq, model: \"pretrained:src\", precision: int4, quant_method: gptq}}\n"
      "  - {{axis: infer, label: card, model: {}, precision: bf16, batch_sizes: \"2\"}}\n",
      env.data_dir, task, env.card_path, env.card_path);
  const SuiteFile s = parse_ok(text);
  ASSERT_EQ(s.experiments.size(), 5u);
  auto r = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 5u);
  for (const auto& row : r->rows) ASSERT_EQ(row.status, "ok") << row.label << ": " << row.record.dump().substr(0, 2000);
  EXPECT_EQ(r->peaks.size(), 1u) << "only the pretrain row calibrates";
  const json& src = r->rows[0].record;
  const json& bf16 = r->rows[1].record;
  EXPECT_EQ(bf16["axis"], "infer");
  EXPECT_EQ(bf16["config"]["model"]["pretrained"], src["config_hash"]);
  EXPECT_EQ(bf16["card"], "trainer-test");
  const json& run = bf16["runs"][0];
  EXPECT_TRUE(run["perplexity"].is_number()) << run["metrics"].dump();
  EXPECT_GT(run["perplexity"].get<double>(), 1.0);
  EXPECT_TRUE(run["quality"]["choice"].is_object());
  EXPECT_EQ(run["quality"]["choice"]["items"], 3);
  EXPECT_TRUE(run["metrics"]["it_tokens_per_second_by_batch"].contains("2"));
  EXPECT_GT(run["measured_seconds"].get<double>(), 0);
  EXPECT_TRUE(run["metrics"]["memory_energy"].is_object());
  for (const char* m : {"perplexity", "choice_acc", "it_tokens_per_second", "ttft_s", "tpot_s", "latency_s",
                        "amu_live_gb", "weight_bytes", "bits_per_weight"}) {
    EXPECT_TRUE(bf16["summary"].contains(m)) << m;
  }
  EXPECT_EQ(bf16["summary"]["bits_per_weight"]["mean"], 16.0);
  const json& int8 = r->rows[2].record;
  EXPECT_TRUE(int8["runs"][0]["quantization"].is_object());
  EXPECT_DOUBLE_EQ(int8["summary"]["bits_per_weight"]["mean"].get<double>(), 8.0 + 16.0 / 32);
  // Its unquantized tensors are f32 (act_precision): less than the f32 model, not the bf16 one.
  EXPECT_LT(int8["summary"]["weight_bytes"]["mean"].get<double>(),
            2 * bf16["summary"]["weight_bytes"]["mean"].get<double>());
  EXPECT_EQ(r->rows[3].record["config"]["infer"]["method"], "gptq");
  // The card row: random weights, quality null with the reason.
  const json& card = r->rows[4].record["runs"][0]["metrics"];
  EXPECT_TRUE(card["perplexity"].is_null());
  EXPECT_EQ(card["perplexity_unavailable_reason"], "random weights (a model card)");
  EXPECT_TRUE(card["choice_acc"].is_null());
  EXPECT_EQ(card["choice_acc_unavailable_reason"], "random weights (a model card)");
  EXPECT_TRUE(r->rows[4].record["config"]["model"].contains("card"));
  // The tables: pretrain rows in the main one, infer rows in their own.
  EXPECT_HAS(r->table, "inference:");
  EXPECT_HAS(r->table, "IT b1 tok/s");
  EXPECT_HAS(r->table, "IT b2 tok/s");
  EXPECT_HAS(r->table, "MCR bytes");
  EXPECT_HAS(r->table, "int4 gptq");
  {
    std::ifstream in(r->csv_path);
    std::string header;
    std::getline(in, header);
    EXPECT_HAS(header, "it_tokens_per_second");
    EXPECT_HAS(header, "bits_per_weight");
  }
  // Again: every row cached.
  auto again = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(again.ok()) << again.error().message();
  for (const auto& row : again->rows) EXPECT_TRUE(row.cached) << row.label;
  EXPECT_HAS(again->table, "q bf16 (cached)");
  // --filter keeps a kept infer row's source.
  auto planned = plan_suite(s, PlanOptions{0, true, "q gptq"});
  ASSERT_TRUE(planned.ok()) << planned.error().message();
  ASSERT_EQ(planned->experiments.size(), 2u);
  EXPECT_EQ(planned->experiments[0].label, "src");
}

}  // namespace
}  // namespace el::bench
