// cpu_moe.cpp — mixture-of-experts reference kernels: router top-k, token
// grouping, row gather, grouped GEMM, combine and the router losses
// (contracts in ops/backend.h, "mixture of experts").
//
// Plain loops over tokens (OpenMP over rows where the work is large); the
// grouped GEMM is one OpenBLAS GEMM per expert with rows, which is what a
// grouped GEMM computes. Scores are recomputed from the logits in the
// backward passes instead of being saved, so the only saved router state is
// the chosen ids and weights.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_kernels.h"

namespace el::cpu {
namespace {

// Scores of one row of logits (e values) into s: softmax, or sigmoid.
void row_scores(const float* l, int64_t e, MoeScore score, float* s) {
  if (score == MoeScore::sigmoid) {
    for (int64_t i = 0; i < e; ++i) s[i] = 1.f / (1.f + std::exp(-l[i]));
    return;
  }
  float mx = l[0];
  for (int64_t i = 1; i < e; ++i) mx = std::max(mx, l[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < e; ++i) sum += (s[i] = std::exp(l[i] - mx));
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < e; ++i) s[i] *= inv;
}

// The distribution P averages over tokens (the balance loss): softmax, or the
// sigmoid scores divided by their row sum.
void row_distribution(const float* l, int64_t e, MoeScore score, float* q) {
  row_scores(l, e, score, q);
  if (score != MoeScore::sigmoid) return;
  double sum = 0.0;
  for (int64_t i = 0; i < e; ++i) sum += q[i];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < e; ++i) q[i] *= inv;
}

// dl from dq for q = row_distribution(l): softmax q(g - <g, q>); sigmoid
// normalised: ds = (g - <g, q>) / S, dl = ds s (1 - s).
void distribution_backward(const float* l, int64_t e, MoeScore score, const float* g, float* dl,
                           std::vector<float>& s) {
  s.resize(static_cast<size_t>(e));
  row_scores(l, e, score, s.data());
  double sum = 0.0, dot = 0.0;
  for (int64_t i = 0; i < e; ++i) sum += s[i];
  const double norm = score == MoeScore::sigmoid ? sum : 1.0;
  for (int64_t i = 0; i < e; ++i) dot += static_cast<double>(g[i]) * s[i] / norm;
  for (int64_t i = 0; i < e; ++i) {
    const double d = (g[i] - dot) / norm;
    dl[i] = static_cast<float>(score == MoeScore::sigmoid ? d * s[i] * (1.0 - s[i]) : d * s[i]);
  }
}

bool worth_parallel(int64_t rows, int64_t per_row) {
  return rows * per_row >= kParallelMinWork;
}

}  // namespace

void moe_router_forward(const Tensor& logits, MoeScore score, bool normalize, Tensor& ids,
                        Tensor& weights) {
  expect_f32(logits, "moe_router_forward logits");
  expect_dtype(ids, DType::i32, "moe_router_forward ids");
  expect_f32(weights, "moe_router_forward weights");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  const float* l = logits.data<float>();
  int32_t* id = ids.data<int32_t>();
  float* w = weights.data<float>();
#pragma omp parallel if (worth_parallel(n, e * k))
  {
    std::vector<float> s(static_cast<size_t>(e));
    std::vector<char> taken(static_cast<size_t>(e));
#pragma omp for
    for (int64_t r = 0; r < n; ++r) {
      row_scores(l + r * e, e, score, s.data());
      std::fill(taken.begin(), taken.end(), 0);
      double sum = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t best = -1;
        for (int64_t i = 0; i < e; ++i) {  // strictly greater: ties to the lower index
          if (!taken[i] && (best < 0 || s[i] > s[best])) best = i;
        }
        taken[best] = 1;
        id[r * k + j] = static_cast<int32_t>(best);
        w[r * k + j] = s[best];
        sum += s[best];
      }
      if (normalize) {
        for (int64_t j = 0; j < k; ++j) w[r * k + j] = static_cast<float>(w[r * k + j] / sum);
      }
    }
  }
}

void moe_router_backward(const Tensor& dweights, const Tensor& logits, const Tensor& ids,
                         const Tensor& weights, MoeScore score, bool normalize, Tensor& dlogits) {
  expect_f32(dweights, "moe_router_backward dweights");
  expect_f32(logits, "moe_router_backward logits");
  expect_f32(weights, "moe_router_backward weights");
  expect_f32(dlogits, "moe_router_backward dlogits");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  const float* l = logits.data<float>();
  const int32_t* id = ids.data<int32_t>();
  const float* w = weights.data<float>();
  const float* g = dweights.data<float>();
  float* dl = dlogits.data<float>();
#pragma omp parallel if (worth_parallel(n, e * k))
  {
    std::vector<float> s(static_cast<size_t>(e)), ds(static_cast<size_t>(e));
#pragma omp for
    for (int64_t r = 0; r < n; ++r) {
      row_scores(l + r * e, e, score, s.data());
      std::fill(ds.begin(), ds.end(), 0.f);
      // ds: the gradient w.r.t. the chosen scores. normalize: w_j = s_j / S,
      // so ds_j = (g_j - sum_i w_i g_i) / S.
      double wg = 0.0, sum = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        wg += static_cast<double>(w[r * k + j]) * g[r * k + j];
        sum += s[id[r * k + j]];
      }
      for (int64_t j = 0; j < k; ++j) {
        const float gj = g[r * k + j];
        ds[id[r * k + j]] = normalize ? static_cast<float>((gj - wg) / sum) : gj;
      }
      float* out = dl + r * e;
      if (score == MoeScore::sigmoid) {
        for (int64_t i = 0; i < e; ++i) out[i] = ds[i] * s[i] * (1.f - s[i]);
      } else {
        double dot = 0.0;
        for (int64_t i = 0; i < e; ++i) dot += static_cast<double>(ds[i]) * s[i];
        for (int64_t i = 0; i < e; ++i) out[i] = static_cast<float>(s[i] * (ds[i] - dot));
      }
    }
  }
}

void moe_group(const Tensor& ids, int64_t capacity, Tensor& sorted_slot, Tensor& slot_row,
               Tensor& offsets) {
  expect_dtype(ids, DType::i32, "moe_group ids");
  expect_dtype(sorted_slot, DType::i32, "moe_group sorted_slot");
  expect_dtype(slot_row, DType::i32, "moe_group slot_row");
  expect_dtype(offsets, DType::i32, "moe_group offsets");
  const int64_t n = ids.dim(0), k = ids.dim(1), m = n * k, e = offsets.numel() - 1;
  const int32_t* id = ids.data<int32_t>();
  std::vector<int64_t> count(static_cast<size_t>(e), 0);
  for (int64_t s = 0; s < m; ++s) {
    EL_ENSURE(id[s] >= 0 && id[s] < e, "cpu moe_group: token {} choice {} names expert {} of {}",
              s / k, s % k, id[s], e);
    ++count[static_cast<size_t>(id[s])];
  }
  int32_t* off = offsets.data<int32_t>();
  off[0] = 0;
  for (int64_t x = 0; x < e; ++x) {
    const int64_t kept = capacity > 0 ? std::min(count[x], capacity) : count[x];
    off[x + 1] = static_cast<int32_t>(off[x] + kept);
  }
  int32_t* sorted = sorted_slot.data<int32_t>();
  int32_t* row_of = slot_row.data<int32_t>();
  std::fill(sorted, sorted + m, -1);
  std::fill(row_of, row_of + m, -1);
  std::vector<int64_t> fill(static_cast<size_t>(e), 0);
  for (int64_t p = 0; p < m; ++p) {  // priority order: choice j major, token n minor
    const int64_t j = p / n, t = p % n, s = t * k + j;
    const int64_t x = id[s];
    if (off[x] + fill[x] >= off[x + 1]) continue;  // over capacity: dropped
    const int64_t row = off[x] + fill[x]++;
    sorted[row] = static_cast<int32_t>(s);
    row_of[s] = static_cast<int32_t>(row);
  }
}

void moe_gather_forward(const Tensor& x, const Tensor& sorted_slot, int64_t k, Tensor& out) {
  expect_f32(x, "moe_gather_forward x");
  expect_f32(out, "moe_gather_forward out");
  const int64_t m = out.dim(0), c = out.dim(1);
  const float* src = x.data<float>();
  const int32_t* sorted = sorted_slot.data<int32_t>();
  float* dst = out.data<float>();
#pragma omp parallel for if (worth_parallel(m, c))
  for (int64_t r = 0; r < m; ++r) {
    if (sorted[r] < 0) {
      std::memset(dst + r * c, 0, static_cast<size_t>(c) * sizeof(float));
    } else {
      std::memcpy(dst + r * c, src + (sorted[r] / k) * c, static_cast<size_t>(c) * sizeof(float));
    }
  }
}

void moe_gather_backward(const Tensor& dout, const Tensor& slot_row, Tensor& dx) {
  expect_f32(dout, "moe_gather_backward dout");
  expect_f32(dx, "moe_gather_backward dx");
  const int64_t n = dx.dim(0), c = dx.dim(1), k = slot_row.numel() / n;
  const float* g = dout.data<float>();
  const int32_t* row = slot_row.data<int32_t>();
  float* d = dx.data<float>();
#pragma omp parallel for if (worth_parallel(n, k * c))
  for (int64_t t = 0; t < n; ++t) {
    float* o = d + t * c;
    std::fill(o, o + c, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = row[t * k + j];
      if (r < 0) continue;
      const float* src = g + r * c;
      for (int64_t i = 0; i < c; ++i) o[i] += src[i];
    }
  }
}

void grouped_gemm(const Tensor& x, const Tensor& w, bool trans_w, const Tensor& offsets,
                  Tensor& y) {
  expect_f32(x, "grouped_gemm x");
  expect_f32(w, "grouped_gemm w");
  expect_f32(y, "grouped_gemm y");
  const int64_t e = w.dim(0), m = y.dim(0), o = y.dim(1);
  const int32_t* off = offsets.data<int32_t>();
  EL_ENSURE(off[e] <= m, "cpu grouped_gemm: offsets end at {} past {} rows", off[e], m);
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    if (off[x_e + 1] == off[x_e]) continue;
    Tensor ye = y.slice0(off[x_e], off[x_e + 1]);
    gemm(x.slice0(off[x_e], off[x_e + 1]), false, w.slice0(x_e, x_e + 1).view({w.dim(1), w.dim(2)}),
         trans_w, ye, 1.f, 0.f);
  }
  std::fill(y.data<float>() + static_cast<int64_t>(off[e]) * o, y.data<float>() + m * o, 0.f);
}

void grouped_gemm_dw(const Tensor& dy, const Tensor& x, const Tensor& offsets, Tensor& dw,
                     bool accumulate) {
  expect_f32(dy, "grouped_gemm_dw dy");
  expect_f32(x, "grouped_gemm_dw x");
  expect_f32(dw, "grouped_gemm_dw dw");
  const int64_t e = dw.dim(0);
  const int32_t* off = offsets.data<int32_t>();
  for (int64_t x_e = 0; x_e < e; ++x_e) {
    Tensor de = dw.slice0(x_e, x_e + 1).view({dw.dim(1), dw.dim(2)});
    if (off[x_e + 1] == off[x_e]) {
      if (!accumulate) fill(de, 0.f);  // accumulating nothing keeps the old gradient
      continue;
    }
    gemm(dy.slice0(off[x_e], off[x_e + 1]), true, x.slice0(off[x_e], off[x_e + 1]), false, de,
         1.f, accumulate ? 1.f : 0.f);
  }
}

void moe_combine_forward(const Tensor& ys, const Tensor& weights, const Tensor& slot_row,
                         const Tensor& shared, const Tensor& shared_gate, Tensor& out) {
  expect_f32(ys, "moe_combine_forward ys");
  expect_f32(weights, "moe_combine_forward weights");
  expect_f32(out, "moe_combine_forward out");
  const int64_t n = out.dim(0), c = out.dim(1), k = weights.dim(1);
  const float* y = ys.data<float>();
  const float* w = weights.data<float>();
  const int32_t* row = slot_row.data<int32_t>();
  const float* sh = shared.defined() ? shared.data<float>() : nullptr;
  const float* gl = shared.defined() ? shared_gate.data<float>() : nullptr;
  float* o = out.data<float>();
#pragma omp parallel for if (worth_parallel(n, (k + 1) * c))
  for (int64_t t = 0; t < n; ++t) {
    float* dst = o + t * c;
    std::fill(dst, dst + c, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = row[t * k + j];
      if (r < 0) continue;
      const float wj = w[t * k + j];
      for (int64_t i = 0; i < c; ++i) dst[i] += wj * y[r * c + i];
    }
    if (sh) {
      const float sg = 1.f / (1.f + std::exp(-gl[t]));
      for (int64_t i = 0; i < c; ++i) dst[i] += sg * sh[t * c + i];
    }
  }
}

void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& weights,
                          const Tensor& sorted_slot, const Tensor& slot_row, const Tensor& shared,
                          const Tensor& shared_gate, Tensor& dys, Tensor& dweights,
                          Tensor& dshared, Tensor& dgate) {
  expect_f32(dout, "moe_combine_backward dout");
  expect_f32(ys, "moe_combine_backward ys");
  expect_f32(dys, "moe_combine_backward dys");
  expect_f32(dweights, "moe_combine_backward dweights");
  const int64_t n = dout.dim(0), c = dout.dim(1), k = weights.dim(1), m = ys.dim(0);
  const float* g = dout.data<float>();
  const float* y = ys.data<float>();
  const float* w = weights.data<float>();
  const int32_t* sorted = sorted_slot.data<int32_t>();
  const int32_t* row = slot_row.data<int32_t>();
  float* dy = dys.data<float>();
  float* dw = dweights.data<float>();
#pragma omp parallel for if (worth_parallel(m, c))
  for (int64_t r = 0; r < m; ++r) {
    const int64_t s = sorted[r];
    float* d = dy + r * c;
    if (s < 0) {
      std::fill(d, d + c, 0.f);
      continue;
    }
    const float ws = w[s];
    const float* src = g + (s / k) * c;
    for (int64_t i = 0; i < c; ++i) d[i] = ws * src[i];
  }
#pragma omp parallel for if (worth_parallel(n, (k + 1) * c))
  for (int64_t t = 0; t < n; ++t) {
    const float* gt = g + t * c;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = row[t * k + j];
      double dot = 0.0;
      if (r >= 0) {
        for (int64_t i = 0; i < c; ++i) dot += static_cast<double>(gt[i]) * y[r * c + i];
      }
      dw[t * k + j] = static_cast<float>(dot);
    }
    if (shared.defined()) {
      const float* sh = shared.data<float>() + t * c;
      const float sg = 1.f / (1.f + std::exp(-shared_gate.data<float>()[t]));
      float* ds = dshared.data<float>() + t * c;
      double dot = 0.0;
      for (int64_t i = 0; i < c; ++i) {
        ds[i] = sg * gt[i];
        dot += static_cast<double>(gt[i]) * sh[i];
      }
      dgate.data<float>()[t] = static_cast<float>(dot * sg * (1.0 - sg));
    }
  }
}

void moe_balance_loss_forward(const Tensor& logits, const Tensor& ids, MoeScore score,
                              Tensor& loss) {
  expect_f32(logits, "moe_balance_loss_forward logits");
  expect_f32(loss, "moe_balance_loss_forward loss");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  const float* l = logits.data<float>();
  const int32_t* id = ids.data<int32_t>();
  std::vector<double> count(static_cast<size_t>(e), 0.0), p(static_cast<size_t>(e), 0.0);
  std::vector<float> q(static_cast<size_t>(e));
  for (int64_t r = 0; r < n; ++r) {
    row_distribution(l + r * e, e, score, q.data());
    for (int64_t i = 0; i < e; ++i) p[i] += q[i];
    for (int64_t j = 0; j < k; ++j) count[id[r * k + j]] += 1.0;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < e; ++i) sum += (count[i] / n) * (p[i] / n);
  loss.data<float>()[0] = static_cast<float>(static_cast<double>(e) * sum);
}

void moe_balance_loss_backward(const Tensor& dloss, const Tensor& logits, const Tensor& ids,
                               MoeScore score, Tensor& dlogits) {
  expect_f32(dloss, "moe_balance_loss_backward dloss");
  expect_f32(logits, "moe_balance_loss_backward logits");
  expect_f32(dlogits, "moe_balance_loss_backward dlogits");
  const int64_t n = logits.dim(0), e = logits.dim(1), k = ids.dim(1);
  const int32_t* id = ids.data<int32_t>();
  // dL/dq[r, i] = dloss E f_i / N, the same for every token.
  std::vector<float> g(static_cast<size_t>(e), 0.f);
  std::vector<double> count(static_cast<size_t>(e), 0.0);
  for (int64_t s = 0; s < n * k; ++s) count[id[s]] += 1.0;
  const double scale = static_cast<double>(dloss.data<float>()[0]) * e / n;
  for (int64_t i = 0; i < e; ++i) g[i] = static_cast<float>(scale * count[i] / n);
  const float* l = logits.data<float>();
  float* dl = dlogits.data<float>();
#pragma omp parallel if (worth_parallel(n, e))
  {
    std::vector<float> s;
#pragma omp for
    for (int64_t r = 0; r < n; ++r) distribution_backward(l + r * e, e, score, g.data(), dl + r * e, s);
  }
}

void moe_z_loss_forward(const Tensor& logits, Tensor& loss) {
  expect_f32(logits, "moe_z_loss_forward logits");
  expect_f32(loss, "moe_z_loss_forward loss");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  const float* l = logits.data<float>();
  double sum = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    const float* x = l + r * e;
    const float mx = *std::max_element(x, x + e);
    double s = 0.0;
    for (int64_t i = 0; i < e; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
    const double lse = mx + std::log(s);
    sum += lse * lse;
  }
  loss.data<float>()[0] = static_cast<float>(sum / n);
}

void moe_z_loss_backward(const Tensor& dloss, const Tensor& logits, Tensor& dlogits) {
  expect_f32(dloss, "moe_z_loss_backward dloss");
  expect_f32(logits, "moe_z_loss_backward logits");
  expect_f32(dlogits, "moe_z_loss_backward dlogits");
  const int64_t n = logits.dim(0), e = logits.dim(1);
  const double scale = 2.0 * dloss.data<float>()[0] / n;
  const float* l = logits.data<float>();
  float* dl = dlogits.data<float>();
#pragma omp parallel for if (worth_parallel(n, e))
  for (int64_t r = 0; r < n; ++r) {
    const float* x = l + r * e;
    const float mx = *std::max_element(x, x + e);
    double s = 0.0;
    for (int64_t i = 0; i < e; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
    const double lse = mx + std::log(s);
    // d(lse^2)/dl_i = 2 lse softmax_i
    for (int64_t i = 0; i < e; ++i) {
      dl[r * e + i] = static_cast<float>(scale * lse * std::exp(x[i] - lse));
    }
  }
}

// The reference of the quantized experts: each expert's [N, K] row block of
// the stacked weight is a QuantizedWeight of its own (row slices of the three
// tensors), run by quant_matmul over that expert's rows; experts without rows
// read nothing.
void grouped_quant_matmul(const Tensor& x, const QuantizedWeight& w, const Tensor& offsets, Tensor& y) {
  expect_f32(x, "grouped_quant_matmul x");
  expect_f32(y, "grouped_quant_matmul y");
  const int64_t e = offsets.numel() - 1, n = w.out_features / e, m = y.dim(0);
  const int32_t* off = offsets.data<int32_t>();
  EL_ENSURE(off[e] <= m && y.dim(1) == n, "cpu grouped_quant_matmul: offsets end at {} past {} rows", off[e], m);
  for (int64_t j = 0; j < e; ++j) {
    if (off[j + 1] == off[j]) continue;
    QuantizedWeight we = w;
    we.out_features = n;
    we.qweight = w.qweight.slice0(j * n, (j + 1) * n);
    we.scales = w.scales.slice0(j * n, (j + 1) * n);
    if (w.zeros.defined()) we.zeros = w.zeros.slice0(j * n, (j + 1) * n);
    Tensor ye = y.slice0(off[j], off[j + 1]);
    quant_matmul(x.slice0(off[j], off[j + 1]), we, Tensor(), ye);
  }
  std::fill(y.data<float>() + static_cast<int64_t>(off[e]) * n, y.data<float>() + m * n, 0.f);
}

}  // namespace el::cpu
