#include "io/suggest.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace el::io {

size_t edit_distance(std::string_view a, std::string_view b) {
  // Three rows of the DP table: d[i][j] = distance(a[0..i), b[0..j)).
  std::vector<size_t> prev2(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);  // adjacent transposition
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  // A third of the word's length lets "n_layr"/"n_layer" and "rmsnrom"/"rmsnorm"
  // match while unrelated short words ("a" vs "mlp") do not.
  const size_t limit = std::max<size_t>(1, word.size() / 3);
  size_t best = limit + 1;
  std::string out;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best) {
      best = d;
      out = c;
    }
  }
  return out;
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string m = closest_match(word, candidates);
  return m.empty() ? std::string() : " (did you mean '" + m + "'?)";
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += "'" + items[i] + "'";
  }
  return out;
}

std::string json_keys_list(const nlohmann::json& obj) {
  std::string keys;
  int n = 0;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (n++ == 8) {
      keys += ", ...";
      break;
    }
    keys += (keys.empty() ? "'" : ", '") + it.key() + "'";
  }
  return keys.empty() ? "none" : keys;
}

}  // namespace el::io
