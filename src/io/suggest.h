// suggest.h — "did you mean ...?" suggestions for misspelt names.
//
// Used by every parser that rejects an unknown name (YAML keys, enum values,
// tensor names in a checkpoint, built-in model cards), so all of them suggest
// the same way.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace el::io {

// Levenshtein distance (insertions, deletions, substitutions) that also counts
// a swap of two adjacent characters as one edit ("nrom" -> "norm" is 1), the
// most common typo (optimal string alignment distance).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word`, or "" if none is close enough to be a
// plausible typo (distance <= max(1, len/3), ties go to the earlier candidate).
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" when closest_match finds one, else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

// "'a', 'b', 'c'" — for "allowed values are ..." messages.
std::string quoted_list(const std::vector<std::string>& items);

// The keys of a JSON object as "'a', 'b', ..." (the first 8, then "...";
// "none" for no keys): for "missing key 'x' (keys present: ...)" messages.
std::string json_keys_list(const nlohmann::json& obj);

}  // namespace el::io
