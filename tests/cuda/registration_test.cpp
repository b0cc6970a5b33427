// Tests for cuda_backend.h registration, its error messages, the caching
// allocator (counters, out of memory) and the table of known GPU peaks. The
// message and table tests need no GPU; the rest skip without one.
#include <gtest/gtest.h>

#include "core/allocator.h"
#include "cuda/cuda_allocator.h"
#include "cuda/gpu_peaks.h"
#include "cuda_test_util.h"

namespace el::test {
namespace {

TEST(CudaMessages, DriverTooOld) {
  const Error e = el::cuda::driver_too_old_error(12040, 13000);
  EXPECT_EQ(e.what, "driver too old: supports CUDA 12.4, this build needs 13.0");
  EXPECT_NE(e.hint.find("--device cpu"), std::string::npos);
  EXPECT_NE(e.hint.find("CUDA 13.0 or newer"), std::string::npos);
  EXPECT_EQ(el::cuda::cuda_version_string(12080), "12.8");
  EXPECT_EQ(el::cuda::cuda_version_string(13000), "13.0");
}

TEST(CudaMessages, NoDeviceAndIndex) {
  EXPECT_EQ(el::cuda::no_device_error("").what, "no CUDA device found");
  const Error e = el::cuda::no_device_error("cudaGetDeviceCount found none");
  EXPECT_EQ(e.what, "no CUDA device found: cudaGetDeviceCount found none");
  EXPECT_NE(e.hint.find("--device cpu"), std::string::npos);
  const Error i = el::cuda::device_index_error(3, 1);
  EXPECT_EQ(i.what, "cuda:3 requested, but 1 CUDA device was found");
  EXPECT_EQ(el::cuda::device_index_error(5, 4).hint, "use cuda:0..cuda:3");
  const Error k = el::cuda::no_kernel_image_error("NVIDIA A100-SXM4-80GB", 8, 0);
  EXPECT_NE(k.what.find("no GPU code for NVIDIA A100-SXM4-80GB (compute capability 8.0)"),
            std::string::npos);
  EXPECT_NE(k.hint.find("-DCMAKE_CUDA_ARCHITECTURES=80"), std::string::npos);
}

TEST(CudaMessages, OutOfMemoryText) {
  MemoryStats held;
  held.live_bytes = 3 << 20;
  held.reserved_bytes = 5 << 20;
  const Error e =
      el::cuda::cuda_oom_error(size_t{10} << 40, size_t{70} << 30, size_t{80} << 30, 0, held);
  EXPECT_NE(e.what.find("CUDA out of memory: requested 10.0 TiB (10995116277760 bytes) on cuda:0"),
            std::string::npos)
      << e.what;
  EXPECT_NE(e.what.find("70.0 GiB free of 80.0 GiB total"), std::string::npos) << e.what;
  EXPECT_NE(e.hint.find("3.0 MiB in tensors and 2.0 MiB cached"), std::string::npos) << e.hint;
}

TEST(CudaMessages, SizeClasses) {
  EXPECT_EQ(el::cuda::cuda_round_size(0), 512u);
  EXPECT_EQ(el::cuda::cuda_round_size(513), 1024u);
  EXPECT_EQ(el::cuda::cuda_round_size(size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(el::cuda::cuda_round_size((size_t{1} << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(el::cuda::cuda_round_size((size_t{5} << 20) + 7), size_t{6} << 20);
}

TEST(GpuPeaks, KnownNamesMatchByToken) {
  auto h100 = el::cuda::known_gpu_peak("NVIDIA H100 80GB HBM3");
  ASSERT_TRUE(h100);
  EXPECT_STREQ(h100->model, "H100 SXM");
  EXPECT_DOUBLE_EQ(h100->bf16_tflops, 989.4);
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA H100 PCIe")->model, "H100 PCIe");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA H200")->model, "H200 SXM");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA H200 NVL")->model, "H200 NVL");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA A100-SXM4-80GB")->model, "A100");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA A10")->model, "A10");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA L40S")->model, "L40S");
  EXPECT_STREQ(el::cuda::known_gpu_peak("NVIDIA L4")->model, "L4");
  EXPECT_FALSE(el::cuda::known_gpu_peak("NVIDIA Quadro Imaginary 9000"));
  EXPECT_DOUBLE_EQ(*el::cuda::datasheet_peak_gflops("NVIDIA H100 80GB HBM3", DType::bf16),
                   989400.0);
  EXPECT_DOUBLE_EQ(*el::cuda::datasheet_peak_gflops("NVIDIA H100 80GB HBM3", DType::f32), 66900.0);
  EXPECT_FALSE(el::cuda::datasheet_peak_gflops("NVIDIA H100 80GB HBM3", DType::i32));
}

TEST(CudaRegistration, RegistersOrSaysWhy) {
  const Status& s = gpu_status();
  if (!s.ok()) {
    EXPECT_FALSE(s.error().what.empty());
    EXPECT_FALSE(el::cuda::is_registered());
    EXPECT_FALSE(try_backend_for(gpu()).ok());
    GTEST_SKIP() << "no usable GPU: " << s.error().message();
  }
  EXPECT_TRUE(el::cuda::is_registered());
  EXPECT_EQ(el::cuda::registered_device(), 0);
  EXPECT_STREQ(gpu_backend().name(), "cuda");
  EXPECT_TRUE(allocator_for(gpu()).ok());
  const Result<el::cuda::DeviceInfo> info = el::cuda::device_info(0);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_GT(info.value().sm_count, 0);
  EXPECT_FALSE(info.value().pci_bus_id.empty());
  std::cout << "[ device ] " << el::cuda::describe(info.value()) << "\n";
  // Idempotent, and one GPU per process.
  EXPECT_TRUE(el::cuda::register_backend(0).ok());
  const Status other = el::cuda::register_backend(1);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().what.find("already uses cuda:0"), std::string::npos);
}

TEST(CudaAllocator, CountersAndCache) {
  EL_REQUIRE_GPU();
  Allocator& a = *allocator_for(gpu()).value();
  gpu_backend().synchronize();
  a.reset_peak();
  const MemoryStats s0 = a.stats();
  int64_t hits_before = s0.num_cache_hits;
  {
    Tensor t = Tensor::empty({1000}, DType::f32, gpu());  // 4000 B -> one 4096 B block
    const MemoryStats s1 = a.stats();
    EXPECT_EQ(s1.live_bytes - s0.live_bytes, 4096);
    EXPECT_GE(s1.peak_live_bytes, s1.live_bytes);
    EXPECT_GE(s1.reserved_bytes, s1.live_bytes);
    hits_before = s1.num_cache_hits;
  }
  const MemoryStats s2 = a.stats();
  EXPECT_EQ(s2.live_bytes, s0.live_bytes);
  EXPECT_EQ(s2.peak_live_bytes - s0.live_bytes, 4096);
  {
    Tensor t = Tensor::empty({1024}, DType::f32, gpu());  // same class: served from the cache
    EXPECT_EQ(a.stats().num_cache_hits, hits_before + 1);
  }
  a.release_cache();
  const MemoryStats s3 = a.stats();
  EXPECT_EQ(s3.reserved_bytes, s3.live_bytes);
}

TEST(CudaAllocator, OutOfMemoryNamesRequestAndFree) {
  EL_REQUIRE_GPU();
  const size_t ten_tb = size_t{10} << 40;
  Result<Tensor> r = Tensor::try_empty({static_cast<int64_t>(ten_tb)}, DType::u8, gpu());
  ASSERT_FALSE(r.ok());
  const std::string msg = r.error().message();
  EXPECT_NE(msg.find("CUDA out of memory: requested 10.0 TiB (10995116277760 bytes) on cuda:0"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(" free of "), std::string::npos) << msg;
  EXPECT_NE(msg.find(" total"), std::string::npos) << msg;
  // Not sticky: the device still allocates and runs kernels.
  Tensor t = Tensor::full({1000}, 2.f, DType::f32, gpu());
  EXPECT_FLOAT_EQ(t.to_floats()[999], 2.f);
}

}  // namespace
}  // namespace el::test
