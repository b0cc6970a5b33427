// cuda_embedding_rope.cu — embedding forward/backward and rotary embedding.
//
// Embedding backward is deterministic: instead of atomically adding rows into
// dtable (whose float sum order would change run to run), the (id, position)
// pairs are sorted by id with CUB's stable radix sort, so each id's positions
// form one run in ascending position order. Natural text repeats a few ids
// very often (a run can hold thousands of rows), so one thread per column
// walking a whole run would serialise on that run. Instead the sorted array
// is cut into fixed tiles of kEmbTile entries:
//  * the tile kernel adds each tile's segments (maximal runs of one id inside
//    the tile) in position order; a segment that is a whole run writes its
//    dtable row, a segment cut by a tile edge writes an f32 partial row;
//  * the combine kernel, one block per run that leaves its first tile, adds
//    that run's partials in tile order and writes the dtable row.
// The tiles depend only on the data, so the sums (and the bits) are the same
// every run. Rows no id touches are zero (dtable is overwritten). Ids outside
// [0, V) are reported through the deferred device error record
// (cuda_context.h) and skipped.
//
// RoPE: the angle of (position t, frequency i) is the same for every batch
// row and head, so each block takes P consecutive (b, t) positions, computes
// their P x D/2 cos/sin pairs once into shared memory (f32(pos) * f32(freq)
// and accurate sincosf, as before), then rotates all heads of those positions
// with vector loads of V consecutive pairs (x[i..i+V) and x[D/2+i..D/2+i+V)).
// The block's base offset is 64-bit; offsets inside a block are 32-bit.
// rope_at / split_qkv_rope_at (inference) are the same kernels with the
// offset read per batch row from a device positions array (RopeArgs::positions).
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>

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
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
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

constexpr int kEmbTile = 32;   // sorted entries per tile
constexpr int kEmbBatch = 16;  // rows loaded before they are added (loads in flight)

// Block (tile, column chunk): sorted entries [tile * kEmbTile, +kEmbTile).
// Each thread owns VC consecutive columns. partial: [tiles, 2, C] f32; slot 0
// holds the tile's first segment when that segment is not a whole run, slot 1
// its last segment when that one (a different segment) is not a whole run.
template <class TG, class TD, int VC>
__global__ void embedding_tile_kernel(const int32_t* __restrict__ keys,
                                      const int32_t* __restrict__ pos,
                                      const TG* __restrict__ dout, TD* __restrict__ dtable,
                                      float* __restrict__ partial, int n, int c, int v) {
  __shared__ int32_t skey[kEmbTile + 1];  // [cnt] = first key after the tile, or -1
  __shared__ int32_t spos[kEmbTile];
  __shared__ int32_t sprev;  // last key before the tile, or -1
  const int tile = blockIdx.x;
  const int s0 = tile * kEmbTile;
  const int cnt = min(kEmbTile, n - s0);
  if (threadIdx.x < cnt) {
    skey[threadIdx.x] = keys[s0 + threadIdx.x];
    spos[threadIdx.x] = pos[s0 + threadIdx.x];
  }
  if (threadIdx.x == 0) {
    skey[cnt] = s0 + cnt < n ? keys[s0 + cnt] : -1;
    sprev = s0 > 0 ? keys[s0 - 1] : -1;
  }
  __syncthreads();
  const int col = (blockIdx.y * blockDim.x + threadIdx.x) * VC;
  if (col >= c) return;
  float acc[VC];
#pragma unroll
  for (int e = 0; e < VC; ++e) acc[e] = 0.f;
  int seg_start = 0;
  for (int b0 = 0; b0 < cnt; b0 += kEmbBatch) {
    Pack<TG, VC> g[kEmbBatch];
#pragma unroll
    for (int u = 0; u < kEmbBatch; ++u) {  // past the tile: reload its last row (unused)
      const int su = min(b0 + u, cnt - 1);
      g[u] = *reinterpret_cast<const Pack<TG, VC>*>(dout + int64_t{spos[su]} * c + col);
    }
#pragma unroll
    for (int u = 0; u < kEmbBatch; ++u) {
      const int s = b0 + u;
      if (s >= cnt) break;
#pragma unroll
      for (int e = 0; e < VC; ++e) acc[e] += to_f<TG>(g[u].v[e]);
      const int32_t id = skey[s];
      if (s + 1 < cnt && skey[s + 1] == id) continue;  // the segment goes on
      if (id < v) {
        const bool whole = (seg_start > 0 || sprev != id) && skey[s + 1] != id;
        if (whole) {
          Pack<TD, VC> o;
#pragma unroll
          for (int e = 0; e < VC; ++e) o.v[e] = from_f<TD>(acc[e]);
          *reinterpret_cast<Pack<TD, VC>*>(dtable + int64_t{id} * c + col) = o;
        } else {
          const int slot = seg_start == 0 ? 0 : 1;
          Pack<float, VC> o;
#pragma unroll
          for (int e = 0; e < VC; ++e) o.v[e] = acc[e];
          *reinterpret_cast<Pack<float, VC>*>(partial + (int64_t{tile} * 2 + slot) * c + col) = o;
        }
      }
#pragma unroll
      for (int e = 0; e < VC; ++e) acc[e] = 0.f;
      seg_start = s + 1;
    }
  }
}

// Block (tile, column chunk): if the tile's last run starts in this tile and
// goes on past it, dtable[id] = its partials added in tile order.
template <class TD, int VC>
__global__ void embedding_combine_kernel(const int32_t* __restrict__ keys,
                                         const float* __restrict__ partial,
                                         TD* __restrict__ dtable, int n, int c, int v) {
  __shared__ int s_last;
  const int tile = blockIdx.x;
  const int s0 = tile * kEmbTile;
  const int e = min(n, s0 + kEmbTile);
  if (e >= n) return;  // (the returns before the barrier are uniform over the block)
  const int32_t id = keys[e - 1];
  if (id >= v || keys[e] != id) return;     // the last run ends inside the tile
  if (s0 > 0 && keys[s0 - 1] == id) return;  // it started in an earlier tile (owned there)
  // Last tile the run reaches: tiles m > tile are reached iff keys[m * kEmbTile]
  // == id, a prefix of the tiles after this one; the first warp tests 32 per step.
  if (threadIdx.x < 32) {
    const int tiles = (n + kEmbTile - 1) / kEmbTile;
    int last = tile + 1;  // keys[e] == id
    for (int m0 = tile + 2; m0 < tiles; m0 += 32) {
      const int m = m0 + static_cast<int>(threadIdx.x);
      const bool hit = m < tiles && keys[m * kEmbTile] == id;
      const int k = __popc(__ballot_sync(0xffffffffu, hit));  // hits are lanes 0 .. k-1
      if (k > 0) last = m0 + k - 1;
      if (k < 32) break;
    }
    if (threadIdx.x == 0) s_last = last;
  }
  __syncthreads();
  const int lo = s_last;
  const int col = (blockIdx.y * blockDim.x + threadIdx.x) * VC;
  if (col >= c) return;
  using P = Pack<float, VC>;
  const int slot = keys[s0] == id ? 0 : 1;
  const P first = *reinterpret_cast<const P*>(partial + (int64_t{tile} * 2 + slot) * c + col);
  float acc[VC];
#pragma unroll
  for (int j = 0; j < VC; ++j) acc[j] = first.v[j];
  // Slot 0 of tiles tile+1 .. lo, in order; kEmbBatch loads issued at a time
  // (indices past lo reload tile lo and are not added).
  for (int m0 = tile + 1; m0 <= lo; m0 += kEmbBatch) {
    P g[kEmbBatch];
#pragma unroll
    for (int u = 0; u < kEmbBatch; ++u) {
      g[u] = *reinterpret_cast<const P*>(partial + int64_t{min(m0 + u, lo)} * 2 * c + col);
    }
#pragma unroll
    for (int u = 0; u < kEmbBatch; ++u) {
      if (m0 + u > lo) break;
#pragma unroll
      for (int j = 0; j < VC; ++j) acc[j] += g[u].v[j];
    }
  }
  Pack<TD, VC> o;
#pragma unroll
  for (int j = 0; j < VC; ++j) o.v[j] = from_f<TD>(acc[j]);
  *reinterpret_cast<Pack<TD, VC>*>(dtable + int64_t{id} * c + col) = o;
}

// ---- RoPE -----------------------------------------------------------------------
constexpr int kRopeThreads = 256;
// Vector items per thread per pass: 64 bytes of x in flight per thread (two
// 16-byte pairs of loads), at most 4 items.
constexpr int rope_items(int v, int elem_bytes) {
  const int k = 32 / (v * elem_bytes);
  return k < 1 ? 1 : (k > 4 ? 4 : k);
}
constexpr int kRopeTableBytes = 16 * 1024;   // shared cos/sin table per block (soft cap)
constexpr int kRopeMaxTableBytes = 48 * 1024;

struct RopeArgs {
  const void* inv_freq;
  DType freq_dtype;
  int64_t npos;        // B * T positions
  int64_t t_len;
  int64_t pos_offset;
  // Per batch row offsets (i32 [B], device) replacing pos_offset when set:
  // inference at rows that sit at different cache positions (rope_at).
  const int32_t* positions;
  int heads, half;     // half: rotated pairs per head (inv_freq's length)
  int d;               // head dim: elements from one head to the next
  int pass;            // d - 2 half: trailing dims copied unrotated (partial rotary)
  int hv;              // half / V: vector items per head
  int ipp;             // heads * hv: vector items per position
  int per_block;       // positions per block
  bool table;          // cos/sin staged in shared memory (else computed per pair, V = 1)
  float sign;
  // Elements from one position's first head to the next position's, in x and
  // in y: heads * D when contiguous, more inside a packed q/k/v projection.
  int x_pos, y_pos;
};

// y = rotate(x) for the positions [blockIdx.x * per_block, +per_block); in-place
// safe (every element is read and written by the same thread, read first), so
// x and y are not __restrict__.
template <class TX, class TY, int V, bool kTable, bool kPacked>
__global__ void __launch_bounds__(kRopeThreads, 4) rope_kernel(const TX* x, TY* y, RopeArgs a) {
  extern __shared__ float2 cs_table[];  // [per_block, half]: (cos, sign * sin)
  pdl_wait();  // programmatic dependent launch (cuda_common.cuh)
  pdl_trigger();
  const int64_t p0 = int64_t{blockIdx.x} * a.per_block;
  const int npos = static_cast<int>(min(int64_t{a.per_block}, a.npos - p0));
  const int items = npos * a.ipp;
  const int d = a.d;
  x += p0 * a.x_pos;
  y += p0 * a.y_pos;
  // Element offset of row (position * heads + head, inside the block) in a
  // layout with `pos` elements per position; contiguous rows need no divide.
  auto row_off = [&](int row, int pos) {
    if constexpr (kPacked) {
      const int lp = row / a.heads;
      return lp * pos + (row - lp * a.heads) * d;
    } else {
      return row * d;
    }
  };
  constexpr int kItems = rope_items(V, sizeof(TX));
  Pack<TX, V> x1[kItems], x2[kItems];
  auto load = [&](int j0) {
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      // Past the block's items: reload its last item (unused), so that the
      // loads need no branch and are all issued before the first is used.
      const int j = min(j0 + k * kRopeThreads + static_cast<int>(threadIdx.x), items - 1);
      const int row = j / a.hv;  // position * heads + head, inside the block
      const int off = row_off(row, a.x_pos) + (j - row * a.hv) * V;
      x1[k] = *reinterpret_cast<const Pack<TX, V>*>(x + off);
      x2[k] = *reinterpret_cast<const Pack<TX, V>*>(x + off + a.half);
    }
  };
  auto angle = [&](int lp, int i) {
    // As the CPU computes it: f32 position times f32 frequency.
    const int64_t p = p0 + lp;
    const int64_t t = p % a.t_len;
    const int64_t base = a.positions ? int64_t{a.positions[p / a.t_len]} : a.pos_offset;
    return static_cast<float>(base + t) * ld(a.inv_freq, a.freq_dtype, i);
  };
  load(0);  // in flight while the table is computed
  if constexpr (kTable) {
    for (int k = threadIdx.x; k < npos * a.half; k += kRopeThreads) {
      const int lp = k / a.half;
      float sn, cs;
      sincosf(angle(lp, k - lp * a.half), &sn, &cs);
      cs_table[k] = make_float2(cs, a.sign * sn);
    }
    __syncthreads();
  }
  for (int j0 = 0; j0 < items; j0 += kItems * kRopeThreads) {
    if (j0 > 0) load(j0);
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int j = j0 + k * kRopeThreads + static_cast<int>(threadIdx.x);
      if (j >= items) continue;
      const int row = j / a.hv;
      const int i0 = (j - row * a.hv) * V;
      const int lp = row / a.heads;
      const int off = row_off(row, a.y_pos) + i0;
      Pack<TY, V> y1, y2;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        float cs, sn;
        if constexpr (kTable) {
          const float2 t = cs_table[lp * a.half + i0 + e];
          cs = t.x;
          sn = t.y;
        } else {
          sincosf(angle(lp, i0 + e), &sn, &cs);
          sn *= a.sign;
        }
        const float u = to_f<TX>(x1[k].v[e]), w = to_f<TX>(x2[k].v[e]);
        y1.v[e] = from_f<TY>(u * cs - w * sn);
        y2.v[e] = from_f<TY>(w * cs + u * sn);
      }
      *reinterpret_cast<Pack<TY, V>*>(y + off) = y1;
      *reinterpret_cast<Pack<TY, V>*>(y + off + a.half) = y2;
    }
  }
  // Partial rotary (GPT-NeoX): dims [2 half, d) of each head pass unrotated
  // (converted to TY). In place this rewrites each element with itself.
  if (a.pass > 0) {
    const int pitems = npos * a.heads * a.pass;
    for (int j = threadIdx.x; j < pitems; j += kRopeThreads) {
      const int row = j / a.pass;
      const int i = 2 * a.half + (j - row * a.pass);
      y[row_off(row, a.y_pos) + i] = from_f<TY>(to_f<TX>(x[row_off(row, a.x_pos) + i]));
    }
  }
}

// The per-pair sincosf path (a head dim whose table would not fit in shared
// memory) exists only for V = 1: it is rare and would cost every vector
// kernel registers.
template <class TX, class TY, int V, bool kPacked>
void launch_rope(const void* x, void* y, const RopeArgs& a, cudaStream_t s) {
  const auto blocks = static_cast<unsigned>((a.npos + a.per_block - 1) / a.per_block);
  const TX* px = static_cast<const TX*>(x);
  TY* py = static_cast<TY*>(y);
  if (a.table) {
    const size_t smem = size_t{sizeof(float2)} * a.per_block * a.half;
    launch_kernel(rope_kernel<TX, TY, V, true, kPacked>, blocks, kRopeThreads, smem, s, px, py, a);
  } else if constexpr (V == 1) {
    launch_kernel(rope_kernel<TX, TY, 1, false, kPacked>, blocks, kRopeThreads, 0, s, px, py, a);
  } else {
    EL_CUDA_ENSURE(false, "cuda rope: vector path without a cos/sin table");
  }
}

template <class TX, class TY, bool kPacked>
void launch_rope_v(int vpairs, const void* x, void* y, const RopeArgs& a, cudaStream_t s) {
  switch (vpairs) {
    case 8:
      if constexpr (sizeof(TX) == 2 && sizeof(TY) == 2) launch_rope<TX, TY, 8, kPacked>(x, y, a, s);
      break;
    case 4: launch_rope<TX, TY, 4, kPacked>(x, y, a, s); break;
    case 2: launch_rope<TX, TY, 2, kPacked>(x, y, a, s); break;
    default: launch_rope<TX, TY, 1, kPacked>(x, y, a, s); break;
  }
}

// The rotation of `npos` positions (position p is p % t_len, plus pos_offset,
// or plus positions[p / t_len] when positions is set) of `heads` heads of dim
// d: position p's heads start at x + p * x_pos and y + p * y_pos elements (x
// and y point at element 0 of their first head). inv_freq holds the rotated
// pairs' frequencies, d / 2 or fewer (partial rotary: the rest is copied).
void rope_rows(const void* x, DType tx, int64_t x_pos, void* y, DType ty, int64_t y_pos,
               int64_t npos, int64_t t_len, int64_t heads, int64_t d, const Tensor& inv_freq,
               int64_t pos_offset, bool inverse, const int32_t* positions = nullptr) {
  if (npos == 0 || heads == 0) return;
  const int64_t half = inv_freq.numel();
  EL_CUDA_ENSURE(half >= 1 && 2 * half <= d, "cuda rope: {} frequencies for head dim {}", half,
                 d);
  // Offsets inside a block are 32-bit: a block's positions must fit.
  EL_CUDA_ENSURE(std::max(x_pos, y_pos) <= INT32_MAX / 4 && heads * d <= INT32_MAX / 4,
                 "cuda rope: {} heads of dim {} ({} / {} elements a position) too large", heads, d,
                 x_pos, y_pos);
  Context& cx = ctx();
  RopeArgs a{};
  a.inv_freq = inv_freq.raw();
  a.freq_dtype = inv_freq.dtype();
  a.npos = npos;
  a.t_len = t_len;
  a.pos_offset = pos_offset;
  a.positions = positions;
  a.heads = static_cast<int>(heads);
  a.half = static_cast<int>(half);
  a.d = static_cast<int>(d);
  a.pass = static_cast<int>(d - 2 * half);
  a.sign = inverse ? -1.f : 1.f;
  a.x_pos = static_cast<int>(x_pos);
  a.y_pos = static_cast<int>(y_pos);
  const bool packed = x_pos != heads * d || y_pos != heads * d;
  // Pairs per thread access: up to 16 bytes, when x and y share a dtype, D/2
  // is a multiple and both pointers (and every position's start) are aligned to it.
  const int64_t row_bytes = half * static_cast<int64_t>(sizeof(float2));
  a.table = row_bytes <= kRopeMaxTableBytes;
  int vpairs = 1;
  const int64_t es = static_cast<int64_t>(dtype_size(tx));
  if (tx == ty && a.table) {
    for (int64_t cand = 16 / es; cand > 1; cand /= 2) {
      const uint64_t bytes = static_cast<uint64_t>(cand * es);
      if (half % cand == 0 && d % cand == 0 && reinterpret_cast<uintptr_t>(x) % bytes == 0 &&
          reinterpret_cast<uintptr_t>(y) % bytes == 0 && (x_pos * es) % bytes == 0 &&
          (y_pos * es) % bytes == 0) {
        vpairs = static_cast<int>(cand);
        break;
      }
    }
  }
  a.hv = static_cast<int>(half / vpairs);
  a.ipp = a.heads * a.hv;
  // Positions per block: about one pass of items, few enough to leave ~4
  // blocks per SM, and a cos/sin table of at most kRopeTableBytes.
  const int64_t pass = int64_t{kRopeThreads} * rope_items(vpairs, static_cast<int>(es));
  int64_t per = std::max<int64_t>(1, pass / a.ipp);
  per = std::min(per, std::max<int64_t>(1, npos / (4 * int64_t{cx.sm_count})));
  per = std::min(per, std::max<int64_t>(1, kRopeTableBytes / row_bytes));
  a.per_block = static_cast<int>(per);
  EL_CUDA_ENSURE((npos + per - 1) / per <= INT32_MAX, "cuda rope: {} positions too many", npos);
  cudaStream_t s = cx.stream;
  if (tx == ty) {
    EL_DISPATCH_FLOAT(tx, T, {
      if (packed) {
        launch_rope_v<T, T, true>(vpairs, x, y, a, s);
      } else {
        launch_rope_v<T, T, false>(vpairs, x, y, a, s);
      }
    });
  } else {
    EL_DISPATCH_FLOAT(tx, TX, {
      EL_DISPATCH_FLOAT(ty, TY, {
        if (packed) {
          launch_rope<TX, TY, 1, true>(x, y, a, s);
        } else {
          launch_rope<TX, TY, 1, false>(x, y, a, s);
        }
      });
    });
  }
  EL_CUDA_CHECK_LAUNCH("rope_kernel");
}

// dst row r = src row r, `units` units of U per row; pitches in units. A
// kernel rather than cudaMemcpy2DAsync: the copy engines move rows of a few
// hundred bytes (v of a packed projection) far below memory bandwidth.
template <class U>
__global__ void copy_rows_kernel(const U* __restrict__ src, int64_t src_pitch, U* __restrict__ dst,
                                 int64_t dst_pitch, int64_t rows, int64_t units) {
  for (int64_t r = int64_t{blockIdx.x} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.x} * blockDim.y) {
    for (int64_t c = threadIdx.x; c < units; c += blockDim.x) {
      dst[r * dst_pitch + c] = src[r * src_pitch + c];
    }
  }
}

template <class U>
void launch_copy_rows(const void* src, int64_t src_pitch_bytes, void* dst, int64_t dst_pitch_bytes,
                      int64_t rows, int64_t width_bytes) {
  constexpr int kThreads = 256;
  const int64_t units = width_bytes / int64_t{sizeof(U)};
  const dim3 block = row_block(units, kThreads);
  const int grid = grid_for((rows + block.y - 1) / block.y * kThreads, kThreads);
  copy_rows_kernel<U><<<grid, block, 0, ctx().stream>>>(
      static_cast<const U*>(src), src_pitch_bytes / int64_t{sizeof(U)}, static_cast<U*>(dst),
      dst_pitch_bytes / int64_t{sizeof(U)}, rows, units);
  EL_CUDA_CHECK_LAUNCH("copy_rows_kernel");
}

// Copies `rows` rows of `width` elements between strided layouts (the v part
// of a packed q/k/v projection, or q/k when there is no rotation), in the
// widest unit (16, 8, 4, 2 or 1 bytes) that every pointer, pitch and the
// row width allow.
void copy_rows(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, int64_t rows,
               int64_t width, DType dt) {
  if (rows == 0 || width == 0) return;
  const auto es = static_cast<int64_t>(dtype_size(dt));
  const int64_t sp = src_pitch * es, dp = dst_pitch * es, wb = width * es;
  const uint64_t bits = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                        static_cast<uint64_t>(sp) | static_cast<uint64_t>(dp) |
                        static_cast<uint64_t>(wb);
  if (bits % 16 == 0) return launch_copy_rows<uint4>(src, sp, dst, dp, rows, wb);
  if (bits % 8 == 0) return launch_copy_rows<uint2>(src, sp, dst, dp, rows, wb);
  if (bits % 4 == 0) return launch_copy_rows<uint32_t>(src, sp, dst, dp, rows, wb);
  if (bits % 2 == 0) return launch_copy_rows<uint16_t>(src, sp, dst, dp, rows, wb);
  launch_copy_rows<uint8_t>(src, sp, dst, dp, rows, wb);
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
      launch_kernel(embedding_forward_kernel<TT, TO>, static_cast<unsigned>(n), kRowThreads, 0,
                    cx.stream, ids.data<int32_t>(), table.data<TT>(), out.data<TO>(), c,
                    static_cast<int32_t>(v), cx.dev_error);
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
  EL_CUDA_ENSURE(v < INT32_MAX && n <= INT32_MAX - kEmbTile && c <= INT32_MAX / 2,
                 "cuda embedding_backward: {} rows / {} ids / width {} too large", v, n, c);
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
  const int tiles = static_cast<int>((n + kEmbTile - 1) / kEmbTile);
  Tensor partial = Tensor::empty({tiles, 2, c}, DType::f32, dev);  // [tiles, 2, C]
  // 4 columns per thread (8- or 16-byte accesses) where the rows allow it.
  constexpr int kVc = 4;
  const auto aligned_for = [](const Tensor& t) {
    return reinterpret_cast<uintptr_t>(t.raw()) % (kVc * dtype_size(t.dtype())) == 0;
  };
  const bool vec = c % kVc == 0 && aligned_for(dout) && aligned_for(dtable);
  const int vc = vec ? kVc : 1;
  const int64_t lanes = (c + vc - 1) / vc;  // threads needed per row
  const int threads = static_cast<int>(std::min<int64_t>(256, (lanes + 31) / 32 * 32));
  const int64_t chunks = (lanes + threads - 1) / threads;
  EL_CUDA_ENSURE(chunks <= 65535, "cuda embedding_backward: width {} too large", c);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  const int ni = static_cast<int>(n), ci = static_cast<int>(c), vi = static_cast<int>(v);
  EL_DISPATCH_FLOAT(dout.dtype(), TG, {
    EL_DISPATCH_FLOAT(dtable.dtype(), TD, {
      if (vec) {
        embedding_tile_kernel<TG, TD, kVc><<<grid, threads, 0, cx.stream>>>(
            keys_out, vals_out, dout.data<TG>(), dtable.data<TD>(), partial.data<float>(), ni, ci,
            vi);
      } else {
        embedding_tile_kernel<TG, TD, 1><<<grid, threads, 0, cx.stream>>>(
            keys_out, vals_out, dout.data<TG>(), dtable.data<TD>(), partial.data<float>(), ni, ci,
            vi);
      }
    });
  });
  EL_CUDA_CHECK_LAUNCH("embedding_tile_kernel");
  if (tiles > 1) {
    EL_DISPATCH_FLOAT(dtable.dtype(), TD, {
      if (vec) {
        embedding_combine_kernel<TD, kVc><<<grid, threads, 0, cx.stream>>>(
            keys_out, partial.data<float>(), dtable.data<TD>(), ni, ci, vi);
      } else {
        embedding_combine_kernel<TD, 1><<<grid, threads, 0, cx.stream>>>(
            keys_out, partial.data<float>(), dtable.data<TD>(), ni, ci, vi);
      }
    });
    EL_CUDA_CHECK_LAUNCH("embedding_combine_kernel");
  }
}

void rope(const Tensor& x, const Tensor& inv_freq, int64_t pos_offset, bool inverse, Tensor& y) {
  expect_cuda_float(x, "rope (x)");
  expect_cuda_float(inv_freq, "rope (inv_freq)");
  expect_cuda_float(y, "rope (y)");
  EL_CUDA_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0,
                 "cuda rope: x must be [B, T, H, D] with even D, got {}", shape_str(x.shape()));
  EL_CUDA_ENSURE(y.numel() == x.numel(), "cuda rope: y {} for x {}", shape_str(y.shape()),
                 shape_str(x.shape()));
  const int64_t t = x.dim(1), h = x.dim(2), d = x.dim(3);
  EL_CUDA_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
                 "cuda rope: inv_freq has {} values, head dim {} needs 1 to {}", inv_freq.numel(),
                 d, d / 2);
  if (x.numel() == 0) return;
  rope_rows(x.raw(), x.dtype(), h * d, y.raw(), y.dtype(), h * d, x.dim(0) * t, t, h, d, inv_freq,
            pos_offset, inverse);
}

namespace {

struct QkvDims {
  int64_t rows, t, h, hkv, d, width;  // width = (h + 2 * hkv) * d: one position of packed
};

QkvDims qkv_dims(const Tensor& packed, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Tensor& inv_freq, const char* what) {
  for (const Tensor* x : {&packed, &q, &k, &v}) expect_cuda_dtype(*x, packed.dtype(), what);
  EL_CUDA_ENSURE(packed.ndim() == 4 && q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape(),
                 "cuda {}: packed {}, q {}, k {}, v {}", what, shape_str(packed.shape()),
                 shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  const int64_t b = q.dim(0), t = q.dim(1), h = q.dim(2), d = q.dim(3), hkv = k.dim(2);
  EL_CUDA_ENSURE(k.dim(0) == b && k.dim(1) == t && k.dim(3) == d && d % 2 == 0 &&
                     packed.shape() == Shape({b, t, h + 2 * hkv, d}),
                 "cuda {}: packed {} does not hold q {}, k {}, v {}", what,
                 shape_str(packed.shape()), shape_str(q.shape()), shape_str(k.shape()),
                 shape_str(v.shape()));
  if (inv_freq.defined()) {
    expect_cuda_float(inv_freq, what);
    EL_CUDA_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
                   "cuda {}: inv_freq has {} values, head dim {}", what, inv_freq.numel(), d);
  }
  return {b * t, t, h, hkv, d, (h + 2 * hkv) * d};
}

// q or k between its packed columns and its own tensor: rotated, or copied
// when there is no rotation (inv_freq undefined).
void qk_part(const void* src, int64_t src_pos, void* dst, int64_t dst_pos, DType dt,
             const QkvDims& g, int64_t heads, const Tensor& inv_freq, int64_t pos_offset,
             bool inverse, const int32_t* positions = nullptr) {
  if (inv_freq.defined()) {
    rope_rows(src, dt, src_pos, dst, dt, dst_pos, g.rows, g.t, heads, g.d, inv_freq, pos_offset,
              inverse, positions);
  } else {
    copy_rows(src, src_pos, dst, dst_pos, g.rows, heads * g.d, dt);
  }
}

}  // namespace

void split_qkv_rope(const Tensor& packed, const Tensor& inv_freq, int64_t pos_offset, Tensor& q,
                    Tensor& k, Tensor& v) {
  const QkvDims g = qkv_dims(packed, q, k, v, inv_freq, "split_qkv_rope");
  if (g.rows == 0) return;
  const DType dt = packed.dtype();
  const size_t es = dtype_size(dt);
  const char* p = static_cast<const char*>(packed.raw());
  qk_part(p, g.width, q.raw(), g.h * g.d, dt, g, g.h, inv_freq, pos_offset, false);
  qk_part(p + g.h * g.d * es, g.width, k.raw(), g.hkv * g.d, dt, g, g.hkv, inv_freq, pos_offset,
          false);
  copy_rows(p + (g.h + g.hkv) * g.d * es, g.width, v.raw(), g.hkv * g.d, g.rows, g.hkv * g.d, dt);
}

void merge_qkv_rope_grad(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                         const Tensor& inv_freq, int64_t pos_offset, Tensor& dpacked) {
  const QkvDims g = qkv_dims(dpacked, dq, dk, dv, inv_freq, "merge_qkv_rope_grad");
  if (g.rows == 0) return;
  const DType dt = dpacked.dtype();
  const size_t es = dtype_size(dt);
  char* p = static_cast<char*>(dpacked.raw());
  qk_part(dq.raw(), g.h * g.d, p, g.width, dt, g, g.h, inv_freq, pos_offset, true);
  qk_part(dk.raw(), g.hkv * g.d, p + g.h * g.d * es, g.width, dt, g, g.hkv, inv_freq, pos_offset,
          true);
  copy_rows(dv.raw(), g.hkv * g.d, p + (g.h + g.hkv) * g.d * es, g.width, g.rows, g.hkv * g.d, dt);
}

// ---- per-row offsets (inference with a KV cache): the kernels above with
// positions[b] read on the device instead of a host pos_offset.

void rope_at(const Tensor& x, const Tensor& inv_freq, const Tensor& positions, Tensor& y) {
  expect_cuda_float(x, "rope_at (x)");
  expect_cuda_float(y, "rope_at (y)");
  EL_CUDA_ENSURE(x.ndim() == 4 && x.dim(3) % 2 == 0,
                 "cuda rope_at: x must be [B, T, H, D] with even D, got {}", shape_str(x.shape()));
  EL_CUDA_ENSURE(y.numel() == x.numel(), "cuda rope_at: y {} for x {}", shape_str(y.shape()),
                 shape_str(x.shape()));
  expect_positions(positions, x.dim(0), "rope_at");
  const int64_t t = x.dim(1), h = x.dim(2), d = x.dim(3);
  if (x.numel() == 0) return;
  if (!inv_freq.defined()) {  // no rotation: y = x
    if (x.raw() != y.raw() || x.dtype() != y.dtype()) copy(x, y);
    return;
  }
  expect_cuda_float(inv_freq, "rope_at (inv_freq)");
  EL_CUDA_ENSURE(inv_freq.numel() >= 1 && inv_freq.numel() <= d / 2,
                 "cuda rope_at: inv_freq has {} values, head dim {} needs 1 to {}",
                 inv_freq.numel(), d, d / 2);
  rope_rows(x.raw(), x.dtype(), h * d, y.raw(), y.dtype(), h * d, x.dim(0) * t, t, h, d, inv_freq,
            0, false, positions.data<int32_t>());
}

void split_qkv_rope_at(const Tensor& packed, const Tensor& inv_freq, const Tensor& positions,
                       Tensor& q, Tensor& k, Tensor& v) {
  const QkvDims g = qkv_dims(packed, q, k, v, inv_freq, "split_qkv_rope_at");
  expect_positions(positions, q.dim(0), "split_qkv_rope_at");
  if (g.rows == 0) return;
  const DType dt = packed.dtype();
  const size_t es = dtype_size(dt);
  const char* p = static_cast<const char*>(packed.raw());
  const int32_t* pos = positions.data<int32_t>();
  qk_part(p, g.width, q.raw(), g.h * g.d, dt, g, g.h, inv_freq, 0, false, pos);
  qk_part(p + g.h * g.d * es, g.width, k.raw(), g.hkv * g.d, dt, g, g.hkv, inv_freq, 0, false,
          pos);
  copy_rows(p + (g.h + g.hkv) * g.d * es, g.width, v.raw(), g.hkv * g.d, g.rows, g.hkv * g.d, dt);
}

}  // namespace el::cuda
