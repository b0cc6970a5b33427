// Tests for the CUDA fill and copy kernels: every dtype pair converts exactly
// as the CPU backend does (host->device, device->host, device->device), and
// fill writes the CPU's bit patterns.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "cuda_test_util.h"

namespace el::test {
namespace {

constexpr DType kAll[] = {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};

// Values that exercise rounding, saturation, NaN and infinities (odd count).
Tensor tricky_values() {
  std::vector<float> v = {0.f,   -0.f,     1.f,   -1.f,     2.5f,      -2.5f,      3.7f,    -3.7f,
                          255.f, 256.f,    300.f, -300.f,   1e10f,     -1e10f,     65504.f, 7e4f,
                          1e-8f, 3.14159f, NAN,   INFINITY, -INFINITY, 12345.678f, 0.1f};
  Rng rng(7);
  for (int i = 0; i < 1000; ++i) v.push_back(rng.normal() * 100.f);
  return Tensor::from_floats(v, {static_cast<int64_t>(v.size())});
}

// Host tensor of dtype t converted on the CPU from f32 values.
Tensor host_as(const Tensor& f32, DType t) {
  Tensor out = Tensor::empty(f32.shape(), t);
  out.copy_from(f32);
  return out;
}

::testing::AssertionResult same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  if (a.nbytes() != b.nbytes()) return ::testing::AssertionFailure() << what << ": size differs";
  const auto* pa = static_cast<const unsigned char*>(a.raw());
  const auto* pb = static_cast<const unsigned char*>(b.raw());
  const size_t es = dtype_size(a.dtype());
  for (size_t i = 0; i < a.nbytes(); ++i) {
    if (pa[i] != pb[i]) {
      // NaN payloads may differ between the CPU's and CUDA's conversions.
      if (a.dtype() == DType::f32 || a.dtype() == DType::bf16 || a.dtype() == DType::f16) {
        const std::vector<float> fa = a.to_floats(), fb = b.to_floats();
        const size_t k = i / es;
        if (std::isnan(fa[k]) && std::isnan(fb[k])) {
          i = (k + 1) * es - 1;
          continue;
        }
      }
      return ::testing::AssertionFailure()
             << what << ": byte " << i << " (element " << i / es << ") differs";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(CudaCopy, EveryDtypePairMatchesTheCpu) {
  EL_REQUIRE_GPU();
  const Tensor values = tricky_values();
  for (DType s : kAll) {
    const Tensor src = host_as(values, s);
    for (DType d : kAll) {
      const std::string what = std::string(dtype_name(s)) + " -> " + dtype_name(d);
      Tensor expect = Tensor::empty(src.shape(), d);
      expect.copy_from(src);  // the CPU's conversion
      // host -> device (converting), then device -> host (same dtype)
      Tensor dev = Tensor::empty(src.shape(), d, gpu());
      dev.copy_from(src);
      Tensor back = Tensor::empty(src.shape(), d);
      back.copy_from(dev);
      EXPECT_TRUE(same_bytes(back, expect, what + " (h2d)"));
      // device -> device (converting)
      Tensor dev_s = to_gpu(src);
      Tensor dev_d = Tensor::empty(src.shape(), d, gpu());
      dev_d.copy_from(dev_s);
      back.copy_from(dev_d);
      EXPECT_TRUE(same_bytes(back, expect, what + " (d2d)"));
      // device -> host (converting)
      Tensor host_d = Tensor::empty(src.shape(), d);
      host_d.copy_from(dev_s);
      EXPECT_TRUE(same_bytes(host_d, expect, what + " (d2h)"));
    }
  }
}

TEST(CudaCopy, UnalignedViewsAndEmpty) {
  EL_REQUIRE_GPU();
  Rng rng(3);
  const Tensor host = random_host({1001}, rng, DType::f32);
  Tensor dev = to_gpu(host, DType::bf16);
  Tensor part = dev.slice0(1, 1000);  // 2-byte aligned start
  Tensor out = Tensor::empty({999}, DType::f32, gpu());
  out.copy_from(part);
  const std::vector<float> got = out.to_floats();
  const std::vector<float> full = round_to(host, DType::bf16).to_floats();
  for (int i = 0; i < 999; ++i) ASSERT_EQ(got[i], full[i + 1]) << i;
  Tensor empty = Tensor::empty({0}, DType::f32, gpu());
  Tensor empty_h = Tensor::empty({0}, DType::bf16);
  empty_h.copy_from(empty);
  empty.copy_from(empty_h);
}

TEST(CudaFill, EveryDtypeMatchesTheCpu) {
  EL_REQUIRE_GPU();
  for (float value : {0.f, -0.f, 1.f, -2.7f, 1e10f, -1e10f, 300.f, NAN}) {
    for (DType d : kAll) {
      for (int64_t n : {1, 7, 4099}) {
        Tensor dev = Tensor::full({n}, value, d, gpu());
        Tensor host = Tensor::full({n}, value, d);
        Tensor back = Tensor::empty({n}, d);
        back.copy_from(dev);
        EXPECT_TRUE(same_bytes(back, host,
                               std::string("fill ") + dtype_name(d) + " " + std::to_string(value)));
      }
    }
  }
}

// Backend::read_later / read_wait: each read gives the bytes as they were when
// it was queued, waits for nothing after it, is read once, and at most
// kReadLaterSlots are outstanding.
TEST(CudaReadLater, ReadsSeeTheirPointInTheStreamInAnyOrder) {
  EL_REQUIRE_GPU();
  Backend& be = gpu_backend();
  ASSERT_TRUE(be.supports_read_later());
  Tensor x = Tensor::full({7}, 0.f, DType::i32, gpu());
  std::vector<int64_t> tickets;
  for (int i = 0; i < Backend::kReadLaterSlots; ++i) {
    be.fill(x, static_cast<float>(10 + i));
    Result<int64_t> t = be.read_later(x);
    ASSERT_TRUE(t.ok()) << t.error().message();
    tickets.push_back(*t);
  }
  be.fill(x, 99.f);
  const Result<int64_t> over = be.read_later(x);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().what.find("reads are outstanding already"), std::string::npos);
  for (const int i : {2, 0, 3, 1}) {  // any order
    Result<std::vector<uint8_t>> got = be.read_wait(tickets[static_cast<size_t>(i)]);
    ASSERT_TRUE(got.ok()) << got.error().message();
    ASSERT_EQ(got->size(), 7 * sizeof(int32_t));
    std::vector<int32_t> v(7);
    std::memcpy(v.data(), got->data(), got->size());
    EXPECT_EQ(v, std::vector<int32_t>(7, 10 + i)) << "read " << i;
  }
  const Result<std::vector<uint8_t>> again = be.read_wait(tickets[0]);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().what.find("not an unread read_later ticket"), std::string::npos);
  const Result<int64_t> big =
      be.read_later(Tensor::zeros({Backend::kReadLaterBytes + 1}, DType::u8, gpu()));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().what.find("more than a read of at most 4096"), std::string::npos);
  const Result<int64_t> host = be.read_later(Tensor::zeros({4}, DType::i32));
  ASSERT_FALSE(host.ok());
  EXPECT_NE(host.error().what.find("not a contiguous tensor on the GPU"), std::string::npos);
  Backend& cpu = backend_for(Device::cpu());
  EXPECT_FALSE(cpu.supports_read_later());
  EXPECT_FALSE(cpu.read_later(Tensor::zeros({4}, DType::i32)).ok());
  EXPECT_FALSE(cpu.read_wait(0).ok());
}

}  // namespace
}  // namespace el::test
