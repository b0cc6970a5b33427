// stream_probe_test.cpp — the weight-stream probe behind cuda_stream_bench
// (cuda::stream_probe): every mode runs to completion on a buffer whose rows
// do not split evenly over the blocks (a ring that misses a slot's bytes
// would hang here, not in the benchmark), and bad arguments are refused with
// the value named.
#include <gtest/gtest.h>

#include <string>

#include "cuda/cuda_kernels.h"
#include "cuda_test_util.h"
#include "ops/backend.h"

namespace el::test {
namespace {

TEST(CudaStreamProbe, EveryModeCompletes) {
  EL_REQUIRE_GPU();
  // 301 rows of 4 KiB: blocks get 2 or 3 rows, windows end inside the ring.
  const Tensor w = Tensor::zeros({301 * 4096}, DType::u8, gpu());
  const cuda::StreamProbe probes[] = {
      {0, 16, 1024, 8}, {0, 4, 4096, 3}, {1, 16, 1024, 8}, {1, 2, 2048, 1}, {2, 1, 16, 1}};
  for (const cuda::StreamProbe& p : probes) {
    cuda::stream_probe(w, 4096, p);
    backend_for(gpu()).synchronize();
  }
}

TEST(CudaStreamProbe, RefusesBadArguments) {
  EL_REQUIRE_GPU();
  const Tensor w = Tensor::zeros({8 * 4096}, DType::u8, gpu());
  const auto refuses = [&](int64_t row_bytes, cuda::StreamProbe p, const std::string& named) {
    try {
      cuda::stream_probe(w, row_bytes, p);
      ADD_FAILURE() << "accepted " << named;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  };
  refuses(4096, {0, 33, 1024, 8}, "rows 33");
  refuses(4096, {0, 16, 1000, 8}, "span 1000");
  refuses(4096, {0, 16, 1024, 17}, "stages 17");
  refuses(4096, {3, 16, 1024, 8}, "mode 3");
  refuses(3000, {0, 16, 1000, 8}, "3000-byte rows");
}

}  // namespace
}  // namespace el::test
