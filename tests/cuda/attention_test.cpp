// attention_test.cpp — the CUDA attention launchers (cuda/attention.cuh)
// against the CPU backend's attention on the same rounded inputs.
//
// Each case draws fresh random q/k/v/dout, rounds them to the tested dtype,
// runs forward + backward on the GPU (device memory from cudaMalloc directly,
// outputs poisoned with NaN first so an unwritten element fails) and the CPU
// reference on f32 copies of the rounded values. The metric is
// ||gpu - ref|| / ||ref|| per output (lse: max abs difference, and -inf rows
// must match). Shapes cover odd T (1, 7, 100, 257), S > T (causal offset, decode),
// S < T (rows that see no key), D 32 (SIMT fallback), 64 and 128, MHA / GQA /
// MQA, causal and not, in bf16, f16 and f32. Skipped where no GPU is present;
// the argument checks run everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/ops_tolerance.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/attention.cuh"
#include "ops/backend.h"

namespace el::test {
namespace {

using el::cuda::AttentionShape;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Owns one cudaMalloc allocation (at least 1 byte, so pointers are never null).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    err_ = cudaMalloc(&ptr_, bytes > 0 ? bytes : 1);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }
  size_t bytes() const { return bytes_; }
  cudaError_t status() const { return err_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
  cudaError_t err_;
};

// Host values rounded to `dt`, with their stored bytes.
struct HostData {
  std::vector<float> values;  // exactly representable in dt
  std::vector<uint8_t> bytes;
};

HostData random_data(size_t n, DType dt, Rng& rng) {
  HostData h;
  h.values.resize(n);
  h.bytes.resize(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) {
    const float x = rng.normal();
    if (dt == DType::bf16) {
      const uint16_t b = f32_to_bf16(x);
      std::memcpy(&h.bytes[2 * i], &b, 2);
      h.values[i] = bf16_to_f32(b);
    } else if (dt == DType::f16) {
      const uint16_t b = f32_to_f16(x);
      std::memcpy(&h.bytes[2 * i], &b, 2);
      h.values[i] = f16_to_f32(b);
    } else {
      std::memcpy(&h.bytes[4 * i], &x, 4);
      h.values[i] = x;
    }
  }
  return h;
}

std::vector<float> decode(const std::vector<uint8_t>& bytes, DType dt) {
  const size_t n = bytes.size() / dtype_size(dt);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::f32) {
      std::memcpy(&out[i], &bytes[4 * i], 4);
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[2 * i], 2);
      out[i] = dt == DType::bf16 ? bf16_to_f32(b) : f16_to_f32(b);
    }
  }
  return out;
}

std::vector<float> to_vector(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

// ||a - ref|| / max(||ref||, 1e-3 * sqrt(n)) in f64; NaN if any element of a
// is not finite. The floor keeps gradients that are zero in exact arithmetic
// (one visible key: softmax is the constant 1, so dq = dk = 0) from dividing
// rounding noise by rounding noise; the inputs are O(1), so 1e-3 per element
// is far below any real error.
double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  if (a.size() != ref.size()) return NAN;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return NAN;
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  const double floor = 1e-6 * static_cast<double>(a.size());  // (1e-3)^2 * n
  return std::sqrt(num / std::max(den, floor));
}

// Max |a - ref| over rows; a -inf reference row must be -inf exactly.
double lse_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(ref[i]) && ref[i] < 0) {
      if (!(std::isinf(a[i]) && a[i] < 0)) return NAN;
      continue;
    }
    if (!std::isfinite(a[i])) return NAN;
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - ref[i]));
  }
  return worst;
}

struct Case {
  int b, t, s, h, hkv, d;
  bool causal;
  DType dt;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  char buf[128];
  std::snprintf(buf, sizeof buf, "B%d_T%d_S%d_H%d_Hkv%d_D%d_%s_%s", c.b, c.t, c.s, c.h, c.hkv,
                c.d, c.causal ? "causal" : "full", dtype_name(c.dt));
  return buf;
}

// Norm-relative budgets: the forward rounds P and out to the 16-bit type
// (2^-9 for bf16 per element, errors average out over the norm); the
// backward also rounds dS and P^T before three more products, so it gets
// the per-element budget of ops_tolerance.h.
double forward_budget(DType dt) { return tolerance_for(dt).rel * (dt == DType::f32 ? 1.0 : 0.5); }
double backward_budget(DType dt) { return tolerance_for(dt).rel * (dt == DType::f32 ? 2.0 : 1.0); }
double lse_budget(DType dt) { return dt == DType::f32 ? 1e-4 : 2e-3; }

struct Errors {
  double out, lse, dq, dk, dv;
};

// Runs forward + backward of case c on the GPU and the CPU; returns the errors.
void run_case(const Case& c, Errors* errors) {
  *errors = {NAN, NAN, NAN, NAN, NAN};  // stays NaN (fails) if a step below fails
  const AttentionShape shape{c.b, c.t, c.s, c.h, c.hkv, c.d,
                             1.f / std::sqrt(static_cast<float>(c.d)), c.causal};
  const size_t nq = size_t(c.b) * c.t * c.h * c.d, nkv = size_t(c.b) * c.s * c.hkv * c.d;
  const size_t nl = size_t(c.b) * c.h * c.t, es = dtype_size(c.dt);
  Rng rng(0x5eed + c.b * 7919 + c.t * 104729 + c.s * 31 + c.h * 17 + c.d + int(c.dt) * 3 +
          (c.causal ? 1 : 0));
  const HostData q = random_data(nq, c.dt, rng), k = random_data(nkv, c.dt, rng),
                 v = random_data(nkv, c.dt, rng), dout = random_data(nq, c.dt, rng);

  DeviceBuffer dq_in(nq * es), dk_in(nkv * es), dv_in(nkv * es), ddout(nq * es);
  DeviceBuffer dout_(nq * es), dlse(nl * 4), ddq(nq * es), ddk(nkv * es), ddv(nkv * es);
  DeviceBuffer ws(el::cuda::attention_backward_workspace_bytes(shape, c.dt));
  for (const DeviceBuffer* b : {&dq_in, &dk_in, &dv_in, &ddout, &dout_, &dlse, &ddq, &ddk, &ddv, &ws})
    ASSERT_EQ(b->status(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dq_in.get(), q.bytes.data(), nq * es, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dk_in.get(), k.bytes.data(), nkv * es, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dv_in.get(), v.bytes.data(), nkv * es, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(ddout.get(), dout.bytes.data(), nq * es, cudaMemcpyHostToDevice),
            cudaSuccess);
  // Poison every output (0xFF.. is NaN in f32, bf16 and f16) and the workspace.
  for (const DeviceBuffer* b : {&dout_, &dlse, &ddq, &ddk, &ddv, &ws})
    ASSERT_EQ(cudaMemset(b->get(), 0xFF, b->bytes()), cudaSuccess);

  ASSERT_EQ(el::cuda::attention_forward(dq_in.get(), dk_in.get(), dv_in.get(), dout_.get(),
                                        dlse.f32(), shape, c.dt, nullptr),
            cudaSuccess);
  ASSERT_EQ(el::cuda::attention_backward(ddout.get(), dq_in.get(), dk_in.get(), dv_in.get(),
                                         dout_.get(), dlse.f32(), ddq.get(), ddk.get(), ddv.get(),
                                         ws.get(), shape, c.dt, nullptr),
            cudaSuccess);
  const cudaError_t sync = cudaDeviceSynchronize();
  ASSERT_EQ(sync, cudaSuccess) << cudaGetErrorString(sync);

  auto fetch = [](const DeviceBuffer& b) {
    std::vector<uint8_t> host(b.bytes());
    EXPECT_EQ(cudaMemcpy(host.data(), b.get(), b.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  };
  const std::vector<float> g_out = decode(fetch(dout_), c.dt), g_dq = decode(fetch(ddq), c.dt),
                           g_dk = decode(fetch(ddk), c.dt), g_dv = decode(fetch(ddv), c.dt),
                           g_lse = decode(fetch(dlse), DType::f32);

  // CPU reference on the same rounded values.
  Backend& cpu = backend_for(Device::cpu());
  const Tensor tq = Tensor::from_floats(q.values, {c.b, c.t, c.h, c.d});
  const Tensor tk = Tensor::from_floats(k.values, {c.b, c.s, c.hkv, c.d});
  const Tensor tv = Tensor::from_floats(v.values, {c.b, c.s, c.hkv, c.d});
  const Tensor tdo = Tensor::from_floats(dout.values, {c.b, c.t, c.h, c.d});
  Tensor r_out = Tensor::empty({c.b, c.t, c.h, c.d}), r_lse = Tensor::empty({c.b, c.h, c.t});
  Tensor r_dq = Tensor::empty({c.b, c.t, c.h, c.d}), r_dk = Tensor::empty({c.b, c.s, c.hkv, c.d}),
         r_dv = Tensor::empty({c.b, c.s, c.hkv, c.d});
  cpu.attention_forward(tq, tk, tv, shape.scale, c.causal, r_out, r_lse);
  cpu.attention_backward(tdo, tq, tk, tv, r_out, r_lse, shape.scale, c.causal, r_dq, r_dk, r_dv);

  const double e_out = rel_error(g_out, to_vector(r_out));
  const double e_lse = lse_error(g_lse, to_vector(r_lse));
  const double e_dq = rel_error(g_dq, to_vector(r_dq));
  const double e_dk = rel_error(g_dk, to_vector(r_dk));
  const double e_dv = rel_error(g_dv, to_vector(r_dv));
  *errors = {e_out, e_lse, e_dq, e_dk, e_dv};
}

void expect_within_budget(const Case& c, const Errors& e, const char* tag) {
  std::printf("[ rel err ] %-44s %s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n",
              case_name({c, 0}).c_str(), tag, e.out, e.lse, e.dq, e.dk, e.dv);
  EXPECT_LT(e.out, forward_budget(c.dt));
  EXPECT_LT(e.lse, lse_budget(c.dt));
  EXPECT_LT(e.dq, backward_budget(c.dt));
  EXPECT_LT(e.dk, backward_budget(c.dt));
  EXPECT_LT(e.dv, backward_budget(c.dt));
}

class CudaAttention : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount reports none)";
  }
};

TEST_P(CudaAttention, MatchesCpuBackend) {
  Errors e{};
  ASSERT_NO_FATAL_FAILURE(run_case(GetParam(), &e));
  expect_within_budget(GetParam(), e, "");
}

// Every tile variant of the tensor-core kernels (the benchmark's tuning knob)
// computes the same function.
TEST(CudaAttentionVariants, EveryTileVariantMatchesCpuBackend) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount reports none)";
  for (const Case& c : {Case{2, 257, 300, 12, 4, 64, true, DType::bf16},
                        Case{1, 130, 130, 8, 2, 128, true, DType::bf16}}) {
    for (int variant = 1; variant <= 8; ++variant) {
      el::cuda::detail::set_attention_variants(variant, variant);
      Errors e{};
      run_case(c, &e);
      char tag[32];
      std::snprintf(tag, sizeof tag, "variant %d", variant);
      expect_within_budget(c, e, tag);
    }
  }
  el::cuda::detail::set_attention_variants(0, 0);
}

std::vector<Case> cases() {
  // {B, T, S, H, Hkv, D, causal}
  const std::vector<Case> shapes = {
      {1, 1, 1, 12, 4, 64, true, DType::f32},       // one token
      {2, 7, 7, 8, 8, 64, true, DType::f32},        // MHA, T below one tile
      {1, 100, 100, 8, 1, 128, true, DType::f32},   // MQA, D 128
      {2, 257, 257, 12, 4, 64, true, DType::f32},   // GQA, partial last tile
      {1, 257, 257, 8, 8, 128, false, DType::f32},  // non-causal
      {1, 100, 300, 12, 4, 64, true, DType::f32},   // S > T: causal offset 200
      {2, 1, 257, 8, 1, 128, true, DType::f32},     // decode step against a cache
      {1, 7, 100, 8, 8, 64, false, DType::f32},     // non-causal, S > T
      {1, 16, 5, 8, 8, 64, true, DType::f32},       // S < T: first rows see no key
      {1, 33, 33, 4, 2, 32, true, DType::f32},      // D 32 (SIMT path for 16-bit too)
      {2, 192, 192, 12, 4, 64, true, DType::f32},   // whole tiles
      {1, 130, 130, 4, 4, 128, true, DType::f32},
  };
  std::vector<Case> out;
  for (DType dt : {DType::bf16, DType::f32}) {
    for (Case c : shapes) {
      c.dt = dt;
      out.push_back(c);
    }
  }
  out.push_back({2, 257, 257, 12, 4, 64, true, DType::f16});
  out.push_back({1, 100, 300, 8, 1, 128, true, DType::f16});
  out.push_back({1, 16, 5, 8, 2, 128, true, DType::f16});
  out.push_back({2, 1024, 1024, 12, 4, 64, true, DType::bf16});  // the 124M model's layer, B 2
  out.push_back({1, 1024, 1024, 8, 2, 128, false, DType::bf16});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention, ::testing::ValuesIn(cases()), case_name);

// S == 0: every row sees no key, so out = 0, lse = -inf, dq = 0.
TEST(CudaAttentionEdge, NoKeysGivesZeroOutputAndMinusInfLse) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount reports none)";
  const AttentionShape shape{1, 3, 0, 4, 2, 64, 0.125f, false};
  const size_t nq = 3 * 4 * 64;
  DeviceBuffer q(nq * 2), out(nq * 2), lse(12 * 4), dout(nq * 2), dq(nq * 2), ws(256);
  ASSERT_EQ(cudaMemset(q.get(), 0, nq * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(out.get(), 0xFF, nq * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(lse.get(), 0xFF, 48), cudaSuccess);
  ASSERT_EQ(cudaMemset(dq.get(), 0xFF, nq * 2), cudaSuccess);
  ASSERT_EQ(el::cuda::attention_forward(q.get(), nullptr, nullptr, out.get(), lse.f32(), shape,
                                        DType::bf16, nullptr),
            cudaSuccess);
  ASSERT_EQ(el::cuda::attention_backward(dout.get(), q.get(), nullptr, nullptr, out.get(),
                                         lse.f32(), dq.get(), nullptr, nullptr, ws.get(), shape,
                                         DType::bf16, nullptr),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> h_out(nq), h_dq(nq);
  std::vector<float> h_lse(12);
  ASSERT_EQ(cudaMemcpy(h_out.data(), out.get(), nq * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(h_dq.data(), dq.get(), nq * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(h_lse.data(), lse.get(), 48, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < nq; ++i) {
    ASSERT_EQ(bf16_to_f32(h_out[i]), 0.f) << "out element " << i;
    ASSERT_EQ(bf16_to_f32(h_dq[i]), 0.f) << "dq element " << i;
  }
  for (float x : h_lse) ASSERT_TRUE(std::isinf(x) && x < 0) << x;
}

// Bad arguments are refused before anything is launched (no GPU needed).
TEST(CudaAttentionArgs, RejectsBadShapesDtypesAndPointers) {
  int dummy[4] = {};
  void* p = dummy;
  float* l = reinterpret_cast<float*>(dummy);
  const AttentionShape ok{1, 4, 4, 4, 2, 64, 0.125f, true};
  AttentionShape bad_group = ok;
  bad_group.Hkv = 3;  // H % Hkv != 0
  AttentionShape bad_d = ok;
  bad_d.D = 512;  // above the SIMT limit of 256
  AttentionShape bad_scale = ok;
  bad_scale.scale = NAN;
  for (const AttentionShape& s : {bad_group, bad_d, bad_scale}) {
    EXPECT_EQ(el::cuda::attention_forward(p, p, p, p, l, s, DType::bf16, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(el::cuda::attention_backward(p, p, p, p, p, l, p, p, p, p, s, DType::bf16, nullptr),
              cudaErrorInvalidValue);
  }
  EXPECT_EQ(el::cuda::attention_forward(p, p, p, p, l, ok, DType::i32, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(el::cuda::attention_forward(nullptr, p, p, p, l, ok, DType::bf16, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(el::cuda::attention_backward(p, p, p, p, p, l, p, p, p, nullptr, ok, DType::bf16,
                                         nullptr),
            cudaErrorInvalidValue);  // missing workspace
}

TEST(CudaAttentionArgs, WorkspaceCoversTheDqAccumulatorOnTheTensorCorePath) {
  const AttentionShape s{2, 100, 100, 12, 4, 64, 0.125f, true};
  const size_t dsum = size_t(2) * 12 * 100 * 4;
  const size_t dq_acc = size_t(2) * 100 * 12 * 64 * 4;
  EXPECT_GE(el::cuda::attention_backward_workspace_bytes(s, DType::bf16), dsum + dq_acc);
  EXPECT_GE(el::cuda::attention_backward_workspace_bytes(s, DType::f32), dsum);
  EXPECT_LT(el::cuda::attention_backward_workspace_bytes(s, DType::f32), dsum + dq_acc);
}

}  // namespace
}  // namespace el::test
