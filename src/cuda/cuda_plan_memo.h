// cuda_plan_memo.h — launch plans remembered per shape. Eager decoding asks
// for a kernel's plan once per layer and step, and a plan costs occupancy
// and attribute queries; the few shapes of a model are kept in a small
// per-thread table.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace el::cuda {

// Plans of type Plan keyed by N integers (dtype, shape, format, ...): at
// most kMaxEntries are kept; past that each lookup computes the plan again.
template <class Plan, int N>
class PlanMemo {
 public:
  using Key = std::array<int64_t, N>;
  static constexpr size_t kMaxEntries = 64;

  // The plan remembered for key, else make() (remembered when keep(plan)).
  template <class Make, class Keep = bool (*)(const Plan&)>
  Plan get(const Key& key, Make&& make, Keep&& keep = [](const Plan&) { return true; }) {
    for (const Entry& e : entries_) {
      if (e.key == key) return e.plan;
    }
    Plan plan = make();
    if (entries_.size() < kMaxEntries && keep(plan)) entries_.push_back({key, plan});
    return plan;
  }

 private:
  struct Entry {
    Key key;
    Plan plan;
  };
  std::vector<Entry> entries_;
};

}  // namespace el::cuda
