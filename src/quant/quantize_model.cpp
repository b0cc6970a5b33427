#include "quant/quantize_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include "autograd/tape.h"
#include "ops/backend.h"
#include "quant/quant_grouped.h"
#include "quant/quant_linear.h"

namespace el::quant {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Thrown once every capturing slot of the layer has seen its input, to end a
// calibration forward early (see quantize_model.h); caught only in
// run_calibration.
struct StopCalibrationForward {};

// The capturing slots of one layer that have seen their input in the current
// forward. Counted rather than "the last slot in visiting order" because a
// block's forward need not run its slots in the order for_each_linear lists
// them (RWKV's channel mix runs value before receptance).
struct CaptureRound {
  size_t wrappers = 0;
  std::set<const void*> seen;
  void mark(const void* wrapper) {
    seen.insert(wrapper);
    if (seen.size() < wrappers) return;
    seen.clear();
    throw StopCalibrationForward{};
  }
};

std::string leaf_of(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}
std::string parent_of(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? std::string() : path.substr(0, dot);
}
// "model.layers.12.mlp.up_proj" -> 12; -1 for anything else.
int layer_of(const std::string& path) {
  const std::string prefix = "model.layers.";
  if (path.rfind(prefix, 0) != 0) return -1;
  size_t end = prefix.size();
  while (end < path.size() && path[end] >= '0' && path[end] <= '9') ++end;
  return end > prefix.size() ? std::stoi(path.substr(prefix.size(), end - prefix.size())) : -1;
}


// Wraps a slot for one calibration pass: adds X^T X of its input, then runs
// the wrapped layer (keeping its stacked path when it has one).
class CaptureLinear final : public LinearLayer {
 public:
  CaptureLinear(std::unique_ptr<LinearLayer> inner, std::shared_ptr<HessianAccumulator> acc,
                std::shared_ptr<CaptureRound> round)
      : inner(std::move(inner)), acc_(std::move(acc)), round_(std::move(round)) {}

  Tensor forward(const Tensor& x) const override {
    capture(x);
    return inner->forward(x);
  }
  Tensor forward_stacked(const Tensor& x,
                         const std::vector<const LinearLayer*>& rest) const override {
    // Captured only when the stacked path runs: otherwise the caller calls
    // forward() next with the same x.
    Tensor y = inner->forward_stacked(x, rest);
    if (y.defined()) capture(x);
    return y;
  }
  void collect_parameters(const std::string& prefix, ParameterList& out) const override {
    inner->collect_parameters(prefix, out);
  }
  int64_t in_features() const override { return inner->in_features(); }
  int64_t out_features() const override { return inner->out_features(); }

  std::unique_ptr<LinearLayer> inner;

 private:
  void capture(const Tensor& x) const {
    acc_->add(x);
    round_->mark(this);
  }
  std::shared_ptr<HessianAccumulator> acc_;
  std::shared_ptr<CaptureRound> round_;
};

// Wraps an expert projection for one calibration pass: adds X_e^T X_e of
// the rows routed to each expert e (the offsets are read on the host), then
// runs the wrapped projection.
class CaptureGrouped final : public GroupedProjection {
 public:
  CaptureGrouped(std::unique_ptr<GroupedProjection> inner,
                 std::vector<std::shared_ptr<HessianAccumulator>> accs, std::shared_ptr<CaptureRound> round)
      : inner(std::move(inner)), accs_(std::move(accs)), round_(std::move(round)) {}

  Tensor forward(const Tensor& x, const Tensor& offsets) const override {
    const Tensor off = offsets.to(Device::cpu());
    const int32_t* o = off.data<int32_t>();
    for (size_t e = 0; e < accs_.size(); ++e) {
      if (o[e + 1] > o[e]) accs_[e]->add(x.slice0(o[e], o[e + 1]));
    }
    round_->mark(this);
    return inner->forward(x, offsets);
  }
  void collect_parameters(const std::string& name, ParameterList& out) const override {
    inner->collect_parameters(name, out);
  }
  int64_t n_experts() const override { return inner->n_experts(); }
  int64_t in_features() const override { return inner->in_features(); }
  int64_t out_features() const override { return inner->out_features(); }

  std::unique_ptr<GroupedProjection> inner;

 private:
  std::vector<std::shared_ptr<HessianAccumulator>> accs_;
  std::shared_ptr<CaptureRound> round_;
};

// An expert projection being quantized (GPTQ: one X^T X per expert).
struct ExpertGroup {
  GroupedRef ref;
  std::vector<std::shared_ptr<HessianAccumulator>> accs;
};

// A slot group being quantized (GPTQ: with its inputs' X^T X).
struct Group {
  int layer = -1;  // -1: lm_head
  std::vector<SlotRef> slots;
  std::shared_ptr<HessianAccumulator> acc;
};

Status check_calibration(const DecoderLM& model, const Tensor& ids) {
  const ModelCard& card = model.card();
  if (!ids.defined()) {
    return make_error("GPTQ needs calibration token ids", "quantization: calibration",
                      "give --calib builtin or token shards");
  }
  if (ids.dtype() != DType::i32 || ids.ndim() != 2 || ids.dim(0) < 1 || ids.dim(1) < 1) {
    return make_error(fmt::format("calibration ids are {} {}, expected i32 [n_samples, seq_len]",
                                  dtype_name(ids.dtype()), shape_str(ids.shape())),
                      "quantization: calibration");
  }
  const int64_t t = ids.dim(1);
  if (t > card.max_seq_len || (card.sliding_window > 0 && t > card.sliding_window)) {
    return make_error(fmt::format("calibration length {} exceeds the model's context ({} tokens{})", t,
                                  card.max_seq_len,
                                  card.sliding_window > 0 ? fmt::format(", sliding window {}", card.sliding_window) : ""),
                      "quantization: calibration", "use a shorter --calib-seq-len");
  }
  const Tensor host = ids.to(Device::cpu());
  const int32_t* p = host.data<int32_t>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    if (p[i] < 0 || p[i] >= card.vocab_size) {
      return make_error(fmt::format("calibration token {} at sample {}, position {} is outside the "
                                    "model's vocabulary [0, {})",
                                    p[i], i / t, i % t, card.vocab_size),
                        "quantization: calibration", "tokenize the calibration text with the model's tokenizer");
    }
  }
  return {};
}

// Runs the calibration ids through the model in batches (no gradients); the
// capture that completes the layer's round ends each forward.
void run_calibration(const DecoderLM& model, const QuantizeOptions& o) {
  NoGrad no_grad;
  const int64_t n = o.calibration.dim(0), b = std::max<int64_t>(1, o.calibration_batch);
  for (int64_t s = 0; s < n; s += b) {
    const Tensor ids = o.calibration.slice0(s, std::min(n, s + b)).to(model.device());
    try {
      (void)model.forward(ids);
    } catch (const StopCalibrationForward&) {
    }
  }
}

// Quantizes one group (RTN, or GPTQ with the group's accumulator), swaps the
// QuantLinears in and appends the slots' reports.
Status quantize_group(Group& group, const QuantizeOptions& o, Device device, QuantizeReport& report) {
  std::vector<const Linear*> dense;
  int64_t rows = 0;
  for (const SlotRef& s : group.slots) {
    dense.push_back(static_cast<const Linear*>(s.slot->get()));
    rows += dense.back()->out_features();
  }
  const int64_t k = dense.front()->in_features();
  const bool has_bias = dense.front()->bias.defined();
  std::vector<float> w;
  w.reserve(static_cast<size_t>(rows * k));
  std::vector<int64_t> outs;
  for (const Linear* d : dense) {
    const std::vector<float> part = d->weight.to_floats();
    w.insert(w.end(), part.begin(), part.end());
    outs.push_back(d->out_features());
  }
  const std::string name = group.slots.size() == 1
                               ? group.slots.front().path + ".weight"
                               : fmt::format("{} (+{} stacked)", group.slots.front().path + ".weight",
                                             group.slots.size() - 1);
  std::vector<double> err, rtn_err, energy;
  HostQuantized q;
  if (o.method == QuantMethod::gptq) {
    const std::vector<double> h = group.acc->hessian();
    EL_TRY_ASSIGN(q, gptq_quantize_host(w.data(), rows, k, h, o.spec, o.gptq, name));
    EL_TRY_ASSIGN(HostQuantized r, quantize_rtn_host(w.data(), rows, k, o.spec, name));
    RowErrors eg = output_errors(w, dequantize_host(q), rows, k, group.acc->xtx());
    RowErrors er = output_errors(w, dequantize_host(r), rows, k, group.acc->xtx());
    err = std::move(eg.err);
    energy = std::move(eg.energy);
    rtn_err = std::move(er.err);
  } else {
    EL_TRY_ASSIGN(q, quantize_rtn_host(w.data(), rows, k, o.spec, name));
  }
  EL_TRY_ASSIGN(auto layers, make_stacked_quant_linears(k, outs, o.spec, has_bias,
                                                        has_bias ? dense.front()->bias.dtype() : DType::f32,
                                                        device));
  int64_t r0 = 0;
  for (size_t i = 0; i < group.slots.size(); ++i) {
    QuantLinear& ql = *layers[i];
    const int64_t r1 = r0 + outs[i];
    upload_rows(q, r0, r1, ql.weight());
    if (has_bias) ql.bias().copy_from(dense[i]->bias);
    SlotReport s;
    s.name = group.slots[i].path;
    s.bits = o.spec.bits;
    s.group_size = q.group_size;
    s.out_features = outs[i];
    s.in_features = k;
    s.bytes_before = static_cast<int64_t>(dense[i]->weight.nbytes() + (has_bias ? dense[i]->bias.nbytes() : 0));
    const int64_t qbytes = ql.weight().storage_bytes();
    s.bytes_after = qbytes + static_cast<int64_t>(has_bias ? ql.bias().nbytes() : 0);
    if (!err.empty()) {
      double e = 0, re = 0, b = 0;
      for (int64_t r = r0; r < r1; ++r) {
        e += err[static_cast<size_t>(r)];
        re += rtn_err[static_cast<size_t>(r)];
        b += energy[static_cast<size_t>(r)];
      }
      s.output_error = b > 0 ? e / b : 0.0;
      s.rtn_output_error = b > 0 ? re / b : 0.0;
    }
    report.quantized_weights += outs[i] * k;
    report.quantized_bytes_before += static_cast<int64_t>(dense[i]->weight.nbytes());
    report.quantized_bytes_after += qbytes;
    report.slots.push_back(std::move(s));
    r0 = r1;
  }
  for (size_t i = 0; i < group.slots.size(); ++i) *group.slots[i].slot = std::move(layers[i]);
  return {};
}

// Quantizes one expert projection (RTN, or GPTQ per expert with the rows
// routed to it), swaps the QuantGroupedProjection in and appends its report.
Status quantize_experts(ExpertGroup& g, const QuantizeOptions& o, Device device, QuantizeReport& report) {
  const auto* dense = static_cast<const DenseGroupedProjection*>(g.ref.slot->get());
  const int64_t e = dense->n_experts(), n = dense->out_features(), k = dense->in_features();
  const std::vector<float> w = dense->weight.to_floats();  // [E N, K]
  const std::string name = g.ref.path;
  HostQuantized q;
  double err = 0, rtn_err = 0, energy = 0;
  if (o.method == QuantMethod::gptq) {
    // Rows are quantized independently given a Hessian: expert by expert into
    // the stacked matrix.
    q.resize(o.spec.bits, o.spec.group_for(k), o.spec.symmetric, e * n, k);
    int64_t unrouted = 0;
    for (int64_t j = 0; j < e; ++j) {
      const float* wj = w.data() + j * n * k;
      const std::string ename = fmt::format("{} (expert {})", name, j);
      EL_TRY_ASSIGN(HostQuantized r, quantize_rtn_host(wj, n, k, o.spec, ename));
      HostQuantized qj;
      if (g.accs[static_cast<size_t>(j)]->rows() == 0) {
        ++unrouted;
        qj = r;
      } else {
        EL_TRY_ASSIGN(qj, gptq_quantize_host(wj, n, k, g.accs[static_cast<size_t>(j)]->hessian(), o.spec,
                                             o.gptq, ename));
        const std::vector<float> part(wj, wj + n * k);
        const Tensor& xtx = g.accs[static_cast<size_t>(j)]->xtx();
        const RowErrors eg = output_errors(part, dequantize_host(qj), n, k, xtx);
        const RowErrors er = output_errors(part, dequantize_host(r), n, k, xtx);
        for (int64_t i = 0; i < n; ++i) {
          err += eg.err[static_cast<size_t>(i)];
          rtn_err += er.err[static_cast<size_t>(i)];
          energy += eg.energy[static_cast<size_t>(i)];
        }
      }
      std::copy(qj.qweight.begin(), qj.qweight.end(), q.qweight.begin() + j * n * q.row_bytes());
      std::copy(qj.scales.begin(), qj.scales.end(), q.scales.begin() + j * n * q.groups());
      if (!q.symmetric) std::copy(qj.zeros.begin(), qj.zeros.end(), q.zeros.begin() + j * n * q.groups());
    }
    if (unrouted > 0) {
      report.notes.push_back(fmt::format("{}: {} of {} experts received no calibration token (RTN)", name,
                                         unrouted, e));
    }
  } else {
    EL_TRY_ASSIGN(q, quantize_rtn_host(w.data(), e * n, k, o.spec, name));
  }
  EL_TRY_ASSIGN(QuantizedWeight qw, to_quantized_weight(q, device));
  SlotReport s;
  s.name = name;
  s.experts = e;
  s.bits = o.spec.bits;
  s.group_size = q.group_size;
  s.out_features = e * n;
  s.in_features = k;
  s.bytes_before = static_cast<int64_t>(dense->weight.nbytes());
  s.bytes_after = qw.storage_bytes();
  if (o.method == QuantMethod::gptq) {
    s.output_error = energy > 0 ? err / energy : 0.0;
    s.rtn_output_error = energy > 0 ? rtn_err / energy : 0.0;
  }
  report.quantized_weights += e * n * k;
  report.quantized_bytes_before += s.bytes_before;
  report.quantized_bytes_after += s.bytes_after;
  report.slots.push_back(std::move(s));
  *g.ref.slot = std::make_unique<QuantGroupedProjection>(std::move(qw), e);
  return {};
}

}  // namespace

std::vector<GroupedRef> expert_projections(DecoderLM& model) {
  std::vector<GroupedRef> out;
  model.for_each_grouped([&](const std::string& path, std::unique_ptr<GroupedProjection>& slot) {
    out.push_back(GroupedRef{layer_of(path), path, &slot});
  });
  return out;
}

std::vector<SlotGroup> projection_groups(DecoderLM& model, bool include_lm_head) {
  std::vector<SlotGroup> groups;
  model.for_each_linear([&](const std::string& path, std::unique_ptr<LinearLayer>& slot) {
    const std::string leaf = leaf_of(path);
    if (leaf == "lm_head" && !include_lm_head) return;
    // k/v follow q, up follows gate, under the same parent (one input).
    bool joins = false;
    if (!groups.empty() && parent_of(groups.back().slots.front().path) == parent_of(path)) {
      const std::string head = leaf_of(groups.back().slots.front().path);
      joins = ((leaf == "k_proj" || leaf == "v_proj") && head == "q_proj") ||
              (leaf == "up_proj" && head == "gate_proj");
    }
    if (!joins) groups.push_back(SlotGroup{layer_of(path), {}});
    groups.back().slots.push_back(SlotRef{path, &slot});
  });
  return groups;
}


const char* quant_method_name(QuantMethod m) { return m == QuantMethod::gptq ? "gptq" : "rtn"; }

Result<QuantMethod> parse_quant_method(std::string_view name) {
  if (name == "rtn") return QuantMethod::rtn;
  if (name == "gptq") return QuantMethod::gptq;
  return make_error(fmt::format("unknown quantization method '{}'", name), "--method",
                    "use rtn or gptq");
}

int64_t parameter_bytes(const DecoderLM& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += static_cast<int64_t>(p.tensor.nbytes());
  return n;
}

Result<QuantizeReport> quantize_model(DecoderLM& model, const QuantizeOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  EL_TRY(validate_quant_spec(o.spec));
  QuantizeReport report;
  report.method = o.method;
  report.spec = o.spec;
  report.model_bytes_before = parameter_bytes(model);
  if (o.include_lm_head && model.card().tied_embeddings) {
    report.notes.push_back("lm_head is tied to the token embedding: left unquantized");
  }
  std::vector<Group> groups;
  // Every check before the first slot changes.
  for (SlotGroup& g : projection_groups(model, o.include_lm_head)) {
    for (const SlotRef& s : g.slots) {
      const auto* dense = dynamic_cast<const Linear*>(s.slot->get());
      if (!dense) {
        return make_error(fmt::format("slot {} does not hold a dense linear layer", s.path), "quantization",
                          "quantize a plain model (merge LoRA adapters first, quantize once)");
      }
      EL_TRY(check_quantizable(s.path + ".weight", dense->out_features(), dense->in_features(), o.spec));
    }
    // Biases on some slots of a group but not on others: one group per slot.
    const bool first_bias = static_cast<const Linear*>(g.slots.front().slot->get())->bias.defined();
    const bool mixed = std::any_of(g.slots.begin(), g.slots.end(), [&](const SlotRef& s) {
      return static_cast<const Linear*>(s.slot->get())->bias.defined() != first_bias;
    });
    if (!mixed) {
      groups.push_back(Group{g.layer, std::move(g.slots), nullptr});
      continue;
    }
    for (const SlotRef& s : g.slots) groups.push_back(Group{g.layer, {s}, nullptr});
  }
  std::vector<ExpertGroup> experts;
  if (o.quantize_experts) {
    for (GroupedRef& r : expert_projections(model)) {
      const auto* dense = dynamic_cast<const DenseGroupedProjection*>(r.slot->get());
      if (!dense) {
        return make_error(fmt::format("expert projection {} is not dense", r.path), "quantization",
                          "quantize a plain model (quantize once)");
      }
      if (Status st = check_quantizable(r.path, dense->n_experts() * dense->out_features(), dense->in_features(),
                                        o.spec);
          !st.ok()) {
        Error e = st.error();
        e.hint += " (or --skip-experts / quantize_experts = false to leave the experts dense)";
        return e;
      }
      experts.push_back(ExpertGroup{std::move(r), {}});
    }
  }
  report.lm_head_quantized = std::any_of(groups.begin(), groups.end(), [](const Group& g) { return g.layer < 0; });
  const Device device = model.device();
  const int n_layer = static_cast<int>(model.card().n_layer);
  auto progress = [&](int layer) {
    if (!o.on_progress) return;
    const int64_t total = n_layer + (report.lm_head_quantized ? 1 : 0);
    o.on_progress(layer < 0 ? "lm_head" : fmt::format("layer {}", layer), layer < 0 ? total : layer + 1, total);
  };

  if (o.method == QuantMethod::gptq) {
    EL_TRY(check_calibration(model, o.calibration));
    report.calibration_samples = o.calibration.dim(0);
    report.calibration_tokens = o.calibration.numel();
  }
  // Layer by layer (lm_head last), so GPTQ's inputs of a layer come from the
  // already quantized layers before it.
  for (int layer = 0; layer <= n_layer; ++layer) {
    const int id = layer < n_layer ? layer : -1;
    std::vector<Group*> mine;
    for (Group& g : groups) {
      if (g.layer == id) mine.push_back(&g);
    }
    std::vector<ExpertGroup*> mine_experts;
    for (ExpertGroup& g : experts) {
      if (g.ref.layer == id) mine_experts.push_back(&g);
    }
    if (mine.empty() && mine_experts.empty()) continue;
    if (o.method == QuantMethod::gptq) {
      auto round = std::make_shared<CaptureRound>();
      round->wrappers = mine.size() + mine_experts.size();
      for (Group* g : mine) {
        g->acc = std::make_shared<HessianAccumulator>((*g->slots.front().slot)->in_features(), device);
        std::unique_ptr<LinearLayer>& slot = *g->slots.front().slot;
        slot = std::make_unique<CaptureLinear>(std::move(slot), g->acc, round);
      }
      for (ExpertGroup* g : mine_experts) {
        std::unique_ptr<GroupedProjection>& slot = *g->ref.slot;
        for (int64_t j = 0; j < slot->n_experts(); ++j) {
          g->accs.push_back(std::make_shared<HessianAccumulator>(slot->in_features(), device));
        }
        slot = std::make_unique<CaptureGrouped>(std::move(slot), g->accs, round);
      }
      run_calibration(model, o);
      for (Group* g : mine) {
        std::unique_ptr<LinearLayer>& slot = *g->slots.front().slot;
        slot = std::move(static_cast<CaptureLinear&>(*slot).inner);
      }
      for (ExpertGroup* g : mine_experts) {
        std::unique_ptr<GroupedProjection>& slot = *g->ref.slot;
        slot = std::move(static_cast<CaptureGrouped&>(*slot).inner);
      }
      for (Group* g : mine) {
        if (g->acc->rows() == 0) {
          return make_error(fmt::format("slot {} received no calibration input", g->slots.front().path),
                            "quantization: gptq", "the model's forward does not run this slot");
        }
      }
    }
    for (Group* g : mine) {
      EL_TRY(quantize_group(*g, o, device, report));
      g->acc.reset();  // frees X^T X
    }
    for (ExpertGroup* g : mine_experts) {
      EL_TRY(quantize_experts(*g, o, device, report));
      g->accs.clear();
    }
    model.refresh_parameters();  // drops the dense weights' last handles
    progress(id);
  }
  for (const auto& p : model.parameters()) {
    Tensor t = p.tensor;
    t.set_requires_grad(false);
  }
  report.model_bytes_after = parameter_bytes(model);
  report.bits_per_weight = report.quantized_weights > 0
                               ? 8.0 * static_cast<double>(report.quantized_bytes_after) /
                                     static_cast<double>(report.quantized_weights)
                               : 0.0;
  backend_for(device).synchronize();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

nlohmann::json report_to_json(const QuantizeReport& r) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  nlohmann::json slots = nlohmann::json::array();
  for (const SlotReport& s : r.slots) {
    nlohmann::json j = {{"name", s.name},
                        {"bits", s.bits},
                        {"group_size", s.group_size},
                        {"out_features", s.out_features},
                        {"in_features", s.in_features},
                        {"bytes_before", s.bytes_before},
                        {"bytes_after", s.bytes_after}};
    if (s.experts > 0) j["experts"] = s.experts;
    if (r.method == QuantMethod::gptq) {
      j["output_error"] = num(s.output_error);
      j["rtn_output_error"] = num(s.rtn_output_error);
    }
    slots.push_back(std::move(j));
  }
  return {{"method", quant_method_name(r.method)},
          {"bits", r.spec.bits},
          {"group_size", r.spec.group_size},
          {"symmetric", r.spec.symmetric},
          {"lm_head_quantized", r.lm_head_quantized},
          {"model_bytes_before", r.model_bytes_before},
          {"model_bytes_after", r.model_bytes_after},
          {"compression", r.model_bytes_after > 0 ? static_cast<double>(r.model_bytes_before) /
                                                        static_cast<double>(r.model_bytes_after)
                                                  : 0.0},
          {"quantized_weights", r.quantized_weights},
          {"quantized_bytes_before", r.quantized_bytes_before},
          {"quantized_bytes_after", r.quantized_bytes_after},
          {"bits_per_weight", r.bits_per_weight},
          {"calibration_samples", r.calibration_samples},
          {"calibration_tokens", r.calibration_tokens},
          {"seconds", r.seconds},
          {"notes", r.notes},
          {"slots", slots}};
}

}  // namespace el::quant
