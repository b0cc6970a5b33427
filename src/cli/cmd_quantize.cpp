// efficientllm quantize — weight-only int8/int4 post-training quantization
// (RTN or GPTQ) of a Hugging Face checkpoint or a checkpoint of ours, written
// as the packed format of quant/quant_io.h (docs/QUANTIZATION.md).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "bench/table.h"
#include "cli/common.h"
#include "io/atomic_file.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "models/hf_model.h"
#include "quant/calibration.h"
#include "quant/quant_io.h"
#include "quant/quantize_model.h"
#include "train/checkpoint.h"

namespace el::cli {
namespace {

namespace fs = std::filesystem;

struct QuantizeArgs {
  std::string hf_dir, init_checkpoint, tokenizer, out_dir, report_path;
  std::string device = "cpu", method = "rtn", dtype = "auto";
  int bits = 4;
  int64_t group_size = 128;
  bool asym = false, include_lm_head = false, skip_experts = false;
  std::vector<std::string> calib = {"builtin"};
  int64_t calib_samples = 128, calib_seq_len = 512, calib_batch = 8;
  bool calib_seq_len_given = false;
  double damp = 0.01;
  uint64_t seed = 0;
};

constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                           "special_tokens_map.json"};

struct Source {
  std::unique_ptr<DecoderLM> model;  // f32 parameters: the quantizers read exact weights
  DType stored_dtype = DType::f32;   // the source's own dtype (--dtype auto)
  std::string hf_config_json;
  std::string tokenizer;             // for --calib builtin
  std::vector<std::pair<std::string, std::string>> copy_files;  // (path, name in --out)
};

// The tokenizer files of a directory, or the file itself under the name a
// directory lookup finds (a SentencePiece .model as tokenizer.model).
std::vector<std::pair<std::string, std::string>> tokenizer_files(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  if (path.empty()) return out;
  if (fs::is_regular_file(path, ec)) {
    const std::string ext = fs::path(path).extension().string();
    const std::string name = ext == ".model" ? "tokenizer.model"
                             : ext == ".json" ? "tokenizer.json"
                                              : fs::path(path).filename().string();
    return {{path, name}};
  }
  for (const char* name : kTokenizerFiles) {
    if (fs::is_regular_file(fs::path(path) / name, ec)) out.emplace_back((fs::path(path) / name).string(), name);
  }
  return out;
}

Result<Source> load_source(const QuantizeArgs& a, Device device) {
  Source s;
  if (a.hf_dir.empty() == a.init_checkpoint.empty()) {
    return make_error("give exactly one model source", "--hf / --init",
                      "--hf DIR (a Hugging Face checkpoint) or --init FILE (a checkpoint of `efficientllm train`)");
  }
  if (!a.hf_dir.empty()) {
    EL_TRY_ASSIGN(io::HfCheckpoint ck, io::HfCheckpoint::open(a.hf_dir));
    EL_TRY_ASSIGN(s.model, load_hf_model(ck, device, DType::f32));
    const auto emb = ck.info("model.embed_tokens.weight");
    if (emb.ok()) s.stored_dtype = emb.value().dtype;
    EL_TRY_ASSIGN(s.hf_config_json, io::read_file((fs::path(a.hf_dir) / io::kHfConfigFile).string()));
    s.tokenizer = a.tokenizer.empty() ? a.hf_dir : a.tokenizer;
    s.copy_files = tokenizer_files(a.tokenizer.empty() ? a.hf_dir : a.tokenizer);
    return s;
  }
  EL_TRY_ASSIGN(CheckpointState st, read_checkpoint_state(a.init_checkpoint));
  if (st.model_card_yaml.empty()) {
    return make_error("the checkpoint has no model card in its metadata", a.init_checkpoint,
                      "use a checkpoint written by `efficientllm train`");
  }
  EL_TRY_ASSIGN(ModelCard card, parse_model_card(st.model_card_yaml, a.init_checkpoint));
  EL_TRY_ASSIGN(s.model, DecoderLM::create(card, device, 0, DType::f32, false));
  EL_TRY(load_checkpoint(a.init_checkpoint, *s.model, nullptr));
  EL_TRY_ASSIGN(io::SafetensorsFile file, io::SafetensorsFile::open(a.init_checkpoint));
  const auto emb = file.info("model.embed_tokens.weight");
  if (emb.ok()) s.stored_dtype = emb.value().dtype;
  s.tokenizer = a.tokenizer;
  s.copy_files = tokenizer_files(a.tokenizer);
  return s;
}

std::string human_bytes(int64_t b) {
  const double v = static_cast<double>(b);
  if (v >= 1e9) return fmt::format("{:.2f} GB", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f} MB", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f} kB", v / 1e3);
  return fmt::format("{} B", b);
}

int run(QuantizeArgs& a) {
  auto device = parse_device(a.device);
  if (!device.ok()) return report_error(device.error());
  auto method = quant::parse_quant_method(a.method);
  if (!method.ok()) return report_error(method.error());
  quant::QuantizeOptions o;
  o.spec.bits = a.bits;
  o.spec.group_size = a.group_size;
  o.spec.symmetric = !a.asym;
  o.method = method.value();
  o.include_lm_head = a.include_lm_head;
  o.quantize_experts = !a.skip_experts;
  o.calibration_batch = a.calib_batch;
  o.gptq.damp = a.damp;
  if (Status s = quant::validate_quant_spec(o.spec); !s.ok()) {
    Error e = s.error();
    e.where = e.where == "quantization: bits" ? "--bits" : "--group-size";
    return report_error(e);
  }
  std::optional<DType> dtype;
  if (a.dtype != "auto") {
    dtype = dtype_from_name(a.dtype);
    if (!dtype || !dtype_is_float(*dtype)) {
      return report_error(make_error(fmt::format("unknown dtype '{}'", a.dtype), "--dtype",
                                     "use auto, f32, bf16 or f16"));
    }
  }
  if (a.out_dir.empty()) return report_error(make_error("no output directory", "--out", "give --out DIR"));
  std::error_code ec;
  if (!a.hf_dir.empty() && fs::exists(a.out_dir, ec) && fs::equivalent(a.out_dir, a.hf_dir, ec)) {
    return report_error(make_error("the output directory is the source checkpoint's", "--out",
                                   "write the quantized model to a new directory"));
  }

  auto source = load_source(a, device.value());
  if (!source.ok()) return report_error(source.error());
  Source& src = source.value();
  DecoderLM& model = *src.model;
  nlohmann::json calibration = nullptr;
  if (o.method == quant::QuantMethod::gptq) {
    quant::CalibrationOptions c;
    c.sources = a.calib;
    c.samples = a.calib_samples;
    c.seq_len = a.calib_seq_len;
    if (!a.calib_seq_len_given && c.seq_len > model.card().max_seq_len) {
      c.seq_len = model.card().max_seq_len;  // the default, fitted to a short context
    }
    c.seed = a.seed;
    c.tokenizer = src.tokenizer;
    c.vocab_size = static_cast<int>(model.card().vocab_size);
    auto data = quant::load_calibration(c);
    if (!data.ok()) return report_error(data.error());
    o.calibration = data.value().ids;
    calibration = data.value().description;
  }

  bench::ProgressBar bar;
  o.on_progress = [&bar](const std::string& what, int64_t done, int64_t total) {
    bar.update("quantize", done, total, what, -1);
  };
  auto result = quant::quantize_model(model, o);
  bar.finish();
  if (!result.ok()) return report_error(result.error());
  const quant::QuantizeReport& r = result.value();

  quant::QuantizedSaveOptions save;
  save.method = quant::quant_method_name(o.method);
  save.dtype = dtype ? *dtype : src.stored_dtype;
  save.source = a.hf_dir.empty() ? a.init_checkpoint : a.hf_dir;
  save.hf_config_json = src.hf_config_json;
  save.copy_files = src.copy_files;
  nlohmann::json summary = quant::report_to_json(r);
  summary.erase("slots");
  save.extra = {{"calibration", calibration}, {"report", summary}};
  if (Status s = quant::save_quantized_model(model, a.out_dir, save); !s.ok()) return report_error(s.error());
  const int64_t file_bytes = static_cast<int64_t>(fs::file_size(fs::path(a.out_dir) / quant::kQuantizedWeightsFile, ec));

  const std::string group = o.spec.group_size <= 0 ? "per-channel" : fmt::format("g{}", o.spec.group_size);
  const auto expert_tensors =
      std::count_if(r.slots.begin(), r.slots.end(), [](const quant::SlotReport& s) { return s.experts > 0; });
  std::printf("%s %s int%d %s %s: %zu slots quantized%s%s\n", quant::quant_method_name(o.method),
              model.card().name.c_str(), o.spec.bits, group.c_str(), o.spec.symmetric ? "sym" : "asym",
              r.slots.size(), r.lm_head_quantized ? " (lm_head included)" : "",
              expert_tensors > 0 ? fmt::format(" ({} of them MoE expert tensors)", expert_tensors).c_str() : "");
  for (const std::string& n : r.notes) std::printf("note: %s\n", n.c_str());
  std::printf("parameters: %s -> %s in memory (%.2fx); quantized slots %s -> %s, %.3f bits/weight\n",
              human_bytes(r.model_bytes_before).c_str(), human_bytes(r.model_bytes_after).c_str(),
              static_cast<double>(r.model_bytes_before) / static_cast<double>(std::max<int64_t>(1, r.model_bytes_after)),
              human_bytes(r.quantized_bytes_before).c_str(), human_bytes(r.quantized_bytes_after).c_str(),
              r.bits_per_weight);
  if (o.method == quant::QuantMethod::gptq && !r.slots.empty()) {
    double g = 0, n = 0;
    for (const auto& s : r.slots) {
      g += s.output_error;
      n += s.rtn_output_error;
    }
    const auto count = static_cast<double>(r.slots.size());
    std::printf("GPTQ: %lld calibration tokens; mean relative output error %.3g (RTN on the same inputs %.3g)\n",
                static_cast<long long>(r.calibration_tokens), g / count, n / count);
  }
  std::printf("%.2f s; wrote %s (%s)\n", r.seconds, a.out_dir.c_str(), human_bytes(file_bytes).c_str());
  if (!a.report_path.empty()) {
    nlohmann::json j = quant::report_to_json(r);
    j["model"] = model.card().name;
    j["source"] = save.source;
    j["out"] = a.out_dir;
    j["file_bytes"] = file_bytes;
    j["dtype"] = dtype_name(*save.dtype);
    j["calibration"] = calibration;
    if (Status s = io::write_file_atomic(a.report_path, j.dump(1) + "\n"); !s.ok()) return report_error(s.error());
  }
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("quantize", "Weight-only int8/int4 quantization (RTN or GPTQ) into the packed format");
  auto a = std::make_shared<QuantizeArgs>();
  cmd->add_option("--hf", a->hf_dir, "Hugging Face checkpoint directory (config.json + safetensors)");
  cmd->add_option("--init", a->init_checkpoint, "A checkpoint.safetensors written by `efficientllm train`");
  cmd->add_option("--tokenizer", a->tokenizer,
                  "tokenizer.json / .model or a directory holding one (default: the --hf directory); "
                  "copied next to the weights");
  cmd->add_option("--bits", a->bits, "4 or 8")->capture_default_str();
  cmd->add_option("--group-size", a->group_size, "Inputs per scale (0 = per output channel)")->capture_default_str();
  cmd->add_flag("--asym", a->asym, "Asymmetric (a zero point per group) instead of symmetric");
  cmd->add_option("--method", a->method, "rtn | gptq")->capture_default_str();
  cmd->add_option("--calib", a->calib, "GPTQ calibration: builtin (the built-in corpus) or token shards / dataset dirs")
      ->capture_default_str();
  cmd->add_option("--calib-samples", a->calib_samples, "Calibration samples")->capture_default_str();
  auto* seq = cmd->add_option("--calib-seq-len", a->calib_seq_len, "Tokens per calibration sample (default: min(512, context))")
                  ->capture_default_str();
  cmd->add_option("--calib-batch", a->calib_batch, "Calibration samples per forward")->capture_default_str();
  cmd->add_option("--damp", a->damp, "GPTQ dampening: fraction of the mean Hessian diagonal")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Calibration sampling seed")->capture_default_str();
  cmd->add_flag("--include-lm-head", a->include_lm_head, "Quantize an untied lm_head too");
  cmd->add_flag("--skip-experts", a->skip_experts, "Leave a mixture of experts' expert tensors dense");
  cmd->add_option("--device", a->device, "cpu | cuda[:N]")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "Stored dtype of the unquantized tensors: auto (the source's) | f32 | bf16 | f16")
      ->capture_default_str();
  cmd->add_option("--out", a->out_dir, "Output directory")->required();
  cmd->add_option("--report", a->report_path, "Write the full JSON report (per-slot sizes and errors) here");
  cmd->callback([&action, a, seq] {
    a->calib_seq_len_given = seq->count() > 0;
    action = [a]() -> int { return run(*a); };
  });
}

}  // namespace el::cli
