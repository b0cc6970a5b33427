#include "core/error.h"

namespace el {

std::string Error::message() const {
  std::string s;
  if (!where.empty()) s += where + ": ";
  s += what;
  if (!hint.empty()) s += " (hint: " + hint + ")";
  return s;
}

}  // namespace el
