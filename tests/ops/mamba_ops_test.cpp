// mamba_ops_test.cpp — the Mamba-1 ops (ops/ops.h "Mamba-1") against plain
// f64 references written from transformers' MambaMixer equations:
//  * registry cases (forward, finite-difference gradients of every input,
//    bf16/f16) for split_columns, mamba_conv1d (with / without bias, K = 1,
//    T < K) and mamba_scan (odd B, T, I, N; N = 1; T = 1; large |delta|
//    through softplus's linear branch);
//  * the generation ops: a sequence cut into pieces and run through the
//    cached conv and scan equals one run; `last` stops each row's states
//    after its last real token (the f64 reference states of the prefix).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

std::string dims_name(std::initializer_list<std::pair<const char*, int64_t>> dims) {
  std::string s;
  for (const auto& [k, v] : dims) s += (s.empty() ? "" : "_") + std::string(k) + std::to_string(v);
  return s;
}

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double silu(double x) { return x / (1.0 + std::exp(-x)); }

// silu(bias + causal depthwise conv) of x[B, T, I] with w[I, K], f64;
// `prev` [B, K - 1, I] holds the inputs before t = 0 (empty: zeros).
std::vector<double> conv_ref(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& bias, int64_t B, int64_t T, int64_t I,
                             int64_t K, const std::vector<double>& prev = {}) {
  std::vector<double> out(static_cast<size_t>(B * T * I));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < I; ++d) {
        double s = bias.empty() ? 0.0 : bias[d];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t tau = t - K + 1 + k;
          if (tau >= 0) {
            s += w[d * K + k] * x[(b * T + tau) * I + d];
          } else if (!prev.empty()) {
            s += w[d * K + k] * prev[(b * (K - 1) + K - 1 + tau) * I + d];
          }
        }
        out[(b * T + t) * I + d] = silu(s);
      }
  return out;
}

struct ScanRef {
  std::vector<double> y;
  std::vector<double> state;  // [B, I, N]: h after step stop[b]
};

// transformers' selective scan in f64; stop[b] = the step whose state is
// returned (default T - 1).
ScanRef scan_ref(const std::vector<Tensor>& in, std::vector<int64_t> stop = {}) {
  const std::vector<double> u = to_doubles(in[0]), dl = to_doubles(in[1]), al = to_doubles(in[2]),
                            Bm = to_doubles(in[3]), Cm = to_doubles(in[4]), D = to_doubles(in[5]),
                            z = to_doubles(in[6]), bias = to_doubles(in[7]);
  const int64_t B = in[0].dim(0), T = in[0].dim(1), I = in[0].dim(2), N = in[2].dim(1);
  if (stop.empty()) stop.assign(static_cast<size_t>(B), T - 1);
  ScanRef r;
  r.y.assign(u.size(), 0.0);
  r.state.assign(static_cast<size_t>(B * I * N), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < I; ++d) {
      std::vector<double> h(static_cast<size_t>(N), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t e = (b * T + t) * I + d;
        const double dt = softplus(dl[e] + bias[d]);
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          const double A = -std::exp(al[d * N + n]);
          h[n] = std::exp(dt * A) * h[n] + dt * Bm[(b * T + t) * N + n] * u[e];
          acc += Cm[(b * T + t) * N + n] * h[n];
        }
        r.y[e] = (acc + D[d] * u[e]) * silu(z[e]);
        if (t == stop[b]) {
          for (int64_t n = 0; n < N; ++n) r.state[(b * I + d) * N + n] = h[n];
        }
      }
    }
  return r;
}

// The scan's inputs at scales where every term matters: dt = softplus(delta
// + bias) around 0.1 .. 2 (delta_scale widens it into softplus's linear
// branch), A_log near log(1..N).
std::vector<Tensor> scan_inputs(Rng& rng, int64_t B, int64_t T, int64_t I, int64_t N,
                                float delta_scale = 1.0f) {
  Tensor A_log = random_tensor({I, N}, rng, 0.3f);
  std::vector<float> al = A_log.to_floats();
  for (int64_t d = 0; d < I; ++d)
    for (int64_t n = 0; n < N; ++n) al[d * N + n] += std::log(static_cast<float>(n + 1));
  return {random_tensor({B, T, I}, rng),
          random_tensor({B, T, I}, rng, delta_scale),
          Tensor::from_floats(al, {I, N}),
          random_tensor({B, T, N}, rng),
          random_tensor({B, T, N}, rng),
          random_tensor({I}, rng),
          random_tensor({B, T, I}, rng),
          random_tensor({I}, rng, 0.5f)};
}

OpCase split_case(int64_t rows, std::vector<int64_t> sizes, std::vector<int> use) {
  std::string name = "split_r" + std::to_string(rows);
  for (int64_t s : sizes) name += "_" + std::to_string(s);
  name += "_use";
  for (int u : use) name += std::to_string(u);
  return {name, [=](Rng& rng) {
            int64_t cols = 0;
            for (int64_t s : sizes) cols += s;
            OpInstance inst;
            inst.inputs = {random_tensor({rows, 1, cols}, rng)};
            inst.differentiable = {true};
            // The used parts summed (equal sizes): the unused ones get zeros.
            inst.run = [=](const std::vector<Tensor>& in) {
              const std::vector<Tensor> p = ops::split_columns(in[0], sizes);
              Tensor out = p[static_cast<size_t>(use[0])];
              for (size_t i = 1; i < use.size(); ++i) {
                out = ops::add(out, p[static_cast<size_t>(use[i])]);
              }
              return out;
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const std::vector<double> x = to_doubles(in[0]);
              const int64_t w = sizes[static_cast<size_t>(use[0])];
              std::vector<double> out(static_cast<size_t>(rows * w), 0.0);
              for (int u : use) {
                int64_t c0 = 0;
                for (int i = 0; i < u; ++i) c0 += sizes[static_cast<size_t>(i)];
                for (int64_t r = 0; r < rows; ++r)
                  for (int64_t j = 0; j < w; ++j) out[r * w + j] += x[r * cols + c0 + j];
              }
              return out;
            };
            return inst;
          }};
}

OpCase conv_case(int64_t B, int64_t T, int64_t I, int64_t K, bool bias) {
  return {"conv_" + dims_name({{"B", B}, {"T", T}, {"I", I}, {"K", K}, {"bias", bias}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({B, T, I}, rng), random_tensor({I, 1, K}, rng, 0.5f)};
            inst.differentiable = {true, true};
            if (bias) {
              inst.inputs.push_back(random_tensor({I}, rng, 0.5f));
              inst.differentiable.push_back(true);
            }
            inst.run = [](const std::vector<Tensor>& in) {
              return ops::mamba_conv1d(in[0], in[1], in.size() > 2 ? in[2] : Tensor());
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              return conv_ref(to_doubles(in[0]), to_doubles(in[1]),
                              in.size() > 2 ? to_doubles(in[2]) : std::vector<double>{}, B, T, I,
                              K);
            };
            return inst;
          }};
}

OpCase scan_case(int64_t B, int64_t T, int64_t I, int64_t N, float delta_scale = 1.0f) {
  return {"scan_" + dims_name({{"B", B}, {"T", T}, {"I", I}, {"N", N},
                               {"ds", static_cast<int64_t>(delta_scale)}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = scan_inputs(rng, B, T, I, N, delta_scale);
            inst.differentiable.assign(inst.inputs.size(), true);
            inst.run = [](const std::vector<Tensor>& in) {
              return ops::mamba_scan(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7]);
            };
            inst.reference = [](const std::vector<Tensor>& in) { return scan_ref(in).y; };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

std::vector<OpCase> mamba_cases() {
  return {
      split_case(5, {3, 3}, {0}),
      split_case(4, {2, 5, 2}, {0, 2}),  // the middle part gets no gradient
      split_case(3, {4, 1, 4}, {2, 0}),
      conv_case(2, 7, 5, 4, true),
      conv_case(1, 3, 3, 4, false),  // T < K: every output reads the zero past
      conv_case(2, 6, 4, 1, true),   // K = 1: a per-channel scale
      conv_case(1, 9, 6, 3, true),
      scan_case(2, 7, 5, 3),
      scan_case(1, 11, 3, 1),   // one state
      scan_case(2, 1, 4, 4),    // one step
      scan_case(1, 6, 3, 16),   // Mamba's default N
      scan_case(1, 5, 3, 2, 30.0f),  // |delta| large: softplus's x > 20 branch
  };
}

INSTANTIATE_TEST_SUITE_P(Mamba, OpCaseTest, ::testing::ValuesIn(mamba_cases()), op_case_name);

// ---- generation ops ------------------------------------------------------------------

// Rows [t0, t1) of every batch row of x[B, T, ...].
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t B = x.dim(0), T = x.dim(1), inner = x.numel() / (B * T);
  const std::vector<float> v = x.to_floats();
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), v.begin() + (b * T + t0) * inner, v.begin() + (b * T + t1) * inner);
  Shape s = x.shape();
  s[1] = t1 - t0;
  return Tensor::from_floats(out, s);
}

std::vector<float> concat_time(const std::vector<Tensor>& parts, int64_t B) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    for (const Tensor& p : parts) {
      const std::vector<float> v = p.to_floats();
      const int64_t n = p.numel() / B;
      out.insert(out.end(), v.begin() + b * n, v.begin() + (b + 1) * n);
    }
  return out;
}

constexpr Tolerance kChainTol{1e-5, 1e-4};  // the same f32 arithmetic, cut into pieces

TEST(MambaOps, ScanCachedInPiecesEqualsOneRun) {
  NoGrad no_grad;
  Rng rng(11);
  const int64_t B = 2, T = 9, I = 5, N = 3;
  const std::vector<Tensor> in = scan_inputs(rng, B, T, I, N);
  const ScanRef ref = scan_ref(in);
  Tensor state = Tensor::zeros({B, I, N});
  std::vector<Tensor> ys;
  for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, 4}, {4, 5}, {5, 9}}) {
    std::vector<Tensor> part = in;
    for (int i : {0, 1, 3, 4, 6}) part[static_cast<size_t>(i)] = time_slice(in[i], t0, t1);
    ys.push_back(ops::mamba_scan_cached(part[0], part[1], part[2], part[3], part[4], part[5],
                                        part[6], part[7], state, Tensor()));
  }
  EXPECT_TRUE(all_close(concat_time(ys, B), ref.y, kChainTol, "y in pieces"));
  EXPECT_TRUE(all_close(state.to_floats(), ref.state, kChainTol, "final state"));
}

TEST(MambaOps, ScanCachedLastStopsEachRowsState) {
  NoGrad no_grad;
  Rng rng(12);
  const int64_t B = 3, T = 7, I = 4, N = 5;
  const std::vector<Tensor> in = scan_inputs(rng, B, T, I, N);
  const std::vector<int32_t> last = {2, 6, 0};
  const ScanRef ref = scan_ref(in, {2, 6, 0});
  Tensor state = Tensor::zeros({B, I, N});
  const Tensor y = ops::mamba_scan_cached(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7],
                                          state, Tensor::from_ints(last, {B}));
  EXPECT_TRUE(all_close(y.to_floats(), ref.y, tolerance_for(DType::f32), "y"));
  EXPECT_TRUE(all_close(state.to_floats(), ref.state, tolerance_for(DType::f32), "states"));
}

TEST(MambaOps, ConvCachedInPiecesEqualsOneRun) {
  NoGrad no_grad;
  for (int64_t K : {1, 2, 4}) {
    Rng rng(13 + static_cast<uint64_t>(K));
    const int64_t B = 2, T = 8, I = 3;
    const Tensor x = random_tensor({B, T, I}, rng), w = random_tensor({I, 1, K}, rng, 0.5f),
                 bias = random_tensor({I}, rng);
    const std::vector<double> ref =
        conv_ref(to_doubles(x), to_doubles(w), to_doubles(bias), B, T, I, K);
    Tensor state = Tensor::zeros({B, K - 1, I});
    std::vector<Tensor> outs;
    for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, 1}, {1, 3}, {3, 4}, {4, 8}}) {
      outs.push_back(ops::mamba_conv1d_cached(time_slice(x, t0, t1), w, bias, state, Tensor()));
    }
    EXPECT_TRUE(all_close(concat_time(outs, B), ref, kChainTol, "K " + std::to_string(K)));
    // The state is the last K - 1 inputs.
    EXPECT_TRUE(all_close(state.to_floats(), to_doubles(time_slice(x, T - K + 1, T)), kChainTol,
                          "state K " + std::to_string(K)));
  }
}

TEST(MambaOps, ConvCachedLastKeepsTheInputsBeforeIt) {
  NoGrad no_grad;
  Rng rng(21);
  const int64_t B = 2, T = 6, I = 3, K = 4;
  const Tensor x = random_tensor({B, T, I}, rng), w = random_tensor({I, 1, K}, rng, 0.5f);
  // A previous state of 3 inputs per row, then last = {1, 5}: row 0 keeps
  // one old input and x[0, 0..1], row 1 keeps x[1, 3..5].
  const Tensor prev = random_tensor({B, K - 1, I}, rng);
  Tensor state = prev.clone();
  const Tensor last = Tensor::from_ints({1, 5}, {B});
  const Tensor out = ops::mamba_conv1d_cached(x, w, Tensor(), state, last);
  const std::vector<double> ref = conv_ref(to_doubles(x), to_doubles(w), {}, B, T, I, K,
                                           to_doubles(prev));
  EXPECT_TRUE(all_close(out.to_floats(), ref, tolerance_for(DType::f32), "out from a state"));
  const std::vector<float> p = prev.to_floats(), xv = x.to_floats(), s = state.to_floats();
  std::vector<double> want;
  for (int64_t d = 0; d < I; ++d) want.push_back(p[(0 * 3 + 2) * I + d]);  // row 0: old input
  for (int64_t t : {0, 1})
    for (int64_t d = 0; d < I; ++d) want.push_back(xv[(0 * T + t) * I + d]);
  for (int64_t t : {3, 4, 5})
    for (int64_t d = 0; d < I; ++d) want.push_back(xv[(1 * T + t) * I + d]);
  EXPECT_TRUE(all_close(s, want, {0, 0}, "state"));
}

}  // namespace
}  // namespace el::test
