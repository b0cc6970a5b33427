// The suite runner (bench/runner.h): the repetition and minimum-duration
// rule, the merge of repetitions into one record, the resolved config and the
// dataset identity it hashes, the index of earlier results (skip by hash),
// planning (step override, MFU probe, filter), "not supported" rows, and a
// whole tiny suite run in process: repetitions, then cached, then --force.
// Child-process runs are exercised by the CLI tests (tests/cli/cli_test.sh).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "bench/builtin_suites.h"
#include "bench/runner.h"
#include "bench/runner_finetune.h"
#include "bench/table.h"
#include "common/test_cards.h"
#include "common/train_env.h"
#include "models/decoder_lm.h"
#include "runner_test_util.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

SuiteFile parse_ok(const std::string& text) {
  auto r = parse_suite_yaml(text, "s.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message() << "\n" << text;
  return r.ok() ? r.value() : SuiteFile{};
}

TEST(RepetitionRule, DeclaredThenMinimumDurationThenCap) {
  // The declared repetitions always run.
  for (int64_t done = 0; done < 3; ++done) EXPECT_TRUE(need_another_repetition(3, 0, done, 100));
  EXPECT_FALSE(need_another_repetition(3, 0, 3, 0));
  // Then more while the measured total is short of min_duration_s ...
  EXPECT_TRUE(need_another_repetition(1, 10, 1, 4));
  EXPECT_TRUE(need_another_repetition(1, 10, 5, 9.99));
  EXPECT_FALSE(need_another_repetition(1, 10, 5, 10));
  // ... up to kMaxRepetitionFactor x the declared number.
  EXPECT_FALSE(need_another_repetition(1, 10, kMaxRepetitionFactor, 4));
  EXPECT_TRUE(need_another_repetition(2, 10, 2 * kMaxRepetitionFactor - 1, 1));
  EXPECT_FALSE(need_another_repetition(2, 10, 2 * kMaxRepetitionFactor, 1));
}

TEST(RepetitionRule, MeasuredSecondsAreTheTimedSteps) {
  EXPECT_DOUBLE_EQ(measured_seconds(json{{"metrics", {{"al_seconds", {{"n", 4}, {"mean", 0.5}}}}}}), 2.0);
  EXPECT_DOUBLE_EQ(measured_seconds(json{{"metrics", {{"al_seconds", {{"n", 0}, {"mean", nullptr}}}}}}), 0.0);
  EXPECT_DOUBLE_EQ(measured_seconds(json{{"status", "failed"}}), 0.0);
  EXPECT_DOUBLE_EQ(measured_seconds(json()), 0.0);
}

json fake_run(int rep, double tokens_per_second) {
  return {{"repetition", rep},
          {"status", "ok"},
          {"card", "tiny"},
          {"parameters", 1000},
          {"perplexity", 100.0 + rep},
          {"metrics", {{"tokens_per_second", tokens_per_second}, {"al_seconds", {{"n", 9}, {"mean", 0.1}}}}}};
}

TEST(ExperimentRecord, RepetitionsMergeIntoOneRecordWithStatistics) {
  const ExperimentInfo info{"s", "tiny", "pretrain", "20261122-000000", json{{"axis", "pretrain"}, {"x", 1}}, json()};
  auto rec = experiment_record(info, {fake_run(1, 100), fake_run(2, 110), fake_run(3, 90)}, json{{"b", 1}},
                               json{{"m", 1}});
  ASSERT_TRUE(rec.ok()) << rec.error().message();
  EXPECT_EQ(rec->at("schema"), kResultSchemaV2);
  EXPECT_EQ(rec->at("status"), "ok");
  EXPECT_EQ(rec->at("repetitions"), 3);
  EXPECT_EQ(rec->at("config_hash"), config_hash(info.config));
  ASSERT_EQ(rec->at("runs").size(), 3u);
  EXPECT_EQ(rec->at("runs")[2]["repetition"], 3);
  const json& tps = rec->at("summary")["tokens_per_second"];
  EXPECT_EQ(tps["n"], 3);
  EXPECT_DOUBLE_EQ(tps["mean"].get<double>(), 100.0);
  ASSERT_TRUE(tps["ci95"].is_array());
  // mean ± t(2) * s / sqrt(3), s = 10.
  EXPECT_NEAR(tps["ci95"][1].get<double>() - 100.0, 4.302653 * 10 / std::sqrt(3.0), 1e-6);
  EXPECT_EQ(tps["noisy"], true);  // CV 10%

  json failed = {{"repetition", 2}, {"status", "failed"}, {"error", "exit code 3"}};
  rec = experiment_record(info, {fake_run(1, 100), failed}, json(), json());
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->at("status"), "partial");
  EXPECT_EQ(rec->at("error"), "exit code 3");
  EXPECT_EQ(rec->at("summary")["tokens_per_second"]["n"], 1);

  rec = experiment_record(info, {}, json(), json());
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->at("repetitions"), 0);
  EXPECT_EQ(rec->at("status"), "failed");
}

json ok_record(const std::string& hash, const std::string& status, const std::string& label) {
  return {{"schema", kResultSchemaV2}, {"suite", "s"}, {"label", label}, {"config_hash", hash},
          {"status", status},          {"runs", json::array()}};
}

TEST(ResultIndex, FindsTheNewestOkRecordOfAHash) {
  TempDir d("el_runner_test", "index");
  {
    std::ofstream a(d.path + "/a.jsonl");
    a << ok_record("h1", "ok", "first").dump() << "\n" << ok_record("h2", "failed", "x").dump() << "\n";
    std::ofstream b(d.path + "/b.jsonl");
    b << ok_record("h3", "partial", "p").dump() << "\n" << ok_record("h1", "ok", "second").dump() << "\n";
    std::ofstream(d.path + "/c.txt") << ok_record("h9", "ok", "not a jsonl file").dump() << "\n";
    std::ofstream(d.path + "/bad.jsonl") << "{oops\n" << ok_record("h4", "ok", "behind a bad line").dump() << "\n";
    std::ofstream(d.path + "/torn.jsonl") << ok_record("h5", "ok", "t").dump() << "\n{\"schema\":\"efficientl";
  }
  const ResultIndex idx = index_results_dir(d.path);
  ASSERT_NE(idx.find("h1"), nullptr);
  EXPECT_EQ(idx.find("h1")->where, d.path + "/b.jsonl:2");  // the later file wins
  EXPECT_EQ(idx.find("h1")->record["label"], "second");
  EXPECT_EQ(idx.find("h2"), nullptr) << "a failed record is no result";
  EXPECT_EQ(idx.find("h3"), nullptr) << "nor is a partial one";
  EXPECT_EQ(idx.find("h9"), nullptr);
  EXPECT_EQ(idx.find("h4"), nullptr) << "an unreadable file is not used";
  ASSERT_NE(idx.find("h5"), nullptr);
  ASSERT_EQ(idx.warnings.size(), 2u);
  EXPECT_HAS(idx.warnings[0], "bad.jsonl:1: not a JSON record");
  EXPECT_HAS(idx.warnings[0], "its records are not used to skip experiments");
  EXPECT_HAS(idx.warnings[1], "torn.jsonl:2: skipped a torn last line");
  EXPECT_TRUE(index_results_dir(d.path + "/nonexistent").ok.empty());
}

TEST(DatasetIdentity, DependsOnContentNotPath) {
  test::TrainEnv& env = test::TrainEnv::get();
  TempDir d("el_runner_test", "identity");
  const std::string cache = d.path + "/cache/identity.json";
  auto ds = data::load_dataset_manifest(env.data_dir);
  ASSERT_TRUE(ds.ok()) << ds.error().message();
  auto id = dataset_identity(ds.value(), cache);
  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(id->at("tokenizer_sha256"), ds->tokenizer_sha256);
  EXPECT_EQ(id->at("train_tokens"), ds->train_tokens);
  EXPECT_EQ(id->at("shards_sha256").get<std::string>().size(), 64u);
  EXPECT_EQ(id->dump().find(env.data_dir), std::string::npos) << "no path in the identity";
  ASSERT_TRUE(fs::exists(cache));

  // The same files elsewhere: the same identity.
  fs::copy(env.data_dir, d.path + "/copy", fs::copy_options::recursive);
  auto copy = data::load_dataset_manifest(d.path + "/copy");
  ASSERT_TRUE(copy.ok());
  auto copy_id = dataset_identity(copy.value(), cache);
  ASSERT_TRUE(copy_id.ok());
  EXPECT_EQ(copy_id.value(), id.value());

  // The cache is used while size and mtime are unchanged ...
  json c = json::parse(std::ifstream(cache));
  const std::string key = fs::absolute(d.path + "/copy").lexically_normal().string();
  ASSERT_TRUE(c.contains(key)) << c.dump();
  c[key]["shards_sha256"] = "from-the-cache";
  std::ofstream(cache) << c.dump();
  EXPECT_EQ(dataset_identity(copy.value(), cache)->at("shards_sha256"), "from-the-cache");
  // ... and a changed shard is hashed again.
  const std::string shard = copy->train_shards.front();
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-2, std::ios::end);
    f.put('\x07');
  }
  // Coarse file-system clocks may give the rewrite the copy's mtime; a real
  // rewrite of a shard is seconds apart from its making.
  fs::last_write_time(shard, fs::last_write_time(shard) + std::chrono::seconds(2));
  auto changed = dataset_identity(copy.value(), cache);
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(changed->at("shards_sha256"), "from-the-cache");
  EXPECT_NE(changed->at("shards_sha256"), id->at("shards_sha256"));

  fs::remove(shard);
  auto missing = dataset_identity(copy.value(), cache);
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.error().message(), shard);
}

TEST(ResolvedConfig, CoversCardDatasetAndDeviceKindButNoPaths) {
  test::TrainEnv& env = test::TrainEnv::get();
  const SuiteFile s = parse_ok(fmt::format(
      "name: t\nexperiments:\n  - {{axis: pretrain, card: {}, dataset: {}, batch_size: 2, seq_len: 16}}\n",
      env.card_path, env.data_dir));
  const ExpandedExperiment& e = s.experiments.at(0);
  auto cfg = pretrain_train_config(e, Device::cpu(), "");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  const json identity = {{"shards_sha256", "abc"}};
  auto c = resolved_config(e, cfg.value(), identity, true);
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->at("axis"), "pretrain");
  EXPECT_EQ(c->at("device_kind"), "cpu");
  EXPECT_EQ(c->at("dataset"), identity);
  EXPECT_EQ(c->at("train")["model"], "trainer-test");  // the card's name, not its path
  EXPECT_FALSE(c->at("train").contains("data_dir"));
  EXPECT_FALSE(c->at("train").contains("device"));
  EXPECT_EQ(c->at("train")["batch_size"], 2);
  EXPECT_EQ(c->at("train")["timing_warmup_steps"], 1);
  EXPECT_HAS(c->at("model_card").get<std::string>(), "d_ff: 64");
  EXPECT_EQ(c->at("measure")["repetitions"], 1);
  EXPECT_EQ(c->at("isolated"), true);
  EXPECT_EQ(c->dump().find(env.dir), std::string::npos) << c->dump();
  const std::string h = config_hash(c.value());

  // Each of these changes the hash.
  EXPECT_NE(config_hash(resolved_config(e, cfg.value(), json{{"shards_sha256", "abd"}}, true).value()), h);
  EXPECT_NE(config_hash(resolved_config(e, cfg.value(), identity, false).value()), h);
  TrainConfig cuda = cfg.value();
  cuda.device = Device::cuda(1);
  EXPECT_EQ(resolved_config(e, cuda, identity, true)->at("device_kind"), "cuda");
  EXPECT_NE(config_hash(resolved_config(e, cuda, identity, true).value()), h);
  TrainConfig other = cfg.value();
  other.model = env.other_card_path;  // same card name, another d_ff
  EXPECT_NE(config_hash(resolved_config(e, other, identity, true).value()), h);
  TrainConfig moved = cfg.value();
  moved.data_dir = "/elsewhere";
  EXPECT_EQ(config_hash(resolved_config(e, moved, identity, true).value()), h);

  other.model = "no-such-card";
  auto bad = resolved_config(e, other, identity, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error().message(), "no-such-card");
}

TEST(PlanSuite, StepOverrideProbeAndFilter) {
  auto quick = suite_spec_to_file(quick_suite());
  ASSERT_TRUE(quick.ok()) << quick.error().message();
  auto p = plan_suite(quick.value(), PlanOptions{20, true, ""});
  ASSERT_TRUE(p.ok()) << p.error().message();
  // pretrain (9 attention / encoding + 4 architecture II), finetune (every
  // method), infer (6 GQA + 4 architecture II), probe
  ASSERT_EQ(p->experiments.size(), 13u + 7u + 10u + 1u);
  EXPECT_EQ(p->experiments[0].field("steps"), 20);
  EXPECT_EQ(p->experiments[0].field("warmup"), 15);  // still ends before the last step
  EXPECT_NE(p->experiments[0].hash, quick->experiments[0].hash);
  EXPECT_EQ(p->experiments[12].field("steps"), 20);  // Pythia, the last pretraining row
  EXPECT_EQ(p->experiments[13].field("steps"), 60) << "the override is the pretraining's";
  const ExpandedExperiment& probe = p->experiments.back();
  EXPECT_TRUE(probe.mfu_probe);
  EXPECT_FALSE(p->experiments[0].mfu_probe);
  EXPECT_EQ(probe.label, "small (MFU probe)");
  EXPECT_EQ(probe.field("card"), "small");
  EXPECT_EQ(probe.field("batch_size"), 8);
  EXPECT_EQ(probe.field("seq_len"), 256);
  EXPECT_EQ(probe.field("steps"), 3);  // the override is not the probe's
  EXPECT_EQ(probe.field("warmup"), 0);
  EXPECT_EQ(probe.field("eval_batches"), 1);

  p = plan_suite(quick.value(), PlanOptions{10, false, ""});
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->experiments.size(), 13u + 7u + 10u);
  EXPECT_EQ(p->experiments[2].field("warmup"), 1);  // a tenth of the steps
  EXPECT_EQ(p->experiments[20].field("prompt_len"), 64) << "the override is the pretraining's";

  p = plan_suite(quick.value(), PlanOptions{0, true, "^gqa$|probe"});
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->experiments.size(), 2u);
  EXPECT_EQ(p->experiments[0].label, "GQA");
  EXPECT_EQ(p->experiments[1].label, "small (MFU probe)");

  p = plan_suite(quick.value(), PlanOptions{0, true, "zzz"});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().where, "--filter");
  EXPECT_HAS(p.error().what, "--filter 'zzz' matches no experiment label");

  SuiteFile clash = quick.value();
  clash.mfu_probe->label = "GQA";
  p = plan_suite(clash, PlanOptions{});
  ASSERT_FALSE(p.ok());
  EXPECT_HAS(p.error().what, "the MFU probe's label 'GQA' is also an experiment's label");
  SuiteFile vocab = quick.value();
  vocab.mfu_probe->card = "lite-mha";  // 8192 pieces
  p = plan_suite(vocab, PlanOptions{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().where, "<built-in quick>: mfu_probe");
  EXPECT_HAS(p.error().what, "card 'lite-mha' has vocab_size 8192 but the built-in tokenizer has 4096 pieces");
}

// The built-in C++ specs run through the suite-file path; converted, they are
// exactly their configs/suites files (same labels, same per-experiment hash).
TEST(PlanSuite, BuiltinSpecsConvertToTheirFiles) {
  for (const auto& [name, spec] : {std::pair{"quick", quick_suite()}, std::pair{"gpu-lite", gpu_lite_suite()}}) {
    auto converted = suite_spec_to_file(spec);
    ASSERT_TRUE(converted.ok()) << converted.error().message() << "\n" << suite_spec_to_yaml(spec);
    auto file = find_suite_file(name);
    ASSERT_TRUE(file.ok()) << file.error().message();
    EXPECT_EQ(converted->name, file->name);
    EXPECT_EQ(converted->description, file->description);
    EXPECT_EQ(converted->sized_for, file->sized_for);
    EXPECT_EQ(converted->repetitions, file->repetitions);
    EXPECT_EQ(converted->warmup_steps, file->warmup_steps);
    EXPECT_EQ(converted->min_duration_s, file->min_duration_s);
    EXPECT_EQ(converted->mfu_probe.has_value(), file->mfu_probe.has_value());
    ASSERT_EQ(converted->experiments.size(), file->experiments.size()) << name;
    for (size_t i = 0; i < file->experiments.size(); ++i) {
      EXPECT_EQ(converted->experiments[i].label, file->experiments[i].label);
      EXPECT_EQ(converted->experiments[i].config, file->experiments[i].config) << name << " " << i;
      EXPECT_EQ(converted->experiments[i].hash, file->experiments[i].hash);
    }
  }
}

TEST(RunSuite, ChildCommandLineCarriesTheWholeConfig) {
  TrainConfig c;
  c.model = "tiny";
  c.data_dir = "/d";
  c.device = Device::cuda(1);
  c.lr = 3e-3f;
  c.timing_warmup_steps = 5;
  metrics::PeakCalibration peak;
  peak.gflops = 123.5;
  peak.dtype = "bf16";
  c.peak = peak;
  const auto argv = train_command_line(c, "/r.json");
  auto value = [&](const std::string& flag) {
    for (size_t i = 0; i + 1 < argv.size(); ++i)
      if (argv[i] == flag) return argv[i + 1];
    return std::string("(absent)");
  };
  EXPECT_EQ(argv.front(), "train");
  EXPECT_EQ(value("--device"), "cuda:1");
  EXPECT_EQ(value("--lr"), "0.003");  // shortest round-trip: the child parses back the same float
  EXPECT_EQ(value("--timing-warmup"), "5");
  EXPECT_EQ(value("--report"), "/r.json");
  EXPECT_EQ(value("--peak-gflops"), "123.5");
  EXPECT_EQ(value("--peak-dtype"), "bf16");
}

SuiteOptions quiet_options(const std::string& dir) {
  SuiteOptions o;
  o.results_dir = dir;
  o.in_process = true;
  o.progress = nullptr;
  o.calibration_seconds = 0.05;
  return o;
}

TEST(RunSuite, FailsBeforeRunningAnything) {
  const SuiteFile s = parse_ok("name: t\nallow_missing: true\nexperiments:\n  - {axis: infer, model: m}\n");
  SuiteOptions o = quiet_options("/proc/el-runner-cannot-write");
  auto r = run_suite(s, o);
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "/proc/el-runner-cannot-write");
  TempDir d("el_runner_test", "noexe");
  o = quiet_options(d.path + "/res");
  o.in_process = false;
  r = run_suite(s, o);
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().what, "self_exe is empty");
  EXPECT_FALSE(fs::exists(d.path + "/res"));
}

// Entries this build cannot run are rows and records with their reason, not
// dropped; nothing is trained, no dataset is made.
TEST(RunSuite, NotSupportedEntriesAreRecorded) {
  TempDir d("el_runner_test", "notsup");
  const SuiteFile s = parse_ok(
      "name: ns\nallow_missing: true\nexperiments:\n  - {axis: infer, model: m, precision: [bf16, int4]}\n"
      "  - {axis: finetune, model: m, dataset: alpaca, method: lora}\n");
  auto r = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 3u);
  EXPECT_EQ(r->failures(), 0);
  EXPECT_TRUE(r->peaks.empty());
  for (const auto& row : r->rows) EXPECT_EQ(row.status, "not_supported") << row.label;
  EXPECT_EQ(r->rows[0].card, "m");
  EXPECT_HAS(r->table, "not supported");
  const auto lines = read_lines(r->jsonl_path);
  ASSERT_EQ(lines.size(), 3u);
  const json rec = json::parse(lines[2]);
  EXPECT_EQ(rec["status"], "not_supported");
  EXPECT_HAS(rec["reason"].get<std::string>(), "missing model 'm' (no config.json in");
  EXPECT_EQ(rec["axis"], "finetune");
  EXPECT_EQ(rec["repetitions"], 0);
  EXPECT_EQ(rec["config_hash"], s.experiments[2].hash);
  EXPECT_EQ(read_lines(r->csv_path).size(), 4u);  // header + 3 rows
  EXPECT_FALSE(fs::exists(d.path + "/cache")) << "no dataset was prepared";
}

// A tiny suite in process: 2 repetitions merged into one record; run again,
// it is cached and trains nothing; --force runs it again; a minimum duration
// out of reach stops at the repetition cap.
TEST(RunSuite, RepetitionsThenCachedThenForce) {
  test::TrainEnv& env = test::TrainEnv::get();
  TempDir d("el_runner_test", "e2e");
  const std::string text = fmt::format(
      "name: tiny\nallow_missing: true\nrepetitions: 2\nwarmup_steps: 1\n"
      "defaults: {{dataset: {}, batch_size: 2, seq_len: 16, steps: 3, warmup: 1, eval_batches: 1}}\n"
      "experiments:\n  - {{axis: pretrain, label: a, card: {}}}\n  - {{axis: infer, model: m}}\n",
      env.data_dir, env.card_path);
  const SuiteFile s = parse_ok(text);
  auto r = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 2u);
  const SuiteRow& a = r->rows[0];
  EXPECT_EQ(a.status, "ok");
  EXPECT_FALSE(a.cached);
  EXPECT_EQ(a.card, "trainer-test");
  EXPECT_EQ(a.record["repetitions"], 2);
  ASSERT_EQ(a.record["runs"].size(), 2u);
  EXPECT_EQ(a.record["runs"][1]["repetition"], 2);
  EXPECT_EQ(a.record["runs"][0]["isolated"], false);
  EXPECT_GT(a.record["runs"][0]["measured_seconds"].get<double>(), 0);
  EXPECT_EQ(a.record["summary"]["tokens_per_second"]["n"], 2);
  EXPECT_EQ(a.record["config"]["train"]["timing_warmup_steps"], 1);
  EXPECT_EQ(a.record["config"]["measure"]["repetitions"], 2);
  EXPECT_EQ(r->peaks.size(), 1u);
  EXPECT_EQ(r->datasets.size(), 1u);
  const std::string first_file = r->jsonl_path;
  ASSERT_EQ(read_lines(first_file).size(), 2u);
  EXPECT_EQ(json::parse(read_lines(first_file)[0]), a.record);

  // Again: cached from the first file's line 1, nothing trained or calibrated.
  auto again = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_TRUE(again->rows[0].cached);
  EXPECT_EQ(again->rows[0].cached_from, first_file + ":1");
  EXPECT_EQ(again->rows[0].record, a.record);
  EXPECT_TRUE(again->peaks.empty());
  EXPECT_HAS(again->table, "a (cached)");
  EXPECT_EQ(again->rows[1].status, "not_supported");  // recorded again: it is not a result

  // --force runs it again.
  SuiteOptions force = quiet_options(d.path);
  force.force = true;
  ::sleep(1);  // a new run id, so a new file
  auto forced = run_suite(s, force);
  ASSERT_TRUE(forced.ok()) << forced.error().message();
  EXPECT_FALSE(forced->rows[0].cached);
  EXPECT_EQ(forced->rows[0].record["repetitions"], 2);
  EXPECT_NE(forced->jsonl_path, first_file);

  // min_duration_s out of reach: the declared 1 repetition, then more up to the cap.
  std::string longer = text;
  longer.replace(longer.find("repetitions: 2"), 14, "repetitions: 1\nmin_duration_s: 1000");
  auto capped = run_suite(parse_ok(longer), quiet_options(d.path));
  ASSERT_TRUE(capped.ok()) << capped.error().message();
  EXPECT_EQ(capped->rows[0].record["repetitions"], kMaxRepetitionFactor);
  EXPECT_EQ(capped->rows[0].record["config"]["measure"]["min_duration_s"], 1000.0);
}


// A mixture of experts' record keeps its active parameters beside the total
// and TT per active parameter; the table gets an "active" column (a dense
// suite's table has none, a dense row's active count is its total).
TEST(RunSuite, MixtureOfExpertsRecordsItsActiveParameters) {
  test::TrainEnv& env = test::TrainEnv::get();
  TempDir d("el_runner_test", "moe");
  const std::string moe_card = d.path + "/moe.yaml";
  std::ofstream(moe_card) << test::small_card_yaml("moe-test", 64, 400, 32,
                                                   "qkv_bias: false\nmoe_experts: 4\nmoe_top_k: 2\n");
  const std::string text = fmt::format(
      "name: moe\nrepetitions: 1\nwarmup_steps: 1\n"
      "defaults: {{dataset: {}, batch_size: 2, seq_len: 16, steps: 2, warmup: 1, eval_batches: 1}}\n"
      "experiments:\n  - {{axis: pretrain, label: Dense, card: {}}}\n  - {{axis: pretrain, label: MoE, card: {}}}\n",
      env.data_dir, env.card_path, moe_card);
  auto r = run_suite(parse_ok(text), quiet_options(d.path));
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 2u);
  const ModelCard dense = find_model_card(env.card_path).value(), moe = find_model_card(moe_card).value();
  const ParameterCounts dc = count_parameters(dense), mc = count_parameters(moe);
  ASSERT_LT(mc.active, mc.total);
  const json& dr = r->rows[0].record;
  const json& mr = r->rows[1].record;
  ASSERT_EQ(mr["status"], "ok") << mr.dump();
  EXPECT_EQ(dr["active_parameters"], dc.total);
  EXPECT_EQ(mr["parameters"], mc.total);
  EXPECT_EQ(mr["active_parameters"], mc.active);
  const json& m = mr["runs"][0]["metrics"];
  EXPECT_NEAR(m["tt_tokens_per_active_param_per_second"].get<double>(),
              m["tokens_per_second"].get<double>() / static_cast<double>(mc.active), 1e-12);
  EXPECT_GT(m["tt_tokens_per_active_param_per_second"].get<double>(),
            m["tt_tokens_per_param_per_second"].get<double>());
  EXPECT_EQ(mr["summary"]["tt_tokens_per_active_param_per_second"]["n"], 1);
  EXPECT_HAS(r->table, " active ");
  EXPECT_HAS(r->table, format_number(static_cast<double>(mc.active)));
  // Without the MoE row, no such column.
  std::vector<SuiteRow> dense_only = {r->rows[0]};
  EXPECT_EQ(render_suite_table(dense_only).find(" active "), std::string::npos);
}

// Finetune rows start from the checkpoint of the pretrain row they name: the
// runner keeps it under results/checkpoints/, the rows get their own table,
// and a cached source whose checkpoint is gone runs again. --filter keeps a
// kept row's source.
TEST(RunSuite, FinetuneRowsStartFromTheirPretrainedSource) {
  test::TrainEnv& env = test::TrainEnv::get();
  TempDir d("el_runner_test", "ft");
  // The environment's card with a context long enough for the alpaca prompt.
  const std::string card = d.path + "/ft-card.yaml";
  {
    std::ifstream in(env.card_path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    text.replace(text.find("max_seq_len: 32"), 15, "max_seq_len: 256");
    text.replace(text.find("name: trainer-test"), 18, "name: ft-card");
    std::ofstream(card) << text;
  }
  const std::string text = fmt::format(
      "name: ft\nwarmup_steps: 1\n"
      "defaults: {{dataset: {}, batch_size: 2, seq_len: 16, steps: 3, warmup: 1, eval_batches: 1}}\n"
      "experiments:\n  - {{axis: pretrain, label: src, card: {}}}\n"
      "  - {{axis: finetune, label: \"ft {{method}}\", model: \"pretrained:src\", dataset: {}, method: [lora, full],\n"
      "     batch_size: 2, grad_accum: 1, seq_len: 256, steps: 2, lr: 1.0e-3, lora_r: 4, lora_alpha: 8, precision: f32}}\n",
      env.data_dir, card, std::string(EL_TEST_DATA_DIR) + "/e2e/tiny_chat_sft.jsonl");
  const SuiteFile s = parse_ok(text);
  ASSERT_EQ(s.experiments.size(), 3u);
  EXPECT_EQ(s.experiments[1].label, "ft lora");
  EXPECT_EQ(s.experiments[1].config["source_card"], card);
  auto r = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 3u);
  for (const auto& row : r->rows) EXPECT_EQ(row.status, "ok") << row.label << ": " << row.record.dump();
  const json& lora = r->rows[1].record;
  EXPECT_EQ(lora["axis"], "finetune");
  EXPECT_EQ(lora["config"]["model"]["pretrained"], r->rows[0].record["config_hash"]);
  EXPECT_EQ(lora["config"]["finetune"]["method"], "lora");
  EXPECT_GT(lora["runs"][0]["trainable_parameters"].get<int64_t>(), 0);
  EXPECT_LT(lora["runs"][0]["trainable_parameters"].get<int64_t>(), lora["parameters"].get<int64_t>());
  EXPECT_TRUE(lora["summary"].contains("st_samples_per_param_per_second"));
  EXPECT_TRUE(lora["summary"].contains("val_loss"));
  EXPECT_HAS(r->table, "fine-tuning:");
  EXPECT_HAS(r->table, "ST smp/param/s");
  const std::string ckpt =
      pretrain_checkpoint_dir(d.path, r->rows[0].record["config_hash"].get<std::string>()) +
      "/checkpoint.safetensors";
  EXPECT_TRUE(fs::exists(ckpt)) << ckpt;

  // Again: all cached. Without the checkpoint, the source runs again (the
  // finetune rows stay cached: same source config).
  auto again = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(again.ok()) << again.error().message();
  for (const auto& row : again->rows) EXPECT_TRUE(row.cached) << row.label;
  fs::remove(ckpt);
  auto rerun = run_suite(s, quiet_options(d.path));
  ASSERT_TRUE(rerun.ok()) << rerun.error().message();
  EXPECT_FALSE(rerun->rows[0].cached);
  EXPECT_TRUE(rerun->rows[1].cached);
  EXPECT_TRUE(fs::exists(ckpt));

  // --filter: the finetune row keeps its source.
  auto planned = plan_suite(s, PlanOptions{0, true, "ft full"});
  ASSERT_TRUE(planned.ok()) << planned.error().message();
  ASSERT_EQ(planned->experiments.size(), 2u);
  EXPECT_EQ(planned->experiments[0].label, "src");
  EXPECT_EQ(planned->experiments[1].label, "ft full");

  // A source that is not a pretrain row above is a parse error.
  auto bad = parse_suite_yaml(
      "name: b\nexperiments:\n  - {axis: finetune, model: \"pretrained:nope\", dataset: builtin, method: lora}\n",
      "b.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error().message(), "'pretrained:nope' names no earlier pretrain experiment");
}

}  // namespace
}  // namespace el::bench
