// cuda_embedding_rope.cu — embedding forward/backward and rotary embedding.
//
// Embedding backward is deterministic: instead of atomically adding rows into
// dtable (whose float sum order would change run to run), the (id, position)
// pairs are sorted by id with CUB's stable radix sort and one thread block per
// run of equal ids adds its dout rows in position order (the CPU's order)
// into registers and writes the dtable row once. Rows no id touches are zero.
// Ids outside [0, V) are reported through the deferred device error record
// (cuda_context.h) and skipped.
#include <cub/device/device_radix_sort.cuh>

#include "cuda/cuda_check.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace el::cuda {
namespace {

constexpr int kRowThreads = 128;

// out[row, :] = table[ids[row], :]; one block per row (grid.x) and column chunk.
template <class TT, class TO>
__global__ void embedding_forward_kernel(const int32_t* __restrict__ ids,
                                         const TT* __restrict__ table, TO* __restrict__ out,
                                         int64_t c, int32_t v, DeviceErrorRecord* err) {
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  const bool ok = id >= 0 && id < v;
  if (!ok && threadIdx.x == 0) report_device_error(err, kErrEmbeddingForwardId, row, id, v);
  const TT* src = table + static_cast<int64_t>(ok ? id : 0) * c;
  TO* dst = out + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    dst[j] = from_f<TO>(ok ? to_f<TT>(src[j]) : 0.f);
  }
}

// keys[i] = ids[i] (or v for an invalid id, sorted last and skipped); vals[i] = i.
__global__ void embedding_keys_kernel(const int32_t* __restrict__ ids, int64_t n, int32_t v,
                                      int32_t* keys, int32_t* vals, DeviceErrorRecord* err) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int32_t id = ids[i];
    const bool ok = id >= 0 && id < v;
    if (!ok) report_device_error(err, kErrEmbeddingBackwardId, i, id, v);
    keys[i] = ok ? id : v;
    vals[i] = static_cast<int32_t>(i);
  }
}

// Block (s, chunk): if sorted entry s starts a run of equal ids, dtable[id,
// cols] = sum over the run of dout[pos, cols], in position order.
template <class TG, class TD>
__global__ void embedding_backward_kernel(const int32_t* __restrict__ keys,
                                          const int32_t* __restrict__ pos,
                                          const TG* __restrict__ dout, TD* __restrict__ dtable,
                                          int64_t n, int64_t c, int32_t v) {
  const int64_t s = blockIdx.x;
  const int32_t id = keys[s];
  if (id >= v || (s > 0 && keys[s - 1] == id)) return;
  const int64_t col = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  if (col >= c) return;
  float acc = 0.f;
  for (int64_t t = s; t < n && keys[t] == id; ++t) acc += to_f<TG>(dout[pos[t] * c + col]);
  dtable[static_cast<int64_t>(id) * c + col] = from_f<TD>(acc);
}

// y = rotate(x) for each (b, t, h, i < D/2) pair; in-place safe.
template <class TX, class TY>
__global__ void rope_kernel(const TX* __restrict__ x, const void* inv_freq, DType freq_dtype,
                            TY* __restrict__ y, int64_t pairs, int64_t t_len, int64_t heads,
                            int64_t half, int64_t pos_offset, float sign) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t p = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; p < pairs; p += stride) {
    const int64_t i = p % half;
    const int64_t row = p / half;  // (b * T + t) * H + h
    const int64_t t = (row / heads) % t_len;
    // Angle as the CPU computes it: f32 position times f32 frequency.
    const float ang = static_cast<float>(pos_offset + t) * ld(inv_freq, freq_dtype, i);
    float sn, cs;
    sincosf(ang, &sn, &cs);
    sn *= sign;
    const int64_t base = row * 2 * half;
    const float x1 = to_f<TX>(x[base + i]), x2 = to_f<TX>(x[base + half + i]);
    y[base + i] = from_f<TY>(x1 * cs - x2 * sn);
    y[base + half + i] = from_f<TY>(x2 * cs + x1 * sn);
  }
}

int bits_for(int64_t v) {
  int b = 1;
  while ((int64_t{1} << b) <= v) ++b;
  return b;
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  expect_cuda_dtype(ids, DType::i32, "embedding_forward (ids)");
  expect_cuda_float(table, "embedding_forward (table)");
  expect_cuda_float(out, "embedding_forward (out)");
  EL_CUDA_ENSURE(table.ndim() == 2, "cuda embedding_forward: table must be 2-D, got {}",
                 shape_str(table.shape()));
  const int64_t n = ids.numel(), v = table.dim(0), c = table.dim(1);
  EL_CUDA_ENSURE(out.numel() == n * c, "cuda embedding_forward: out {} for {} ids of width {}",
                 shape_str(out.shape()), n, c);
  EL_CUDA_ENSURE(v <= INT32_MAX, "cuda embedding_forward: {} rows exceed i32 ids", v);
  if (n == 0 || c == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(table.dtype(), TT, {
    EL_DISPATCH_FLOAT(out.dtype(), TO, {
      embedding_forward_kernel<TT, TO><<<static_cast<unsigned>(n), kRowThreads, 0, cx.stream>>>(
          ids.data<int32_t>(), table.data<TT>(), out.data<TO>(), c, static_cast<int32_t>(v),
          cx.dev_error);
    });
  });
  EL_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  expect_cuda_dtype(ids, DType::i32, "embedding_backward (ids)");
  expect_cuda_float(dout, "embedding_backward (dout)");
  expect_cuda_float(dtable, "embedding_backward (dtable)");
  EL_CUDA_ENSURE(dtable.ndim() == 2, "cuda embedding_backward: dtable must be 2-D, got {}",
                 shape_str(dtable.shape()));
  const int64_t n = ids.numel(), v = dtable.dim(0), c = dtable.dim(1);
  EL_CUDA_ENSURE(dout.numel() == n * c, "cuda embedding_backward: dout {} for {} ids of width {}",
                 shape_str(dout.shape()), n, c);
  EL_CUDA_ENSURE(v < INT32_MAX && n <= INT32_MAX,
                 "cuda embedding_backward: {} rows / {} ids too many", v, n);
  fill(dtable, 0.f);
  if (n == 0 || c == 0) return;
  Context& cx = ctx();
  const Device dev = ids.device();
  // keys_in, vals_in, keys_out, vals_out: [4, N] i32
  Tensor kv = Tensor::empty({4, n}, DType::i32, dev);
  int32_t* keys_in = kv.data<int32_t>();
  int32_t* vals_in = keys_in + n;
  int32_t* keys_out = vals_in + n;
  int32_t* vals_out = keys_out + n;
  embedding_keys_kernel<<<grid_for(n, 256), 256, 0, cx.stream>>>(
      ids.data<int32_t>(), n, static_cast<int32_t>(v), keys_in, vals_in, cx.dev_error);
  EL_CUDA_CHECK_LAUNCH("embedding_keys_kernel");
  const int end_bit = bits_for(v);  // keys are in [0, v]
  size_t temp_bytes = 0;
  EL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, vals_in,
                                                vals_out, static_cast<int>(n), 0, end_bit,
                                                cx.stream));
  Tensor temp =
      Tensor::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::u8, dev);
  EL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw(), temp_bytes, keys_in, keys_out, vals_in,
                                                vals_out, static_cast<int>(n), 0, end_bit,
                                                cx.stream));
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((c + 255) / 256));
  EL_DISPATCH_FLOAT(dout.dtype(), TG, {
    EL_DISPATCH_FLOAT(dtable.dtype(), TD, {
      embedding_backward_kernel<TG, TD><<<grid, 256, 0, cx.stream>>>(
          keys_out, vals_out, dout.data<TG>(), dtable.data<TD>(), n, c, static_cast<int32_t>(v));
    });
  });
  EL_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse, Tensor& y) {
  expect_cuda_float(x, "rope (x)");
  expect_cuda_float(inv_freq, "rope (inv_freq)");
  expect_cuda_float(y, "rope (y)");
  EL_CUDA_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0,
                 "cuda rope: x must be [B, T, H, D] with even D, got {}", shape_str(x.shape()));
  EL_CUDA_ENSURE(y.numel() == x.numel(), "cuda rope: y {} for x {}", shape_str(y.shape()),
                 shape_str(x.shape()));
  const int64_t t = x.dim(1), h = x.dim(2), half = x.dim(3) / 2;
  EL_CUDA_ENSURE(inv_freq.numel() == half,
                 "cuda rope: inv_freq has {} values, head dim {} needs {}", inv_freq.numel(),
                 x.dim(3), half);
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  Context& cx = ctx();
  EL_DISPATCH_FLOAT(x.dtype(), TX, {
    EL_DISPATCH_FLOAT(y.dtype(), TY, {
      rope_kernel<TX, TY><<<grid_for(pairs, 256), 256, 0, cx.stream>>>(
          x.data<TX>(), inv_freq.raw(), inv_freq.dtype(), y.data<TY>(), pairs, t, h, half,
          pos_offset, inverse ? -1.f : 1.f);
    });
  });
  EL_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace el::cuda
