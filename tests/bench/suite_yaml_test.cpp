// Suite files (bench/suite_yaml.h): expansion order and labels, the resolved
// config hash, the built-in suite files (quick / gpu-lite equal to their C++
// specs, the paper suites' "not supported" rows) and every bad-input message.
// Nothing is trained here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "bench/builtin_suites.h"
#include "bench/suite_yaml.h"
#include "data/sha256.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

// A suite header followed by `body` (lines after "experiments:" etc.).
std::string suite_text(const std::string& body) { return "name: t\nsized_for: cpu\n" + body; }

SuiteFile parse_ok(const std::string& text) {
  auto r = parse_suite_yaml(text, "s.yaml");
  EXPECT_TRUE(r.ok()) << r.error().message() << "\n" << text;
  return r.ok() ? r.value() : SuiteFile{};
}

Error parse_err(const std::string& text) {
  auto r = parse_suite_yaml(text, "s.yaml");
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? Error{} : r.error();
}

std::vector<std::string> labels(const SuiteFile& s) {
  std::vector<std::string> out;
  for (const auto& e : s.experiments) out.push_back(e.label);
  return out;
}

TEST(SuiteYaml, ProductOrderAndAutoLabels) {
  const auto s = parse_ok(suite_text(
      "experiments:\n"
      "  - axis: pretrain\n"
      "    card: [tiny, tiny-gqa]\n"
      "    batch_size: [8, 16]\n"
      "    steps: 10\n"));
  // The first list varies slowest; card is the label's head, swept fields follow.
  EXPECT_EQ(labels(s), (std::vector<std::string>{"tiny b8", "tiny b16", "tiny-gqa b8", "tiny-gqa b16"}));
  ASSERT_EQ(s.experiments.size(), 4u);
  EXPECT_EQ(s.experiments[1].field("batch_size"), 16);
  EXPECT_EQ(s.experiments[1].field("steps"), 10);
  EXPECT_EQ(s.experiments[1].field("lr"), 3e-3);  // fallback: SuiteSpec's default
  EXPECT_EQ(s.experiments[0].status, "ready");
  EXPECT_TRUE(s.experiments[0].supported);
  EXPECT_EQ(s.experiments[0].where, "s.yaml:4");
}

TEST(SuiteYaml, LabelTemplatesFixedLabelsAndDefaults) {
  const auto s = parse_ok(suite_text(
      "defaults: {batch_size: [4, 8], seq_len: 64}\n"
      "experiments:\n"
      "  - {axis: pretrain, label: \"{card}/{batch_size}/{axis}\", card: tiny}\n"
      "  - {axis: pretrain, label: fixed, card: tiny-mqa, seq_len: 32}\n"
      "  - {axis: pretrain, card: tiny-gqa, batch_size: 2}\n"));
  EXPECT_EQ(labels(s), (std::vector<std::string>{"tiny/4/pretrain", "tiny/8/pretrain", "fixed b4", "fixed b8",
                                                 "tiny-gqa"}));
  EXPECT_EQ(s.experiments[2].field("seq_len"), 32);  // the entry beats defaults
  EXPECT_EQ(s.experiments[0].field("seq_len"), 64);
  EXPECT_EQ(s.experiments[4].field("batch_size"), 2);
}

TEST(SuiteYaml, HashIsStableAndCoversEveryField) {
  const std::string base = "experiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001}\n";
  const auto a = parse_ok(suite_text(base)).experiments.at(0);
  const auto b = parse_ok(suite_text(base)).experiments.at(0);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.hash.size(), 64u);
  EXPECT_EQ(a.hash, data::sha256_hex(a.config.dump()));
  EXPECT_EQ(a.hash, config_hash(a.config));
  // The label is not part of the config: renaming keeps the hash.
  EXPECT_EQ(parse_ok(suite_text("experiments:\n  - {axis: pretrain, label: B, card: tiny, lr: 0.001}\n"))
                .experiments.at(0).hash,
            a.hash);
  // Writing a default explicitly resolves to the same config.
  EXPECT_EQ(parse_ok(suite_text("experiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001, steps: 400}\n"))
                .experiments.at(0).hash,
            a.hash);
  const std::vector<std::string> changed = {
      "experiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.002}\n",
      "experiments:\n  - {axis: pretrain, label: A, card: tiny-gqa, lr: 0.001}\n",
      "experiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001, seed: 7}\n",
      "experiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001, precision: bf16}\n",
      "repetitions: 2\nexperiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001}\n",
      "warmup_steps: 3\nexperiments:\n  - {axis: pretrain, label: A, card: tiny, lr: 0.001}\n",
  };
  for (const auto& t : changed) EXPECT_NE(parse_ok(suite_text(t)).experiments.at(0).hash, a.hash) << t;
}

TEST(SuiteYaml, MissingModelsOfOtherAxesAreStatuses) {
  // Finetune and infer rows run; with allow_missing, a model or dataset that
  // is not on this machine is the row's status.
  const auto s = parse_ok(suite_text(
      "allow_missing: true\n"
      "experiments:\n"
      "  - {axis: finetune, model: m1, dataset: d, method: [lora, dora]}\n"
      "  - {axis: infer, model: m2, precision: [bf16, int4]}\n"));
  EXPECT_EQ(labels(s), (std::vector<std::string>{"m1 lora", "m1 dora", "m2 bf16", "m2 int4"}));
  for (const auto& e : s.experiments) {
    EXPECT_FALSE(e.supported);
    EXPECT_FALSE(estimate_seconds(e, DeviceKind::cuda).has_value());
  }
  EXPECT_HAS(s.experiments[0].status, "missing model 'm1' (no config.json in");
  EXPECT_HAS(s.experiments[3].status, "missing model 'm2' (not a model card; no config.json in");
  EXPECT_EQ(s.experiments[3].config["model_kind"], "hf");
  auto tc = pretrain_train_config(s.experiments[0], Device::cpu(), "d");
  ASSERT_FALSE(tc.ok());
  EXPECT_HAS(tc.error().what, "is a finetune experiment, not pretrain");
}

// Infer rows: the fallbacks, batch_sizes from the older batch_size, the three
// kinds of model, a task file relative to the suite, and a hash that does not
// depend on how the batch sizes were written.
TEST(SuiteYaml, InferFieldsResolve) {
  const fs::path dir = fs::temp_directory_path() / ("el_suite_infer_" + std::to_string(::getpid()));
  fs::create_directories(dir / "hfm");
  std::ofstream(dir / "hfm" / "config.json") << "{}";
  std::ofstream(dir / "task.jsonl") << "{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0}\n";
  std::ofstream(dir / "s.yaml") << suite_text(
      "defaults: {batch_size: 16, prompt_len: 32, gen_len: 64}\n"
      "experiments:\n"
      "  - {axis: pretrain, label: P, card: tiny-gqa}\n"
      "  - {axis: infer, label: \"q {precision}\", model: \"pretrained:P\", precision: [bf16, int4], group_size: 64,\n"
      "     batch_sizes: \" 1, 8 ,32\", quant_method: gptq}\n"
      "  - {axis: infer, label: card, model: tiny-gqa, gen_len: 8, choice_task: \"\"}\n"
      "  - {axis: infer, label: hf, model: hfm, precision: int8, scheme: asymmetric, choice_task: task.jsonl}\n");
  auto r = load_suite_file((dir / "s.yaml").string());
  ASSERT_TRUE(r.ok()) << r.error().message();
  const auto& x = r->experiments;
  ASSERT_EQ(x.size(), 5u);
  EXPECT_EQ(labels(r.value()), (std::vector<std::string>{"P", "q bf16", "q int4", "card", "hf"}));
  EXPECT_EQ(x[1].config["model_kind"], "pretrained");
  EXPECT_EQ(x[1].config["source_card"], "tiny-gqa");
  EXPECT_EQ(x[1].field("batch_sizes"), "1,8,32");
  EXPECT_TRUE(x[1].field("batch_size").is_null()) << "only batch_sizes stays";
  EXPECT_EQ(x[1].field("prompt_len"), 32);  // from defaults
  EXPECT_EQ(x[1].field("gen_len"), 64);
  EXPECT_EQ(x[3].field("gen_len"), 8);      // the entry beats defaults
  EXPECT_EQ(x[1].field("act_precision"), "bf16");
  EXPECT_EQ(x[1].field("eval_tokens"), 65536);
  EXPECT_EQ(x[1].field("choice_task"), "builtin:corpus-cloze");
  EXPECT_EQ(x[1].field("choice_items"), 200);
  EXPECT_EQ(x[1].field("calib_samples"), 128);
  EXPECT_EQ(x[1].field("calib_seq_len"), 512);
  EXPECT_EQ(x[2].field("quant_method"), "gptq");
  EXPECT_EQ(x[3].config["model_kind"], "card");
  EXPECT_EQ(x[3].field("batch_sizes"), "16");  // the defaults' batch_size
  EXPECT_EQ(x[3].field("choice_task"), "");
  EXPECT_EQ(x[4].config["model_kind"], "hf");
  EXPECT_EQ(x[4].field("model"), (dir / "hfm").string());
  EXPECT_EQ(x[4].field("choice_task"), (dir / "task.jsonl").string());
  EXPECT_EQ(x[4].field("scheme"), "asymmetric");
  for (const auto& e : x) {
    EXPECT_TRUE(e.supported) << e.label << ": " << e.status;
    if (e.config.value("model_kind", "") == "hf") {
      EXPECT_FALSE(estimate_seconds(e, DeviceKind::cpu).has_value());  // no card to count from
    } else {
      EXPECT_GT(estimate_seconds(e, DeviceKind::cpu).value_or(0), 0) << e.label;
    }
  }
  // batch_size: 8 and batch_sizes: "8" are the same experiment.
  EXPECT_EQ(parse_ok(suite_text("experiments:\n  - {axis: infer, model: tiny, gen_len: 8, batch_size: 8}\n")).experiments[0].hash,
            parse_ok(suite_text("experiments:\n  - {axis: infer, model: tiny, gen_len: 8, batch_sizes: \"8\"}\n")).experiments[0].hash);
  fs::remove_all(dir);
}

TEST(SuiteYaml, ParseBatchSizesAndCardLimits) {
  EXPECT_EQ(parse_batch_sizes("1,8,32", "w").value(), (std::vector<int64_t>{1, 8, 32}));
  EXPECT_EQ(parse_batch_sizes(" 4 ", "w").value(), (std::vector<int64_t>{4}));
  for (const char* bad : {"", "1,", "0", "-1", "1.5", "a", "1234567890"}) {
    auto r = parse_batch_sizes(bad, "s.yaml:3");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().where, "s.yaml:3");
    EXPECT_HAS(r.error().what, "is not a positive integer");
  }
  const ModelCard tiny = find_model_card("tiny-gqa").value();  // d_model 128, d_ff 384, context 256
  EXPECT_EQ(infer_card_problem(tiny, "bf16", 100, 128, 128), "");  // float rows ignore the group size
  EXPECT_EQ(infer_card_problem(tiny, "int4", 64, 128, 128), "");
  EXPECT_EQ(infer_card_problem(tiny, "int4", 0, 128, 128), "");  // per channel
  EXPECT_HAS(infer_card_problem(tiny, "int8", 256, 8, 8), "group_size 256 does not divide d_model = 128");
  const ModelCard tl = find_model_card("tinyllama-1.1b").value();  // d_model 2048, d_ff 5632
  EXPECT_HAS(infer_card_problem(tl, "int4", 1024, 8, 8), "group_size 1024 does not divide d_ff = 5632");
  EXPECT_HAS(infer_card_problem(tiny, "bf16", 128, 200, 57),
             "card 'tiny-gqa' allows max_seq_len 256 but prompt_len + gen_len is 200 + 57 = 257");
}

TEST(SuiteYaml, AllowMissingTurnsUnknownCardsAndDatasetsIntoStatuses) {
  const auto s = parse_ok(suite_text(
      "allow_missing: true\n"
      "experiments:\n"
      "  - {axis: pretrain, card: [tiny, no-such-card]}\n"
      "  - {axis: pretrain, card: tiny-gqa, dataset: /nonexistent/ds}\n"));
  ASSERT_EQ(s.experiments.size(), 3u);
  EXPECT_TRUE(s.experiments[0].supported);
  EXPECT_FALSE(s.experiments[1].supported);
  EXPECT_EQ(s.experiments[1].status, "not supported by this build: no card 'no-such-card'");
  EXPECT_FALSE(s.experiments[2].supported);
  EXPECT_HAS(s.experiments[2].status, "missing dataset '/nonexistent/ds'");
}

TEST(SuiteYaml, PretrainTrainConfig) {
  const auto s = parse_ok(suite_text(
      "warmup_steps: 2\n"
      "experiments:\n"
      "  - {axis: pretrain, card: tiny-gqa, batch_size: 4, seq_len: 64, grad_accum: 2, steps: 9, lr: 0.01,\n"
      "     min_lr: 0.001, warmup: 3, eval_batches: 5, precision: bf16, seed: 42}\n"));
  auto c = pretrain_train_config(s.experiments.at(0), Device::cpu(), "/data/builtin");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->model, "tiny-gqa");
  EXPECT_EQ(c->data_dir, "/data/builtin");
  EXPECT_EQ(c->batch_size, 4);
  EXPECT_EQ(c->seq_len, 64);
  EXPECT_EQ(c->grad_accum, 2);
  EXPECT_EQ(c->steps, 9);
  EXPECT_EQ(c->lr, 0.01f);
  EXPECT_EQ(c->min_lr, 0.001f);
  EXPECT_EQ(c->warmup_steps, 3);
  EXPECT_EQ(c->eval_batches, 5);
  EXPECT_EQ(c->precision, Precision::bf16);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->timing_warmup_steps, 2);
}

TEST(SuiteYaml, FilterByRegexOrSubstring) {
  const auto s = parse_ok(suite_text("experiments:\n  - {axis: pretrain, card: [tiny, tiny-gqa, tiny-mqa], "
                                     "batch_size: [8, 16]}\n"));
  auto r = filter_experiments(s.experiments, "GQA b16$");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->front().label, "tiny-gqa b16");
  r = filter_experiments(s.experiments, "mqa|^tiny b8");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 3u);
  r = filter_experiments(s.experiments, "b1[");  // not a regex: a substring
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().what, "--filter 'b1[' matches no experiment label");
  EXPECT_HAS(r.error().hint, "'tiny-gqa b16'");
}

TEST(BuiltinSuiteFiles, AllParse) {
  const auto names = builtin_suite_file_names();
  for (const char* expected : {"quick", "gpu-lite", "paper-arch", "paper-peft", "paper-quant"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  for (const auto& name : names) {
    auto s = find_suite_file(name);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->name, name) << "a suite's name must equal its file stem";
    EXPECT_FALSE(s->description.empty());
    EXPECT_FALSE(s->experiments.empty());
  }
}

// quick_suite() / gpu_lite_suite() stay the runner's source (they need no
// configs directory); their YAML files must describe exactly the same runs.
TEST(BuiltinSuiteFiles, QuickAndGpuLiteEqualTheirCppSpecs) {
  for (const auto& [name, spec] : {std::pair{"quick", quick_suite()}, std::pair{"gpu-lite", gpu_lite_suite()}}) {
    auto file = find_suite_file(name);
    ASSERT_TRUE(file.ok()) << file.error().message();
    auto converted = suite_file_to_spec(file.value());
    ASSERT_TRUE(converted.ok()) << converted.error().message();
    EXPECT_EQ(suite_spec_to_json(converted.value()).dump(2), suite_spec_to_json(spec).dump(2)) << name;
    EXPECT_EQ(file->sized_for, spec.sized_for);
    for (const auto& e : file->experiments) {
      auto est = estimate_seconds(e, file->sized_for);
      ASSERT_TRUE(est.has_value()) << e.label;
      EXPECT_GT(*est, 1.0);
    }
  }
}

TEST(BuiltinSuiteFiles, PaperSuitesListEveryRowWithItsStatus) {
  auto arch = find_suite_file("paper-arch");
  ASSERT_TRUE(arch.ok()) << arch.error().message();
  // 15 attention, 4 positional-encoding, 2 MoE and 9 attention-free rows.
  EXPECT_EQ(arch->experiments.size(), 30u);
  std::set<std::string> labels;
  for (const auto& e : arch->experiments) {
    SCOPED_TRACE(e.label);
    labels.insert(e.label);
    EXPECT_EQ(e.axis, Axis::pretrain);
    // Every row has its card; the rows wait only for the prepared dataset.
    const nlohmann::json& card = e.field("card");
    ASSERT_TRUE(card.is_string());
    EXPECT_TRUE(find_model_card(card.get<std::string>()).ok()) << card;
    EXPECT_TRUE(e.supported || e.status.rfind("missing dataset", 0) == 0) << e.status;
    EXPECT_TRUE(estimate_seconds(e, DeviceKind::cuda).has_value());
  }
  // The rows of the paper's Tables 5 and 6 at 1.5B, by the labels the file's
  // header gives as filters.
  for (const char* l : {"1.5B GQA", "3B GQA", "MoE 0.5Bx8", "MoE 1.5Bx8", "1.5B Mamba", "1.5B RWKV", "1.5B Pythia",
                        "3B MQA", "1.5B MLA", "3B NSA", "1.5B PE relative"}) {
    EXPECT_TRUE(labels.count(l)) << l;
  }
  auto peft = find_suite_file("paper-peft");
  ASSERT_TRUE(peft.ok()) << peft.error().message();
  EXPECT_EQ(peft->experiments.size(), 7u * 6 * 2 + 7u * 2);
  for (const auto& e : peft->experiments) {
    EXPECT_FALSE(e.supported) << e.label;  // no $EL_MODELS_DIR on a test machine
    EXPECT_HAS(e.status, "missing model '");
  }
  auto quant = find_suite_file("paper-quant");
  ASSERT_TRUE(quant.ok()) << quant.error().message();
  EXPECT_EQ(quant->experiments.size(), 27u);
  EXPECT_EQ(quant->experiments.at(2).label, "deepseek-r1-distill-qwen-1.5b int4");
  for (const auto& e : quant->experiments) {
    EXPECT_FALSE(e.supported) << e.label;  // no $EL_MODELS_DIR on a test machine
    EXPECT_HAS(e.status, "missing model '");
    EXPECT_EQ(e.field("batch_sizes"), "1");  // the older batch_size: 1
  }
  auto spec = suite_file_to_spec(peft.value());
  ASSERT_FALSE(spec.ok());
  EXPECT_HAS(spec.error().what, "suite 'paper-peft' cannot run in this build");
  EXPECT_HAS(spec.error().hint, "--dry-run");
}

TEST(SuiteFileErrors, SpecConversionNamesWhatTheRunnerCannotDo) {
  struct Case {
    std::string text, what;
  };
  const std::vector<Case> cases = {
      {"experiments:\n  - {axis: pretrain, card: tiny, batch_size: [8, 16]}\n",
       "experiment 'tiny b16' has batch_size 16 where the first has 8"},
      {"min_duration_s: 2\nexperiments:\n  - {axis: pretrain, card: tiny}\n",
       "it sets warmup_steps or min_duration_s"},
      {"experiments:\n  - {axis: pretrain, card: tiny, grad_accum: 2}\n", "experiment 'tiny' sets grad_accum or seed"},
      {"allow_missing: true\nexperiments:\n  - {axis: pretrain, card: nope}\n",
       "experiment 'nope' is pretrain (not supported by this build: no card 'nope')"},
  };
  for (const auto& c : cases) {
    auto spec = suite_file_to_spec(parse_ok(suite_text(c.text)));
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_HAS(spec.error().what, "suite 't' cannot run in this build: " + c.what);
  }
  // A fitting file converts, with its labels as the variants.
  auto ok = suite_file_to_spec(parse_ok(suite_text("experiments:\n  - {axis: pretrain, card: [tiny, tiny-mqa]}\n")));
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  ASSERT_EQ(ok->variants.size(), 2u);
  EXPECT_EQ(ok->variants[1].label, "tiny-mqa");
  EXPECT_EQ(ok->variants[1].card, "tiny-mqa");
  EXPECT_TRUE(validate_suite_spec(ok.value()).ok());
}

TEST(SuiteFileErrors, FindAndLoad) {
  auto r = find_suite_file("quik");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().where, "--suite");
  EXPECT_HAS(r.error().what, "unknown suite 'quik' (did you mean 'quick'?)");
  EXPECT_HAS(r.error().what, "paper-arch");
  r = find_suite_file("/nonexistent/suite.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), "/nonexistent/suite.yaml");
}

TEST(SuiteFileErrors, RelativeDatasetIsResolvedAgainstTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("el_suite_yaml_" + std::to_string(::getpid()));
  fs::create_directories(dir / "ds");
  std::ofstream(dir / "ds" / "dataset.json") << "{}";
  std::ofstream(dir / "s.yaml") << suite_text("experiments:\n  - {axis: pretrain, card: tiny, dataset: ds}\n");
  auto s = load_suite_file((dir / "s.yaml").string());
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->experiments.at(0).field("dataset"), (dir / "ds").lexically_normal().string());
  EXPECT_TRUE(s->experiments.at(0).supported);
  fs::remove_all(dir);
}

struct BadCase {
  std::string text;
  std::string where;  // expected Error::where
  std::string what;   // a substring of Error::what
};

TEST(SuiteFileErrors, EveryMessageNamesTheLineAndTheProblem) {
  const std::string ok_exp = "experiments:\n  - {axis: pretrain, card: tiny}\n";
  const std::vector<BadCase> cases = {
      {"name: t\nexperimets: []\n", "s.yaml:2", "unknown key 'experimets' in suite (did you mean 'experiments'?)"},
      {"name: t\nexperiments:\n  - axis: pretrain\n    card: tiny\n    bach_size: 8\n", "s.yaml:5",
       "unknown key 'bach_size' in experiment 1 (pretrain) (did you mean 'batch_size'?)"},
      {"name: t\nexperiments:\n  - {axis: infer, model: m, card: tiny}\n", "s.yaml:3",
       "unknown key 'card' in experiment 1 (infer)"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, batch_size: abc}\n", "s.yaml:3",
       "key 'batch_size': expected an integer, got 'abc'"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, batch_size: [8, x]}\n", "s.yaml:3",
       "key 'batch_size': expected an integer, got 'x'"},
      {"name: t\nexperiments: []\n", "s.yaml:2", "the suite has no experiments (an empty matrix)"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: []}\n", "s.yaml:3",
       "key 'card': the list of values is empty (an empty matrix)"},
      {"name: t\nexperiments:\n  - {axis: pretrian, card: tiny}\n", "s.yaml:3",
       "key 'axis': unknown value 'pretrian' (did you mean 'pretrain'?)"},
      {"name: t\nexperiments:\n  - {card: tiny}\n", "s.yaml:3", "missing required key 'axis' in experiment 1"},
      {"name: t\nexperiments:\n  - {axis: pretrain, batch_size: 8}\n", "s.yaml:3",
       "missing required key 'card' in experiment 1 (pretrain)"},
      {"name: t\nexperiments:\n  - axis: pretrain\n    card: tinyy\n", "s.yaml:4",
       "experiment 'tinyy': unknown model card 'tinyy' (did you mean 'tiny'?)"},
      {"name: t\nrepetitions: 0\n" + ok_exp, "s.yaml:2", "key 'repetitions': must be at least 1, got 0"},
      {"name: t\nwarmup_steps: -1\n" + ok_exp, "s.yaml:2", "key 'warmup_steps': must not be negative"},
      {"name: t\nmin_duration_s: -2.5\n" + ok_exp, "s.yaml:2", "key 'min_duration_s': must not be negative"},
      {"name: t\nrepetitions: 1.5\n" + ok_exp, "s.yaml:2", "key 'repetitions': expected an integer, got '1.5'"},
      {"name: a/b\n" + ok_exp, "s.yaml:1", "key 'name': 'a/b' must be non-empty"},
      {"description: x\n" + ok_exp, "s.yaml:1", "missing required key 'name' in suite"},
      {"name: t\nsized_for: gpu\n" + ok_exp, "s.yaml:2", "key 'sized_for': unknown value 'gpu'"},
      {"name: t\nexperiments:\n  - {axis: pretrain, label: X, card: tiny}\n  - {axis: pretrain, label: X, card: "
       "tiny-gqa}\n",
       "s.yaml:4", "duplicate experiment label 'X' (first at s.yaml:3)"},
      {"name: t\nexperiments:\n  - {axis: pretrain, label: \"{crad}\", card: tiny}\n", "s.yaml:3",
       "label '{crad}': unknown field '{crad}' (did you mean 'card'?)"},
      {"name: t\nexperiments:\n  - {axis: pretrain, label: \"{card\", card: tiny}\n", "s.yaml:3",
       "without a closing"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, lr: 0.001, min_lr: 0.01}\n", "s.yaml:3",
       "min_lr (0.01) must not exceed lr (0.001)"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, lr: 0}\n", "s.yaml:3",
       "key 'lr': must be greater than 0, got 0"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, batch_size: 0}\n", "s.yaml:3",
       "key 'batch_size': must be at least 1, got 0"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: lite-gqa}\n", "s.yaml:3",
       "card 'lite-gqa' has vocab_size 8192 but the built-in dataset's tokenizer is set to 4096 pieces"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, seq_len: 4096}\n", "s.yaml:3",
       "card 'tiny' allows max_seq_len 256 but seq_len is 4096"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, dataset: /nonexistent/ds}\n", "s.yaml:3",
       "dataset '/nonexistent/ds' is not a prepared dataset"},
      {"name: t\nexperiments:\n  - {axis: pretrain, card: tiny, precision: fp32}\n", "s.yaml:3",
       "key 'precision': unknown value 'fp32' (did you mean 'f32'?)"},
      {"name: t\ndefaults: {bach_size: 8}\n" + ok_exp, "s.yaml:2",
       "unknown key 'bach_size' in defaults (did you mean 'batch_size'?)"},
      {"name: t\ndefaults: {batch_size: big}\n" + ok_exp, "s.yaml:2",
       "key 'batch_size': expected an integer, got 'big'"},
      {"name: t\nmfu_probe: {label: p, card: smal}\n" + ok_exp, "s.yaml:2",
       "mfu_probe: unknown model card 'smal' (did you mean 'small'?)"},
      {"name: t\nexperiments:\n  - just a string\n", "s.yaml:3", "expected a mapping"},
      // Infer rows.
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, batch_sizes: \"1,x\"}\n", "s.yaml:3",
       "experiment 'tiny': batch_sizes '1,x': 'x' is not a positive integer"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, precision: int3}\n", "s.yaml:3",
       "key 'precision': unknown value 'int3'"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, gen_len: 8, precision: int4,\n     group_size: 100}\n",
       "s.yaml:4", "experiment 'tiny': group_size 100 does not divide d_model = 128 of card 'tiny'"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, prompt_len: 200,\n     gen_len: 100}\n", "s.yaml:4",
       "card 'tiny' allows max_seq_len 256 but prompt_len + gen_len is 200 + 100 = 300"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, precision: int4,\n     quant_method: gptq}\n",
       "s.yaml:4", "GPTQ calibrates on text, and the model card 'tiny' has random weights and no tokenizer"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, gen_len: 8, choice_task: \"builtin:clozee\"}\n", "s.yaml:3",
       "unknown built-in choice task 'clozee'"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, gen_len: 8, choice_task: /nonexistent/t.jsonl}\n", "s.yaml:3",
       "missing choice task '/nonexistent/t.jsonl'"},
      {"name: t\nexperiments:\n  - {axis: infer, model: /nonexistent/model}\n", "s.yaml:3",
       "experiment '/nonexistent/model': missing model '/nonexistent/model' (not a model card"},
      {"name: t\nexperiments:\n  - {axis: infer, model: \"pretrained:nope\"}\n", "s.yaml:3",
       "'pretrained:nope' names no earlier pretrain experiment"},
      {"name: t\nexperiments:\n  - {axis: infer, model: tiny, group_size: -1}\n", "s.yaml:3",
       "key 'group_size': must be at least 0, got -1"},
      {"name: t\nexperiments:\n  - {axis: infer, model: \"\"}\n", "s.yaml:3", "key 'model': must not be empty"},
      {"name: t\nexperiments: [\n", "s.yaml", "YAML syntax error"},
  };
  for (const auto& c : cases) {
    const Error e = parse_err(c.text);
    EXPECT_EQ(e.where.substr(0, c.where.size()), c.where) << c.text << "\n" << e.message();
    EXPECT_HAS(e.what, c.what);
  }
}

}  // namespace
}  // namespace el::bench
