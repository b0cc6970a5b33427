// Tests of the safetensors reader/writer: round trips for every dtype, byte-exact
// agreement with the reference implementation's published test vectors, and
// one hand-made malformed file per validation rule with its message checked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/safetensors.h"

// EXPECT_HAS(text, part): `text` contains `part` (prints the whole text if not).
#define EXPECT_HAS(text, part)                                            \
  do {                                                                    \
    const std::string el_text_ = (text);                                  \
    EXPECT_NE(el_text_.find(part), std::string::npos)                     \
        << "expected to find \"" << (part) << "\" in \"" << el_text_ << "\""; \
  } while (0)

namespace el::io {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test under gtest's temp dir.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::path(::testing::TempDir()) /
           ("el_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static void write_bytes(const std::string& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  static std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static std::string u64le(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  }
  // A file with the given JSON header (length field = its size) and data.
  std::string make_file(const std::string& header, const std::string& data,
                        const std::string& name = "t.safetensors") {
    const std::string p = path(name);
    write_bytes(p, u64le(header.size()) + header + data);
    return p;
  }
  // The error message of opening a file with this header and data.
  std::string open_error(const std::string& header, const std::string& data = std::string(64, '\0')) {
    auto f = SafetensorsFile::open(make_file(header, data));
    EXPECT_FALSE(f.ok()) << "expected an error for header " << header;
    return f.ok() ? std::string() : f.error().message();
  }

  fs::path dir_;
};

// Tensor with distinct raw bytes (byte i = i * 7 + seed), any dtype.
Tensor patterned(const Shape& shape, DType dtype, int seed) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 7 + seed);
  return t;
}

std::string raw_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

// ---- round trips -------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripEveryDtypeAndShape) {
  const DType dtypes[] = {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};
  const Shape shapes[] = {{2, 3}, {5}, {}, {1}, {0, 4}, {2, 1, 3}};
  std::vector<std::pair<std::string, Tensor>> tensors;
  int seed = 0;
  for (DType d : dtypes) {
    for (const Shape& s : shapes) {
      tensors.emplace_back(fmt::format("{}.{}", dtype_name(d), shape_str(s)),
                           patterned(s, d, seed++));
    }
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "1200"},
                                                   {"card", "name: tiny\nn_layer: 2\n"}};
  const std::string p = path("all.safetensors");
  save_safetensors(p, tensors, meta).check();

  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EXPECT_EQ(f->names()[i], name);  // file order = save order
    auto info = f->info(name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->dtype, t.dtype()) << name;
    EXPECT_EQ(info->shape, t.shape()) << name;
    EXPECT_EQ(info->end - info->begin, t.nbytes()) << name;
    auto loaded = f->load(name);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message();
    EXPECT_EQ(loaded->dtype(), t.dtype());
    EXPECT_EQ(loaded->shape(), t.shape());
    EXPECT_EQ(loaded->name(), name);
    EXPECT_EQ(raw_bytes(loaded.value()), raw_bytes(t)) << name;
    if (t.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(f->data_ptr(info.value()), t.raw(), t.nbytes()), 0) << name;
    }
  }
  // The data buffer starts 8-byte aligned (header padded with spaces).
  const std::string bytes = read_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);
}

TEST_F(SafetensorsTest, ValuesSurviveAsNumbers) {
  Tensor a = Tensor::from_floats({1.5f, -2.25f, 3e-3f, 0.f}, {2, 2});
  Tensor scalar = Tensor::from_floats({42.0f}, {});
  const std::string p = path("v.safetensors");
  save_safetensors(p, {{"a", a}, {"s", scalar}}).check();
  auto f = SafetensorsFile::open(p).value();
  EXPECT_EQ(f.load("a").value().to_floats(), a.to_floats());
  Tensor s = f.load("s").value();
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.item(), 42.0f);
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(SafetensorsTest, EmptyFileHasNoTensors) {
  const std::string p = path("empty.safetensors");
  save_safetensors(p, {}).check();
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_TRUE(f->names().empty());
}

TEST_F(SafetensorsTest, FileIsMovable) {
  const std::string p = path("m.safetensors");
  save_safetensors(p, {{"x", Tensor::from_floats({1, 2, 3}, {3})}}).check();
  auto f = SafetensorsFile::open(p).value();
  SafetensorsFile g = std::move(f);
  EXPECT_EQ(g.load("x").value().to_floats(), (std::vector<float>{1, 2, 3}));
  SafetensorsFile h = SafetensorsFile::open(p).value();
  h = std::move(g);  // the old mapping of h is released, g's moves in
  EXPECT_EQ(h.load("x").value().to_floats(), (std::vector<float>{1, 2, 3}));
}

// ---- agreement with the reference implementation --------------------------------------

// huggingface/safetensors bindings/python/tests/test_simple.py, test_serialization:
// save({"test": np.zeros((2, 2), dtype=np.int32)}) produces exactly these bytes
// (the header is padded with spaces to a multiple of 8).
const std::string kReferenceHeader =
    R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";

TEST_F(SafetensorsTest, WriterMatchesReferenceBytes) {
  const std::string p = path("ref.safetensors");
  save_safetensors(p, {{"test", Tensor::zeros({2, 2}, DType::i32)}}).check();
  const std::string expected =
      std::string("@\0\0\0\0\0\0\0", 8) + kReferenceHeader + "    " + std::string(16, '\0');
  EXPECT_EQ(read_bytes(p), expected);
}

TEST_F(SafetensorsTest, ReadsReferenceBytes) {
  // Same layout with values 1, 2, 3, 4.
  std::string data;
  for (int32_t v : {1, 2, 3, 4}) data.append(reinterpret_cast<const char*>(&v), 4);
  const std::string p = path("ref.safetensors");
  write_bytes(p, std::string("@\0\0\0\0\0\0\0", 8) + kReferenceHeader + "    " + data);
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->names(), std::vector<std::string>{"test"});
  Tensor t = f->load("test").value();
  EXPECT_EQ(t.dtype(), DType::i32);
  EXPECT_EQ(t.shape(), (Shape{2, 2}));
  EXPECT_EQ(t.to_floats(), (std::vector<float>{1, 2, 3, 4}));
}

TEST_F(SafetensorsTest, ReadsUnpaddedHeaderWithTrailingMetadata) {
  // Test vector used by several ports: 0x59 = 89 header bytes, no padding,
  // "__metadata__" after the tensors.
  const std::string header =
      R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"foo":"bar"}})";
  ASSERT_EQ(header.size(), 0x59u);
  const std::string p = path("meta.safetensors");
  write_bytes(p, std::string("Y\0\0\0\0\0\0\0", 8) + header + std::string(16, '\0'));
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->metadata().at("foo"), "bar");
  EXPECT_EQ(f->names(), std::vector<std::string>{"test"});
}

TEST_F(SafetensorsTest, HandBuiltMixedFile) {
  // Built byte by byte per the spec: a BF16 [2] tensor (1.0, -2.0) after an F16
  // [1] tensor (0.5), with offsets out of name order and a hole-free buffer.
  const std::string header =
      R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[2,6]},"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})";
  const std::string data("\x00\x38" "\x80\x3f" "\x00\xc0", 6);  // f16 0.5 | bf16 1.0 | bf16 -2.0
  auto f = SafetensorsFile::open(make_file(header, data));
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->names(), (std::vector<std::string>{"w", "h"}));
  EXPECT_EQ(f->load("w").value().to_floats(), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(f->load("h").value().to_floats(), (std::vector<float>{0.5f}));
}

// ---- load_into ------------------------------------------------------------------------

TEST_F(SafetensorsTest, LoadIntoSameAndConvertedDtype) {
  const std::string p = path("li.safetensors");
  Tensor w = Tensor::from_floats({1.0f, 2.5f, -3.0f, 4.0f}, {2, 2});
  Tensor wb = Tensor::empty({2, 2}, DType::bf16);
  wb.copy_from(w);
  save_safetensors(p, {{"w", w}, {"wb", wb}}).check();
  auto f = SafetensorsFile::open(p).value();

  Tensor dst = Tensor::zeros({2, 2});
  f.load_into("w", dst).check();
  EXPECT_EQ(dst.to_floats(), w.to_floats());

  Tensor dst2 = Tensor::zeros({2, 2});  // bf16 in the file -> f32 parameter
  f.load_into("wb", dst2).check();
  EXPECT_EQ(dst2.to_floats(), w.to_floats());  // all values exact in bf16
}

TEST_F(SafetensorsTest, LoadIntoShapeMismatchNamesTensorAndShapes) {
  const std::string p = path("li.safetensors");
  save_safetensors(p, {{"model.norm.weight", Tensor::zeros({4})}}).check();
  auto f = SafetensorsFile::open(p).value();
  Tensor dst = Tensor::zeros({2, 3});
  Status st = f.load_into("model.norm.weight", dst);
  ASSERT_FALSE(st.ok());
  const std::string msg = st.error().message();
  EXPECT_HAS(msg, ("tensor 'model.norm.weight'"));
  EXPECT_HAS(msg, ("expected [2, 3], found [4]"));
  EXPECT_HAS(msg, (p));
}

TEST_F(SafetensorsTest, UnknownTensorSuggestsClosestName) {
  const std::string p = path("n.safetensors");
  save_safetensors(p, {{"model.norm.weight", Tensor::zeros({4})}}).check();
  auto f = SafetensorsFile::open(p).value();
  auto r = f.load("model.norm.weigth");
  ASSERT_FALSE(r.ok());
  EXPECT_HAS(r.error().message(), ("no such tensor"));
  EXPECT_HAS(r.error().message(), ("did you mean 'model.norm.weight'"));
  EXPECT_FALSE(f.info("nothing").ok());
  EXPECT_FALSE(f.contains("nothing"));
  EXPECT_TRUE(f.contains("model.norm.weight"));
}

// ---- writer errors ------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriterRejectsBadNamesAndLeavesNoFile) {
  const std::string p = path("bad.safetensors");
  Tensor t = Tensor::zeros({2});
  Status dup = save_safetensors(p, {{"a", t}, {"a", t}});
  ASSERT_FALSE(dup.ok());
  EXPECT_HAS(dup.error().message(), ("tensor 'a': name given more than once"));
  Status reserved = save_safetensors(p, {{"__metadata__", t}});
  ASSERT_FALSE(reserved.ok());
  EXPECT_HAS(reserved.error().message(), ("reserved"));
  Status empty = save_safetensors(p, {{"", t}});
  ASSERT_FALSE(empty.ok());
  EXPECT_HAS(empty.error().message(), ("empty name"));
  Status undef = save_safetensors(p, {{"u", Tensor()}});
  ASSERT_FALSE(undef.ok());
  EXPECT_HAS(undef.error().message(), ("tensor 'u': tensor is undefined"));
  EXPECT_FALSE(fs::exists(p));
  Status nodir = save_safetensors(path("no/such/dir/x.safetensors"), {{"a", t}});
  ASSERT_FALSE(nodir.ok());
  EXPECT_HAS(nodir.error().message(), ("no/such/dir/x.safetensors"));
}

TEST_F(SafetensorsTest, WriterLeavesNoTemporaryFiles) {
  const std::string p = path("clean.safetensors");
  save_safetensors(p, {{"a", Tensor::zeros({3})}}).check();
  save_safetensors(p, {{"b", Tensor::zeros({5})}}).check();  // overwrite in place
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "clean.safetensors");
  }
  EXPECT_EQ(files, 1);
  EXPECT_EQ(SafetensorsFile::open(p).value().names(), std::vector<std::string>{"b"});
}

// ---- malformed files: one per validation rule -------------------------------------------

TEST_F(SafetensorsTest, MissingFile) {
  auto f = SafetensorsFile::open(path("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.error().message(), ("nope.safetensors"));
  EXPECT_HAS(f.error().message(), ("cannot open"));
}

TEST_F(SafetensorsTest, FileTooSmall) {
  const std::string p = path("small.safetensors");
  write_bytes(p, "abc");
  auto f = SafetensorsFile::open(p);
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.error().message(), ("3 bytes, too small"));
  EXPECT_HAS(f.error().message(), (p));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  const std::string p = path("trunc.safetensors");
  write_bytes(p, u64le(1000) + "{}");
  auto f = SafetensorsFile::open(p);
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.error().message(), ("header length 1000 runs past the end of the file (10 bytes)"));
}

TEST_F(SafetensorsTest, HeaderLengthOverCap) {
  // A sparse 200 MB file: the length field fits in the file but exceeds the
  // cap, which must be refused before anything is parsed or allocated.
  const std::string p = path("huge.safetensors");
  write_bytes(p, u64le(150'000'000) + "{}");
  fs::resize_file(p, 200'000'000);
  auto f = SafetensorsFile::open(p);
  ASSERT_FALSE(f.ok());
  EXPECT_HAS(f.error().message(), ("header length 150000000 exceeds the 100000000 byte limit"));
  // Also an absurd length (would overflow 8 + N).
  write_bytes(p, u64le(~0ull) + "{}");
  EXPECT_HAS(SafetensorsFile::open(p).error().message(), ("exceeds"));
}

TEST_F(SafetensorsTest, JsonSyntaxError) {
  EXPECT_HAS(open_error(R"({"a":{"dtype":"F32",)"), ("header is not valid JSON"));
  EXPECT_HAS(open_error(""), ("header is not valid JSON"));
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  EXPECT_HAS(open_error("[1, 2]"), ("header must be a JSON object, got an array"));
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  const std::string msg = open_error(R"({"w": 3})");
  EXPECT_HAS(msg, ("tensor 'w'"));
  EXPECT_HAS(msg, ("entry must be an object, got a number"));
}

TEST_F(SafetensorsTest, MissingFields) {
  EXPECT_HAS(open_error(R"({"w":{"shape":[1],"data_offsets":[0,4]}})"),
              ("tensor 'w': missing field 'dtype'"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})"),
              ("tensor 'w': missing field 'shape'"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1]}})"),
              ("tensor 'w': missing field 'data_offsets'"));
}

TEST_F(SafetensorsTest, BadDtype) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})"),
              ("'dtype' must be a string, got a number"));
  const std::string unknown = open_error(R"({"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}})");
  EXPECT_HAS(unknown, ("tensor 'w': unknown dtype 'Q9'"));
  EXPECT_HAS(unknown, ("supported dtypes: F32, BF16, F16, I32, I64, U8"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})"),
              ("tensor 'w': unsupported dtype 'F64'"));
}

TEST_F(SafetensorsTest, BadShape) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})"),
              ("'shape' must be an array, got a number"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}})"),
              ("tensor 'w': shape[1] must be a non-negative integer, got -2"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})"),
              ("shape[0] must be a non-negative integer, got 1.5"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})"),
              ("shape[0] must be a non-negative integer, got a string"));
}

TEST_F(SafetensorsTest, OverflowingShape) {
  // 2^32 * 2^32 wraps to 0 in u64: must be caught, not accepted as 0 bytes.
  EXPECT_HAS(
      open_error(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
      ("tensor 'w': shape [4294967296,4294967296] overflows"));
  // numel fits but numel * 4 bytes does not.
  EXPECT_HAS(
      open_error(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
      ("overflows"));
  // A dimension beyond int64.
  EXPECT_HAS(open_error(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})"),
              ("overflows"));
}

TEST_F(SafetensorsTest, BadDataOffsets) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})"),
              ("'data_offsets' must be [begin, end] of two non-negative integers, got [0]"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})"),
              ("tensor 'w': 'data_offsets' must be"));
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":"0-4"}})"),
              ("'data_offsets' must be"));
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})"),
              ("tensor 'w': data_offsets begin 8 is after end 4"));
}

TEST_F(SafetensorsTest, EndPastData) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", "12345678"),
              ("tensor 'w': data_offsets end 16 is past the end of the data buffer (8 bytes)"));
}

TEST_F(SafetensorsTest, SizeDisagreesWithShape) {
  EXPECT_HAS(open_error(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})"),
              ("tensor 'w': data_offsets [0, 8] hold 8 bytes but shape [2, 3] of BF16 needs 12"));
}

TEST_F(SafetensorsTest, OverlappingRanges) {
  const std::string msg = open_error(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})");
  EXPECT_HAS(msg, ("tensor 'b': data_offsets [12, 20] overlap tensor 'a' [0, 16]"));
  // Empty tensors occupy no bytes and may sit anywhere.
  auto ok = SafetensorsFile::open(make_file(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
      std::string(16, '\0')));
  EXPECT_TRUE(ok.ok()) << ok.error().message();
}

TEST_F(SafetensorsTest, DuplicateNames) {
  EXPECT_HAS(
      open_error(
          R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})"),
      ("tensor 'w': name appears more than once"));
}

TEST_F(SafetensorsTest, BadMetadata) {
  EXPECT_HAS(open_error(R"({"__metadata__":[1]})"),
              ("key '__metadata__': must be an object of strings, got an array"));
  EXPECT_HAS(open_error(R"({"__metadata__":{"step":12}})"),
              ("key '__metadata__': value of 'step' must be a string, got a number"));
}

TEST_F(SafetensorsTest, ErrorsNameTheFile) {
  const std::string p = make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
                                  std::string(8, '\0'), "named.safetensors");
  auto f = SafetensorsFile::open(p);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().where, p + ": tensor 'w'");
}

TEST_F(SafetensorsTest, DtypeNames) {
  for (DType d : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    EXPECT_EQ(safetensors_dtype_from_name(safetensors_dtype_name(d)), d);
  }
  EXPECT_FALSE(safetensors_dtype_from_name("f32").has_value());  // the format is upper case
}

}  // namespace
}  // namespace el::io
