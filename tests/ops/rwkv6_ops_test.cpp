// rwkv6_ops_test.cpp — the RWKV-6 ops (ops/ops.h "RWKV-6") against plain f64
// loops written from the equations (no transformers reference exists):
//  * registry cases (forward, finite-difference gradients of r, k, v, w and
//    u, bf16/f16) for rwkv6_wkv (odd T, several head sizes and head counts,
//    a given initial state) and tanh_act;
//  * the state: one call over T tokens equals two calls chained through the
//    state, and `last` keeps each row's state at its own step.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

// y_t[j] = sum_i r_t[i] (u[i] k_t[i] v_t[j] + S_{t-1}[i][j]),
// S_t[i][j] = exp(-exp(w_t[i])) S_{t-1}[i][j] + k_t[i] v_t[j], per head, in
// f64; state0 [B, H, N, N] or empty (zero). Also returns the final state.
std::vector<double> wkv6_reference(const std::vector<double>& r, const std::vector<double>& k,
                                   const std::vector<double>& v, const std::vector<double>& w,
                                   const std::vector<double>& u, const std::vector<double>& state0,
                                   int64_t B, int64_t T, int64_t C, int64_t N,
                                   std::vector<double>* final_state = nullptr) {
  const int64_t H = C / N;
  std::vector<double> y(k.size(), 0.0);
  if (final_state) final_state->assign(static_cast<size_t>(B * H * N * N), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> S(static_cast<size_t>(N * N), 0.0);
      if (!state0.empty()) {
        for (int64_t e = 0; e < N * N; ++e) S[e] = state0[(b * H + h) * N * N + e];
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = (b * T + t) * C + h * N;
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t i = 0; i < N; ++i) {
            acc += r[o + i] * (u[h * N + i] * k[o + i] * v[o + j] + S[i * N + j]);
          }
          y[o + j] = acc;
        }
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j) {
            S[i * N + j] = std::exp(-std::exp(w[o + i])) * S[i * N + j] + k[o + i] * v[o + j];
          }
      }
      if (final_state) {
        for (int64_t e = 0; e < N * N; ++e) (*final_state)[(b * H + h) * N * N + e] = S[e];
      }
    }
  return y;
}

// Raw decays around -1 .. 0.5: per-step decays from ~0.7 down to ~0.2, so
// the state both remembers and forgets within a few steps.
Tensor random_decay(const Shape& shape, Rng& rng) {
  std::vector<float> w = random_tensor(shape, rng, 0.5f).to_floats();
  for (float& x : w) x -= 0.5f;
  return Tensor::from_floats(w, shape);
}

OpCase wkv6_case(int64_t B, int64_t T, int64_t H, int64_t N, bool with_state) {
  const std::string name = "wkv6_B" + std::to_string(B) + "_T" + std::to_string(T) + "_H" +
                           std::to_string(H) + "_N" + std::to_string(N) +
                           (with_state ? "_state" : "");
  return {name, [=](Rng& rng) {
            const int64_t C = H * N;
            OpInstance inst;
            inst.inputs = {random_tensor({B, T, C}, rng, 0.7f), random_tensor({B, T, C}, rng, 0.7f),
                           random_tensor({B, T, C}, rng), random_decay({B, T, C}, rng),
                           random_tensor({C}, rng, 0.5f)};
            inst.differentiable = {true, true, true, true, true};
            const std::vector<float> state =
                with_state ? random_tensor({B, H, N, N}, rng, 0.5f).to_floats() : std::vector<float>{};
            inst.run = [=](const std::vector<Tensor>& in) {
              if (state.empty()) return ops::rwkv6_wkv(in[0], in[1], in[2], in[3], in[4], N);
              Tensor st = Tensor::from_floats(state, {B, H, N, N}).to(in[1].device());
              return ops::rwkv6_wkv(in[0], in[1], in[2], in[3], in[4], N, &st);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              return wkv6_reference(to_doubles(in[0]), to_doubles(in[1]), to_doubles(in[2]),
                                    to_doubles(in[3]), to_doubles(in[4]),
                                    std::vector<double>(state.begin(), state.end()), B, T, C, N);
            };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

OpCase tanh_case(int64_t n) {
  return {"tanh_n" + std::to_string(n), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({n}, rng, 1.5f)};
            inst.differentiable = {true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::tanh_act(in[0]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> x = to_doubles(in[0]);
              for (double& e : x) e = std::tanh(e);
              return x;
            };
            return inst;
          }};
}

std::vector<OpCase> rwkv6_cases() {
  return {wkv6_case(1, 1, 1, 4, false),  wkv6_case(2, 7, 2, 4, false),
          wkv6_case(1, 5, 1, 8, true),   wkv6_case(2, 9, 3, 2, true),
          wkv6_case(1, 13, 2, 8, false), tanh_case(37)};
}

INSTANTIATE_TEST_SUITE_P(Rwkv6, OpCaseTest, ::testing::ValuesIn(rwkv6_cases()), op_case_name);

// x[b, t0:t1] of a [B, T, C] host vector.
Tensor time_slice(const std::vector<float>& src, int64_t B, int64_t T, int64_t C, int64_t t0,
                  int64_t t1) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), src.begin() + (b * T + t0) * C, src.begin() + (b * T + t1) * C);
  return Tensor::from_floats(out, {B, t1 - t0, C});
}

// Splitting a sequence and carrying the state gives the same outputs and
// final state as one call, and that final state is the definition's.
TEST(Rwkv6Wkv, ChainedThroughStateEqualsOneCall) {
  NoGrad no_grad;
  Rng rng(11);
  const int64_t B = 2, T = 9, H = 2, N = 4, C = H * N, T1 = 4;
  const Tensor r = random_tensor({B, T, C}, rng), k = random_tensor({B, T, C}, rng);
  const Tensor v = random_tensor({B, T, C}, rng), w = random_decay({B, T, C}, rng);
  const Tensor u = random_tensor({C}, rng);
  Tensor full_state = Tensor::zeros({B, H, N, N}, DType::f32);
  const std::vector<float> full = ops::rwkv6_wkv(r, k, v, w, u, N, &full_state).to_floats();
  EXPECT_EQ(ops::rwkv6_wkv(r, k, v, w, u, N).to_floats(), full);
  std::vector<double> def_state;
  wkv6_reference(to_doubles(r), to_doubles(k), to_doubles(v), to_doubles(w), to_doubles(u), {}, B,
                 T, C, N, &def_state);
  EXPECT_TRUE(all_close(full_state.to_floats(), def_state, tolerance_for(DType::f32), "state"));

  const std::vector<float> rh = r.to_floats(), kh = k.to_floats(), vh = v.to_floats(),
                           wh = w.to_floats();
  Tensor state = Tensor::zeros({B, H, N, N}, DType::f32);
  auto run = [&](int64_t t0, int64_t t1) {
    return ops::rwkv6_wkv(time_slice(rh, B, T, C, t0, t1), time_slice(kh, B, T, C, t0, t1),
                          time_slice(vh, B, T, C, t0, t1), time_slice(wh, B, T, C, t0, t1), u, N,
                          &state)
        .to_floats();
  };
  const std::vector<float> y1 = run(0, T1), y2 = run(T1, T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const float got = t < T1 ? y1[(b * T1 + t) * C + c] : y2[(b * (T - T1) + t - T1) * C + c];
        EXPECT_FLOAT_EQ(got, full[(b * T + t) * C + c]) << b << " " << t << " " << c;
      }
  const std::vector<float> want_state = full_state.to_floats();
  EXPECT_TRUE(all_close(state.to_floats(), std::vector<double>(want_state.begin(), want_state.end()),
                        tolerance_for(DType::f32), "chained state"));
}

// last[b] keeps row b's state after its own step (a right-padded prefill).
TEST(Rwkv6Wkv, LastKeepsEachRowsState) {
  NoGrad no_grad;
  Rng rng(12);
  const int64_t B = 2, T = 6, H = 1, N = 4, C = 4;
  const Tensor r = random_tensor({B, T, C}, rng), k = random_tensor({B, T, C}, rng);
  const Tensor v = random_tensor({B, T, C}, rng), w = random_decay({B, T, C}, rng);
  const Tensor u = random_tensor({C}, rng);
  Tensor state = Tensor::zeros({B, H, N, N}, DType::f32);
  ops::rwkv6_wkv(r, k, v, w, u, N, &state, Tensor::from_ints({2, 5}, {B}));
  const std::vector<float> got = state.to_floats();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t stop = b == 0 ? 3 : 6;
    std::vector<double> expect;
    const std::vector<float> rh = r.to_floats(), kh = k.to_floats(), vh = v.to_floats(),
                             wh = w.to_floats();
    auto one_row = [&](const std::vector<float>& src) {
      return to_doubles(time_slice(
          std::vector<float>(src.begin() + b * T * C, src.begin() + (b + 1) * T * C), 1, T, C, 0,
          stop));
    };
    wkv6_reference(one_row(rh), one_row(kh), one_row(vh), one_row(wh), to_doubles(u), {}, 1, stop,
                   C, N, &expect);
    EXPECT_TRUE(all_close(std::vector<float>(got.begin() + b * N * N, got.begin() + (b + 1) * N * N),
                          expect, tolerance_for(DType::f32), "row " + std::to_string(b)));
  }
}

}  // namespace
}  // namespace el::test
