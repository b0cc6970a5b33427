// ops_harness.cpp — random inputs, tolerant comparison and the finite-
// difference gradient check of the op test registry (ops_harness.h).
#include "common/ops_harness.h"

#include <cmath>
#include <sstream>

#include "autograd/tape.h"

namespace el::test {

std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info) { return info.param.name; }

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

Tensor random_tensor(const Shape& shape, Rng& rng, float scale) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = rng.normal() * scale;
  return Tensor::from_floats(v, shape);
}

Tensor random_ints(const Shape& shape, Rng& rng, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(static_cast<size_t>(shape_numel(shape)));
  for (int32_t& x : v) x = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(hi - lo)));
  return Tensor::from_ints(v, shape);
}

std::vector<double> to_doubles(const Tensor& t) {
  const std::vector<float> f = t.to_floats();
  return std::vector<double>(f.begin(), f.end());
}

std::vector<Tensor> stacked_parts(const Tensor& whole, const std::vector<int64_t>& rows) {
  std::vector<Tensor> parts;
  int64_t r = 0;
  for (int64_t n : rows) {
    parts.push_back(whole.slice0(r, r + n));
    parts.back().set_requires_grad(true);
    r += n;
  }
  return parts;
}

::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<double>& expected, Tolerance tol,
                                     const std::string& what) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << what << ": " << actual.size() << " values, expected " << expected.size();
  }
  size_t bad = 0;
  std::ostringstream first;
  double worst = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    const double err = std::abs(a - e);
    const double budget = tol.abs + tol.rel * std::abs(e);
    const bool same_inf = std::isinf(a) && std::isinf(e) && (a > 0) == (e > 0);
    if (same_inf) continue;
    if (!(err <= budget)) {
      if (bad < 5)
        first << "\n  [" << i << "] got " << a << " expected " << e << " (err " << err
              << ", budget " << budget << ")";
      ++bad;
    }
    if (std::isfinite(err)) worst = std::max(worst, err / budget);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << actual.size() << " values out of tolerance (abs "
         << tol.abs << ", rel " << tol.rel << ")" << first.str();
}

uint64_t seed_for(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

namespace {

std::vector<Tensor> clone_inputs(const std::vector<Tensor>& in) {
  std::vector<Tensor> out;
  out.reserve(in.size());
  for (const Tensor& t : in) out.push_back(t.clone());
  return out;
}

double projected(const Tensor& out, const std::vector<float>& r) {
  const std::vector<float> o = out.to_floats();
  double s = 0.0;
  for (size_t i = 0; i < o.size(); ++i) s += static_cast<double>(o[i]) * r[i];
  return s;
}

}  // namespace

::testing::AssertionResult gradients_match(const OpInstance& inst, uint64_t seed) {
  Rng rng(seed ^ 0x9e3779b97f4a7c15ull);
  // Analytic gradients through the tape.
  std::vector<Tensor> in = clone_inputs(inst.inputs);
  for (size_t i = 0; i < in.size(); ++i) {
    if (inst.differentiable[i]) in[i].set_requires_grad(true);
  }
  tape().clear();
  Tensor out = inst.run(in);
  if (!out.requires_grad()) {
    return ::testing::AssertionFailure() << "output does not require grad";
  }
  const Tensor r = random_tensor(out.shape(), rng);
  const std::vector<float> rv = r.to_floats();
  accumulate_grad(out, r.clone());      // seeds dL/dout = R
  tape().backward(Tensor::zeros({1}));  // a loss that needs no seed: just run the tape
  if (tape().size() != 0) return ::testing::AssertionFailure() << "tape not cleared";

  // Numeric gradients of L = sum(out * R), input by input.
  NoGrad no_grad;
  std::vector<Tensor> probe = clone_inputs(inst.inputs);
  for (size_t i = 0; i < in.size(); ++i) {
    if (!inst.differentiable[i]) continue;
    const int64_t n = probe[i].numel();
    std::vector<float> analytic(static_cast<size_t>(n), 0.f);
    if (in[i].has_grad()) analytic = in[i].grad().to_floats();
    std::vector<int64_t> idx;
    if (n <= inst.max_fd_elements) {
      for (int64_t e = 0; e < n; ++e) idx.push_back(e);
    } else {
      for (int e = 0; e < inst.max_fd_elements; ++e) {
        idx.push_back(static_cast<int64_t>(rng.below(static_cast<uint64_t>(n))));
      }
    }
    std::vector<float> got;
    std::vector<double> want;
    float* p = probe[i].data<float>();
    for (int64_t e : idx) {
      const float orig = p[e];
      p[e] = orig + static_cast<float>(inst.grad_eps);
      const double lp = projected(inst.run(probe), rv);
      p[e] = orig - static_cast<float>(inst.grad_eps);
      const double lm = projected(inst.run(probe), rv);
      p[e] = orig;
      // Divide by the step actually taken in f32.
      const double step = static_cast<double>(orig + static_cast<float>(inst.grad_eps)) -
                          static_cast<double>(orig - static_cast<float>(inst.grad_eps));
      want.push_back((lp - lm) / step);
      got.push_back(analytic[static_cast<size_t>(e)]);
    }
    auto res = all_close(got, want, inst.grad_tol,
                         "gradient of input " + std::to_string(i) + " " +
                             shape_str(inst.inputs[i].shape()) + " (autograd vs finite diff)");
    if (!res) return res;
  }
  return ::testing::AssertionSuccess();
}

namespace {

Tensor converted(const Tensor& t, DType dt) {
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  out.copy_from(t);
  return out;
}

struct RunResult {
  Tensor out;
  std::vector<Tensor> grads;  // undefined where not differentiable
};

// Forward and backward of inst.run on `in` (float ones in their given
// dtype), seeding d(out) = r converted to the output's dtype.
RunResult run_with_grad(const OpInstance& inst, std::vector<Tensor> in, const Tensor& r) {
  for (size_t i = 0; i < in.size(); ++i) {
    if (inst.differentiable[i]) in[i].set_requires_grad(true);
  }
  tape().clear();
  RunResult res;
  res.out = inst.run(in);
  accumulate_grad(res.out, converted(r, res.out.dtype()));
  tape().backward(Tensor::zeros({1}));
  for (size_t i = 0; i < in.size(); ++i) {
    res.grads.push_back(inst.differentiable[i] && in[i].has_grad() ? in[i].grad() : Tensor());
  }
  return res;
}

}  // namespace

::testing::AssertionResult half_precision_matches(const OpInstance& inst, DType dt, uint64_t seed) {
  Rng rng(seed ^ 0x51ed270b2c8f3a91ull);
  const std::string tag = std::string(dtype_name(dt)) + " vs f32";
  // Inputs in dt, and the same rounded values in f32 for the reference run.
  std::vector<Tensor> narrow, rounded;
  for (const Tensor& t : inst.inputs) {
    if (dtype_is_float(t.dtype())) {
      narrow.push_back(converted(t, dt));
      rounded.push_back(converted(narrow.back(), DType::f32));
    } else {
      narrow.push_back(t.clone());
      rounded.push_back(t.clone());
    }
  }
  Tensor r;
  {
    NoGrad no_grad;
    const Tensor probe = inst.run(rounded);
    // The seed as the narrow run sees it: rounded to dt (unless the output is f32).
    r = random_tensor(probe.shape(), rng);
    if (!inst.output_always_f32) r = converted(converted(r, dt), DType::f32);
  }
  const RunResult ref = run_with_grad(inst, rounded, r);
  const RunResult got = run_with_grad(inst, narrow, r);
  const DType want_out = inst.output_always_f32 ? DType::f32 : dt;
  if (got.out.dtype() != want_out) {
    return ::testing::AssertionFailure() << tag << ": output is " << dtype_name(got.out.dtype())
                                         << ", expected " << dtype_name(want_out);
  }
  const Tolerance tol = tolerance_for(dt);
  const std::vector<float> ref_out = ref.out.to_floats();
  auto res = all_close(got.out.to_floats(), std::vector<double>(ref_out.begin(), ref_out.end()),
                       tol, tag + " output");
  if (!res) return res;
  for (size_t i = 0; i < inst.inputs.size(); ++i) {
    if (!inst.differentiable[i]) continue;
    const std::string what = tag + " gradient of input " + std::to_string(i) + " " +
                             shape_str(inst.inputs[i].shape());
    if (!got.grads[i].defined() || !ref.grads[i].defined()) {
      if (got.grads[i].defined() != ref.grads[i].defined()) {
        return ::testing::AssertionFailure() << what << ": defined in only one of the runs";
      }
      continue;
    }
    if (got.grads[i].dtype() != dt) {
      return ::testing::AssertionFailure() << what << " is " << dtype_name(got.grads[i].dtype())
                                           << ", expected its input's dtype " << dtype_name(dt);
    }
    const std::vector<float> want = ref.grads[i].to_floats();
    res = all_close(got.grads[i].to_floats(), std::vector<double>(want.begin(), want.end()), tol,
                    what);
    if (!res) return res;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace el::test
