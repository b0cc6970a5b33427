// rng.h — seeded, serialisable random numbers (xoshiro256**).
//
// Every random draw in the engine (weight init, data sampling, dropout) goes
// through an Rng owned by its user, so a run is reproducible bit for bit on
// the same machine, and the state goes into checkpoints for exact resume.
#pragma once

#include <array>
#include <cstdint>

namespace el {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);

  uint64_t next_u64();
  // Uniform in [0, 1) with 24 random bits.
  float uniform();
  // Uniform integer in [0, n), n > 0 (Lemire's method, unbiased).
  uint64_t below(uint64_t n);
  // Standard normal (Box-Muller, both values used).
  float normal();

  using State = std::array<uint64_t, 5>;  // 4 words + cached-normal flag/value
  State state() const;
  void set_state(const State& s);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  float spare_ = 0.f;
};

}  // namespace el
