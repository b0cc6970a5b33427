// hf_golden_util.h — what the model-family golden tests (tests/models/
// *_golden_test.cpp) share: where a family's fixtures live, the reference
// outputs transformers wrote beside each checkpoint, and loading a fixture
// through the normal loader. Header-only, for test programs that link el_io
// and the models.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "models/hf_model.h"

namespace el::hftest {

// tests/fixtures/<family>/<name> (tools/make_<family>_fixtures.py); an empty
// family gives tests/fixtures/<name>.
inline std::string family_fixture_dir(const std::string& family, const std::string& name) {
  const std::filesystem::path root(EL_TEST_DATA_DIR);
  return ((family.empty() ? root : root / family) / name).string();
}

// <dir>/reference.safetensors: the fixture script's transformers outputs.
inline io::SafetensorsFile open_reference(const std::string& dir) {
  return io::SafetensorsFile::open((std::filesystem::path(dir) / "reference.safetensors").string())
      .value();
}

// The checkpoint in `dir` on the CPU in `dtype`, its config.json read as
// `model_type`; nullptr (after a test failure naming the error) if it does
// not load.
inline std::unique_ptr<DecoderLM> load_golden(const std::string& dir, DType dtype,
                                              const std::string& model_type) {
  auto hf = load_hf_model(dir, Device::cpu(), dtype);
  EXPECT_TRUE(hf.ok()) << dir << ": " << (hf.ok() ? "" : hf.error().message());
  if (!hf.ok()) return nullptr;
  EXPECT_EQ(hf->config.model_type, model_type) << dir;
  return std::move(hf->model);
}

}  // namespace el::hftest
