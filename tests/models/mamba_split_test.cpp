// mamba_split_test.cpp — MambaMixer's two projection splits (in_proj into
// x | z, x_proj into dt | B | C): dense Linear slots run them as
// ops::linear_split, any other slot (LoRA, quantized) as its forward plus
// ops::split_columns. Both paths give the same output, the same gradients of
// the input and of every parameter, and the same generation outputs and
// states.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "nn/mamba.h"
#include "nn/model_card.h"

namespace el {
namespace {

// Any slot that is not a dense Linear: forwards to the Linear it holds.
class Wrapped final : public LinearLayer {
 public:
  explicit Wrapped(std::unique_ptr<LinearLayer> inner) : inner_(std::move(inner)) {}
  Tensor forward(const Tensor& x) const override { return inner_->forward(x); }
  void collect_parameters(const std::string& prefix, ParameterList& out) const override {
    inner_->collect_parameters(prefix, out);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }

 private:
  std::unique_ptr<LinearLayer> inner_;
};

// d_model 12 -> I 24, N 3, K 3, dt rank 1: odd part sizes; in_proj with a bias.
ModelCard card() {
  auto r = parse_model_card(
      "name: m\nblock: mamba\nn_layer: 1\nd_model: 12\nvocab_size: 29\nmax_seq_len: 32\n"
      "mamba_d_state: 3\nmamba_d_conv: 3\nmamba_proj_bias: true\n",
      "m.yaml");
  EL_ENSURE(r.ok(), "{}", r.ok() ? "" : r.error().message());
  return r.value();
}

// The same mixer every call; `wrap`: in_proj and x_proj in a Wrapped slot.
std::unique_ptr<MambaMixer> make_mixer(bool wrap) {
  auto m = std::make_unique<MambaMixer>(card(), Device::cpu());
  Rng rng(5);
  m->init_weights(rng, 0.3f, 1);
  for (LinearLayer* slot : {m->in_proj.get(), m->x_proj.get()}) {
    auto* dense = dynamic_cast<Linear*>(slot);
    EL_ENSURE(dense != nullptr, "the mixer's slots start as dense Linear layers");
    init_normal(dense->weight, rng, 0.3f);
    if (dense->bias.defined()) init_normal(dense->bias, rng, 0.3f);
  }
  if (wrap) {
    m->in_proj = std::make_unique<Wrapped>(std::move(m->in_proj));
    m->x_proj = std::make_unique<Wrapped>(std::move(m->x_proj));
  }
  return m;
}

struct StepResult {
  std::vector<float> y, dh;
  std::map<std::string, std::vector<float>> grads;
};

StepResult train_step(const MambaMixer& m, const Tensor& h_host, const Tensor& dy) {
  Tensor h = h_host.clone().set_requires_grad(true);
  Tensor y = m.forward(h);
  accumulate_grad(y, dy.clone());
  tape().backward(Tensor::zeros({1}));
  StepResult r{y.to_floats(), h.grad().to_floats(), {}};
  ParameterList ps;
  m.collect_parameters("mixer", ps);
  for (const auto& p : ps) {
    EL_ENSURE(p.tensor.has_grad(), "{} has no gradient", p.name);
    r.grads[p.name] = p.tensor.grad().to_floats();
  }
  return r;
}

std::vector<double> as_doubles(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(MambaSplit, DenseAndWrappedSlotsTrainAlike) {
  Rng rng(8);
  const Tensor h = test::random_tensor({2, 7, 12}, rng);
  const Tensor dy = test::random_tensor({2, 7, 12}, rng);
  const StepResult dense = train_step(*make_mixer(false), h, dy);
  const StepResult wrapped = train_step(*make_mixer(true), h, dy);
  const test::Tolerance tol = test::tolerance_for(DType::f32);
  EXPECT_TRUE(test::all_close(dense.y, as_doubles(wrapped.y), tol, "y"));
  EXPECT_TRUE(test::all_close(dense.dh, as_doubles(wrapped.dh), tol, "dh"));
  ASSERT_EQ(dense.grads.size(), wrapped.grads.size());
  for (const auto& [name, g] : dense.grads) {
    ASSERT_TRUE(wrapped.grads.count(name)) << name;
    EXPECT_TRUE(test::all_close(g, as_doubles(wrapped.grads.at(name)), tol, name));
  }
}

TEST(MambaSplit, DenseAndWrappedSlotsGenerateAlike) {
  Rng rng(9);
  const Tensor prefill = test::random_tensor({2, 5, 12}, rng);
  const Tensor step = test::random_tensor({2, 1, 12}, rng);
  std::vector<std::vector<float>> outs[2];
  for (int wrap = 0; wrap < 2; ++wrap) {
    NoGrad no_grad;
    const auto m = make_mixer(wrap == 1);
    Tensor conv = Tensor::zeros({2, m->d_conv - 1, m->d_inner});
    Tensor ssm = Tensor::zeros({2, m->d_inner, m->d_state});
    outs[wrap].push_back(m->forward_cached(prefill, conv, ssm, Tensor()).to_floats());
    outs[wrap].push_back(m->forward_cached(step, conv, ssm, Tensor()).to_floats());
    outs[wrap].push_back(conv.to_floats());
    outs[wrap].push_back(ssm.to_floats());
  }
  const char* what[] = {"prefill", "decode step", "conv state", "ssm state"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(test::all_close(outs[0][i], as_doubles(outs[1][i]),
                                test::tolerance_for(DType::f32), what[i]));
  }
}

}  // namespace
}  // namespace el
