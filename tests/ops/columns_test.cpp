// columns_test.cpp — ops::gather_columns (fixed column layouts: slices,
// concatenations, permutations, a column copied to several places, zero
// columns) through the op registry (naive reference, finite-difference
// gradients, bf16/f16), plus make_column_map's CSR and its errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/ops_harness.h"
#include "ops/ops.h"

namespace el::test {
namespace {

OpCase columns_case(const std::string& name, Shape shape, std::vector<int64_t> cols) {
  return {name, [=](Rng& rng) {
            OpInstance inst;
            inst.inputs = {random_tensor(shape, rng)};
            inst.differentiable = {true};
            const int64_t in = shape.back();
            inst.run = [=](const std::vector<Tensor>& x) {
              return ops::gather_columns(x[0], ops::make_column_map(in, cols, x[0].device()));
            };
            inst.reference = [=](const std::vector<Tensor>& x) {
              const std::vector<double> v = to_doubles(x[0]);
              std::vector<double> y;
              for (size_t r = 0; r < v.size() / static_cast<size_t>(in); ++r)
                for (int64_t c : cols) y.push_back(c < 0 ? 0.0 : v[r * in + c]);
              return y;
            };
            return inst;
          }};
}

std::vector<OpCase> columns_cases() {
  // MLA's shared RoPE key: columns 4..5 of each row copied into 3 "heads",
  // zeros elsewhere (the backward sums the three copies).
  std::vector<int64_t> broadcast;
  for (int h = 0; h < 3; ++h) broadcast.insert(broadcast.end(), {-1, 4, -1, 5});
  return {
      columns_case("slice", {2, 3, 9}, {2, 3, 4, 5}),
      columns_case("concat_reorder", {5, 6}, {3, 4, 5, 0, 1, 2}),
      columns_case("interleave_and_zero", {1, 4, 7}, {6, 0, -1, 1, 5, -1, 2, 4, 3}),
      columns_case("broadcast", {3, 6}, broadcast),
      columns_case("one_column", {7, 1}, {0, 0, -1}),
  };
}

INSTANTIATE_TEST_SUITE_P(GatherColumns, OpCaseTest, ::testing::ValuesIn(columns_cases()),
                         op_case_name);

TEST(GatherColumns, MapHoldsBothDirections) {
  const ops::ColumnMap m = ops::make_column_map(3, {2, -1, 0, 2}, Device::cpu());
  EXPECT_EQ(m.in_cols, 3);
  EXPECT_EQ(m.out_cols, 4);
  auto ints = [](const Tensor& t) {
    std::vector<int> v;
    for (float x : t.to_floats()) v.push_back(static_cast<int>(x));
    return v;
  };
  EXPECT_EQ(ints(m.fwd_offsets), (std::vector<int>{0, 1, 1, 2, 3}));
  EXPECT_EQ(ints(m.fwd_idx), (std::vector<int>{2, 0, 2}));
  EXPECT_EQ(ints(m.bwd_offsets), (std::vector<int>{0, 1, 1, 3}));  // column 2 feeds two
  EXPECT_EQ(ints(m.bwd_idx), (std::vector<int>{2, 0, 3}));
  // All zero columns: no index at all.
  const Tensor y = ops::gather_columns(Tensor::full({2, 3}, 1.f),
                                       ops::make_column_map(3, {-1, -1}, Device::cpu()));
  EXPECT_EQ(y.to_floats(), (std::vector<float>{0, 0, 0, 0}));
}

TEST(GatherColumns, BadMapsAndInputsAreBugs) {
  EXPECT_THROW(ops::make_column_map(3, {0, 3}, Device::cpu()), Exception);
  EXPECT_THROW(ops::make_column_map(3, {}, Device::cpu()), Exception);
  const ops::ColumnMap m = ops::make_column_map(3, {0}, Device::cpu());
  try {
    ops::gather_columns(Tensor::zeros({2, 4}), m);
    FAIL() << "expected a width mismatch";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find("does not end in the map's 3 columns"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace el::test
