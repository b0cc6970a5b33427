// ops_columns.cpp — ops::make_column_map and ops::gather_columns (ops.h):
// fixed column layouts as one Backend::sum_columns pass, forward and backward.
#include "ops/ops.h"
#include "ops/ops_common.h"

namespace el::ops {

using detail::check_float;
using detail::desc;

ColumnMap make_column_map(int64_t in_cols, const std::vector<int64_t>& cols, Device device) {
  const int64_t m = static_cast<int64_t>(cols.size());
  EL_ENSURE(in_cols > 0 && m > 0 && in_cols < INT32_MAX && m < INT32_MAX,
            "ops::make_column_map: widths {} -> {}", in_cols, m);
  std::vector<int32_t> fo(static_cast<size_t>(m + 1), 0), fi;
  std::vector<int32_t> count(static_cast<size_t>(in_cols + 1), 0);
  for (int64_t j = 0; j < m; ++j) {
    const int64_t c = cols[static_cast<size_t>(j)];
    EL_ENSURE(c < in_cols, "ops::make_column_map: column {} maps to {}, outside [0, {})", j, c,
              in_cols);
    if (c >= 0) {
      fi.push_back(static_cast<int32_t>(c));
      ++count[static_cast<size_t>(c + 1)];
    }
    fo[static_cast<size_t>(j + 1)] = static_cast<int32_t>(fi.size());
  }
  // The transpose: for input column c, the output columns it feeds, ascending.
  std::vector<int32_t> bo(count);
  for (int64_t c = 0; c < in_cols; ++c) bo[static_cast<size_t>(c + 1)] += bo[static_cast<size_t>(c)];
  std::vector<int32_t> bi(fi.size()), next(bo.begin(), bo.end() - 1);
  for (int64_t j = 0; j < m; ++j) {
    const int64_t c = cols[static_cast<size_t>(j)];
    if (c >= 0) bi[static_cast<size_t>(next[static_cast<size_t>(c)]++)] = static_cast<int32_t>(j);
  }
  // An empty index list still needs a tensor (one unread entry).
  if (fi.empty()) fi.push_back(0), bi.push_back(0);
  auto upload = [&](const std::vector<int32_t>& v) {
    return Tensor::from_ints(v, {static_cast<int64_t>(v.size())}).to(device);
  };
  ColumnMap map;
  map.in_cols = in_cols;
  map.out_cols = m;
  map.fwd_offsets = upload(fo);
  map.fwd_idx = upload(fi);
  map.bwd_offsets = upload(bo);
  map.bwd_idx = upload(bi);
  return map;
}

Tensor gather_columns(const Tensor& x, const ColumnMap& map) {
  check_float("gather_columns", "x", x);
  EL_ENSURE(map.fwd_offsets.defined() && x.ndim() >= 1 && x.dim(-1) == map.in_cols,
            "ops::gather_columns: x {} does not end in the map's {} columns", desc(x),
            map.in_cols);
  EL_ENSURE(x.device() == map.fwd_offsets.device(),
            "ops::gather_columns: x is on {}, the map on {}", x.device().str(),
            map.fwd_offsets.device().str());
  Shape shape = x.shape();
  shape.back() = map.out_cols;
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend_for(x.device()).sum_columns(x, map.fwd_offsets, map.fwd_idx, out);
  if (any_requires_grad({&x})) {
    mark_output(out);
    // The map's tensors are handles: the closure keeps them alive.
    tape().record("gather_columns", [x, out, bo = map.bwd_offsets, bi = map.bwd_idx]() {
      Tensor dy = take_grad(out);
      if (!dy.defined()) return;
      Tensor dx = Tensor::empty(x.shape(), dy.dtype(), dy.device());
      backend_for(dy.device()).sum_columns(dy, bo, bi, dx);
      accumulate_grad(x, dx);
    });
  }
  return out;
}

}  // namespace el::ops
