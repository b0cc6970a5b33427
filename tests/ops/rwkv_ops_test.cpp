// rwkv_ops_test.cpp — the RWKV-4 ops (ops/ops.h "RWKV-4") against plain f64
// references written from the equations:
//  * registry cases (forward, finite-difference gradients, bf16/f16) for
//    rwkv_wkv (the unstabilised sums a_t, b_t in f64; odd sizes, keys large
//    enough to overflow e^k in f32, a given initial state), rwkv_time_mix
//    (each output, with and without prev), sigmoid_mul and relu_square;
//  * the state: one call over T tokens equals two calls chained through the
//    state, and `last` keeps each row's state at its own step;
//  * the zero state is transformers' (num 0, den 0, max -1e38).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

std::string dims_name(const char* prefix, std::initializer_list<std::pair<const char*, int64_t>> d) {
  std::string s = prefix;
  for (const auto& [k, v] : d) s += "_" + std::string(k) + (v < 0 ? "m" : "") + std::to_string(std::abs(v));
  return s;
}

// y_t = (a_t + e^(u + k_t) v_t) / (b_t + e^(u + k_t)) with
// a_t = sum_{i < t} e^((t - 1 - i) w + k_i) v_i + e^(t w) a_0 (b_t likewise
// with 1 for v), w = -exp(time_decay): the definition, summed in f64.
// state0: empty, or [B, 3, C] num/den/max (a_0 = num e^max, b_0 = den e^max).
std::vector<double> wkv_reference(const std::vector<double>& td, const std::vector<double>& tf,
                                  const std::vector<double>& k, const std::vector<double>& v,
                                  const std::vector<double>& state0, int64_t B, int64_t T,
                                  int64_t C) {
  std::vector<double> y(k.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const double w = -std::exp(td[c]), u = tf[c];
      double a0 = 0, b0 = 0;
      if (!state0.empty()) {
        const double* s = state0.data() + b * 3 * C + c;
        a0 = s[0] * std::exp(s[2 * C]);
        b0 = s[C] * std::exp(s[2 * C]);
      }
      for (int64_t t = 0; t < T; ++t) {
        double a = std::exp(t * w) * a0, bb = std::exp(t * w) * b0;
        for (int64_t i = 0; i < t; ++i) {
          const double e = std::exp((t - 1 - i) * w + k[(b * T + i) * C + c]);
          a += e * v[(b * T + i) * C + c];
          bb += e;
        }
        const int64_t j = (b * T + t) * C + c;
        const double e = std::exp(u + k[j]);
        y[j] = (a + e * v[j]) / (bb + e);
      }
    }
  return y;
}

// A state as the forward leaves it: max in a plausible range, den >= 1.
std::vector<float> random_state(Rng& rng, int64_t B, int64_t C) {
  std::vector<float> s(static_cast<size_t>(B * 3 * C));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      float* p = s.data() + b * 3 * C + c;
      p[C] = 1.f + 2.f * rng.uniform();  // den
      p[0] = p[C] * rng.normal();        // num: den times a value-like mean
      p[2 * C] = rng.normal();           // max
    }
  return s;
}

OpCase wkv_case(int64_t B, int64_t T, int64_t C, float key_offset = 0.f, bool with_state = false) {
  return {dims_name("wkv", {{"B", B}, {"T", T}, {"C", C}, {"koff", static_cast<int64_t>(key_offset)},
                            {"state", with_state}}),
          [=](Rng& rng) {
            OpInstance inst;
            Tensor k = random_tensor({B, T, C}, rng);
            if (key_offset != 0.f) {
              std::vector<float> kv = k.to_floats();
              for (float& x : kv) x += key_offset;
              k = Tensor::from_floats(kv, {B, T, C});
            }
            inst.inputs = {random_tensor({C}, rng), random_tensor({C}, rng), k,
                           random_tensor({B, T, C}, rng)};
            inst.differentiable = {true, true, true, true};
            const std::vector<float> state = with_state ? random_state(rng, B, C)
                                                        : std::vector<float>{};
            inst.run = [=](const std::vector<Tensor>& in) {
              if (state.empty()) return ops::rwkv_wkv(in[0], in[1], in[2], in[3]);
              Tensor st = Tensor::from_floats(state, {B, 3, C}).to(in[2].device());
              return ops::rwkv_wkv(in[0], in[1], in[2], in[3], &st);
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              return wkv_reference(to_doubles(in[0]), to_doubles(in[1]), to_doubles(in[2]),
                                   to_doubles(in[3]),
                                   std::vector<double>(state.begin(), state.end()), B, T, C);
            };
            inst.max_fd_elements = 24;
            return inst;
          }};
}

OpCase time_mix_case(int64_t B, int64_t T, int64_t C, int64_t n_mix, int64_t which, bool prev) {
  return {dims_name("mix", {{"B", B}, {"T", T}, {"C", C}, {"n", n_mix}, {"out", which},
                            {"prev", prev}}),
          [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor({B, T, C}, rng)};
            for (int64_t j = 0; j < n_mix; ++j) {
              std::vector<float> m(static_cast<size_t>(C));
              for (float& x : m) x = rng.uniform();  // mixes lie in [0, 1]
              inst.inputs.push_back(Tensor::from_floats(m, {1, 1, C}));
            }
            if (prev) inst.inputs.push_back(random_tensor({B, C}, rng));
            inst.differentiable.assign(inst.inputs.size(), true);
            if (prev) inst.differentiable.back() = false;  // prev gets no gradient
            inst.run = [=](const std::vector<Tensor>& in) {
              std::vector<Tensor> mix(in.begin() + 1, in.begin() + 1 + n_mix);
              return ops::rwkv_time_mix(in[0], prev ? in.back() : Tensor(), mix)[which];
            };
            inst.reference = [=](const std::vector<Tensor>& in) {
              const std::vector<double> x = to_doubles(in[0]), m = to_doubles(in[1 + which]);
              const std::vector<double> p = prev ? to_doubles(in.back()) : std::vector<double>{};
              std::vector<double> out(x.size());
              for (int64_t b = 0; b < B; ++b)
                for (int64_t t = 0; t < T; ++t)
                  for (int64_t c = 0; c < C; ++c) {
                    const double xs = t > 0 ? x[(b * T + t - 1) * C + c]
                                            : (prev ? p[b * C + c] : 0.0);
                    out[(b * T + t) * C + c] = x[(b * T + t) * C + c] * m[c] + xs * (1 - m[c]);
                  }
              return out;
            };
            return inst;
          }};
}

OpCase sigmoid_mul_case(Shape shape) {
  return {dims_name("sigmoid_mul", {{"n", shape_numel(shape)}}), [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng, 2.f), random_tensor(shape, rng)};
            inst.differentiable = {true, true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::sigmoid_mul(in[0], in[1]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              const std::vector<double> r = to_doubles(in[0]), y = to_doubles(in[1]);
              std::vector<double> out(r.size());
              for (size_t i = 0; i < r.size(); ++i) out[i] = y[i] / (1.0 + std::exp(-r[i]));
              return out;
            };
            return inst;
          }};
}

OpCase relu_square_case(Shape shape) {
  return {dims_name("relu_square", {{"n", shape_numel(shape)}}), [=](Rng& rng) {
            OpInstance inst;
            // Kept 0.1 away from the kink at 0, where central differences
            // of step 1e-2 would not see the one-sided derivative.
            std::vector<float> x = random_tensor(shape, rng).to_floats();
            for (float& v : x) v += v >= 0.f ? 0.1f : -0.1f;
            inst.inputs = {Tensor::from_floats(x, shape)};
            inst.differentiable = {true};
            inst.run = [](const std::vector<Tensor>& in) { return ops::relu_square(in[0]); };
            inst.reference = [](const std::vector<Tensor>& in) {
              std::vector<double> v = to_doubles(in[0]);
              for (double& e : v) e = e > 0 ? e * e : 0.0;
              return v;
            };
            return inst;
          }};
}

std::vector<OpCase> rwkv_cases() {
  return {
      wkv_case(1, 1, 1),
      wkv_case(2, 7, 5),
      wkv_case(3, 13, 3),
      wkv_case(1, 9, 4, 100.f),        // e^k overflows f32: only the stable form survives
      wkv_case(2, 6, 3, -60.f),        // tiny e^k
      wkv_case(2, 5, 3, 0.f, true),    // an initial state (its decay enters dtime_decay)
      wkv_case(1, 1, 7, 0.f, true),    // one decode step
      time_mix_case(2, 5, 3, 3, 0, false),
      time_mix_case(2, 5, 3, 3, 1, true),
      time_mix_case(1, 7, 5, 3, 2, true),
      time_mix_case(3, 1, 4, 2, 1, true),  // one decode step
      time_mix_case(1, 4, 6, 1, 0, false),
      sigmoid_mul_case({3, 7}),
      sigmoid_mul_case({2, 5, 9}),
      relu_square_case({5, 3}),
      relu_square_case({2, 3, 11}),
  };
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Rwkv, OpCaseTest, ::testing::ValuesIn(rwkv_cases()), op_case_name);

namespace {

// The empty state [B, 3, C]: num = den = 0, max = -1e38.
std::vector<float> zero_state(int64_t B, int64_t C) {
  std::vector<float> zero(static_cast<size_t>(B * 3 * C), 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) zero[b * 3 * C + 2 * C + c] = -1e38f;
  return zero;
}

// Splitting a sequence at any point and carrying the state gives the same
// outputs and final state as one call (the same arithmetic, bit for bit).
TEST(RwkvWkv, ChainedThroughStateEqualsOneCall) {
  NoGrad no_grad;
  Rng rng(7);
  const int64_t B = 2, T = 11, C = 5, T1 = 4;
  const Tensor w = random_tensor({C}, rng), u = random_tensor({C}, rng);
  const Tensor k = random_tensor({B, T, C}, rng, 3.f), v = random_tensor({B, T, C}, rng);
  const std::vector<float> zero = zero_state(B, C);
  Tensor full_state = Tensor::from_floats(zero, {B, 3, C});
  const std::vector<float> full = ops::rwkv_wkv(w, u, k, v, &full_state).to_floats();
  // Without a state the output is the same as from the explicit zero state.
  EXPECT_EQ(ops::rwkv_wkv(w, u, k, v).to_floats(), full);

  const std::vector<float> kh = k.to_floats(), vh = v.to_floats();
  auto part = [&](const std::vector<float>& src, int64_t t0, int64_t t1) {
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b)
      out.insert(out.end(), src.begin() + (b * T + t0) * C, src.begin() + (b * T + t1) * C);
    return Tensor::from_floats(out, {B, t1 - t0, C});
  };
  Tensor state = Tensor::from_floats(zero, {B, 3, C});
  const std::vector<float> y1 = ops::rwkv_wkv(w, u, part(kh, 0, T1), part(vh, 0, T1), &state).to_floats();
  const std::vector<float> y2 = ops::rwkv_wkv(w, u, part(kh, T1, T), part(vh, T1, T), &state).to_floats();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const float got = t < T1 ? y1[(b * T1 + t) * C + c] : y2[(b * (T - T1) + t - T1) * C + c];
        EXPECT_EQ(got, full[(b * T + t) * C + c]) << b << " " << t << " " << c;
      }
  EXPECT_EQ(state.to_floats(), full_state.to_floats());
}

// last[b] keeps row b's state after its own step (a right-padded prefill).
TEST(RwkvWkv, LastKeepsEachRowsState) {
  NoGrad no_grad;
  Rng rng(11);
  const int64_t B = 3, T = 6, C = 4;
  const Tensor w = random_tensor({C}, rng), u = random_tensor({C}, rng);
  const Tensor k = random_tensor({B, T, C}, rng), v = random_tensor({B, T, C}, rng);
  const std::vector<int32_t> last = {5, 0, 3};
  const std::vector<float> zero = zero_state(B, C);
  Tensor state = Tensor::from_floats(zero, {B, 3, C});
  ops::rwkv_wkv(w, u, k, v, &state, Tensor::from_ints(last, {B}));
  const std::vector<float> got = state.to_floats(), kh = k.to_floats(), vh = v.to_floats();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = last[b] + 1;
    std::vector<float> kb(kh.begin() + b * T * C, kh.begin() + (b * T + n) * C);
    std::vector<float> vb(vh.begin() + b * T * C, vh.begin() + (b * T + n) * C);
    Tensor s1 = Tensor::from_floats(zero_state(1, C), {1, 3, C});
    ops::rwkv_wkv(w, u, Tensor::from_floats(kb, {1, n, C}), Tensor::from_floats(vb, {1, n, C}), &s1);
    const std::vector<float> want = s1.to_floats();
    for (int64_t i = 0; i < 3 * C; ++i) EXPECT_EQ(got[b * 3 * C + i], want[i]) << b << " " << i;
  }
}

// The state after the last step equals the f64 definition: a_T = num e^max.
TEST(RwkvWkv, FinalStateMatchesDefinition) {
  NoGrad no_grad;
  Rng rng(3);
  const int64_t B = 2, T = 9, C = 3;
  const Tensor w = random_tensor({C}, rng), u = random_tensor({C}, rng);
  const Tensor k = random_tensor({B, T, C}, rng, 2.f), v = random_tensor({B, T, C}, rng);
  const std::vector<float> zero = zero_state(B, C);
  Tensor state = Tensor::from_floats(zero, {B, 3, C});
  ops::rwkv_wkv(w, u, k, v, &state);
  const std::vector<double> wd = to_doubles(w), kd = to_doubles(k), vd = to_doubles(v);
  const std::vector<float> s = state.to_floats();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      double a = 0, bb = 0;
      for (int64_t t = 0; t < T; ++t) {
        const double e = std::exp(kd[(b * T + t) * C + c]);
        a = std::exp(-std::exp(wd[c])) * a + e * vd[(b * T + t) * C + c];
        bb = std::exp(-std::exp(wd[c])) * bb + e;
      }
      const float* p = s.data() + b * 3 * C + c;
      EXPECT_NEAR(p[0] * std::exp(static_cast<double>(p[2 * C])), a, 1e-5 * std::abs(a) + 1e-6);
      EXPECT_NEAR(p[C] * std::exp(static_cast<double>(p[2 * C])), bb, 1e-5 * bb);
    }
}

}  // namespace
}  // namespace el::test
