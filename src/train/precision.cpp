// precision.cpp — names and dtypes of the training precisions (precision.h).
#include "train/precision.h"

#include <string>

namespace el {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::f32:
      return "f32";
    case Precision::bf16:
      return "bf16";
    case Precision::f16:
      return "f16";
  }
  return "?";
}

Result<Precision> parse_precision(std::string_view text, std::string_view where) {
  for (Precision p : {Precision::f32, Precision::bf16, Precision::f16}) {
    if (text == precision_name(p)) return p;
  }
  return make_error(fmt::format("unknown precision '{}'", text), std::string(where),
                    "use one of: f32, bf16, f16");
}

DType precision_dtype(Precision p) {
  switch (p) {
    case Precision::bf16:
      return DType::bf16;
    case Precision::f16:
      return DType::f16;
    case Precision::f32:
      break;
  }
  return DType::f32;
}

}  // namespace el
