// Time-ordered random ids (the ULID layout).
#include "queue/ids.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <random>

namespace harnessd::queue {

std::string make_id(std::string_view prefix) {
  static constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
  // random_device reads the kernel's entropy source; it is only asked once
  // per process to seed a fast generator.
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  auto ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::uint64_t hi = rng() & 0xffffu;  // 16 random bits
  std::uint64_t lo = rng();            // 64 random bits
  // 128 bits: 48 time | 16 random | 64 random, written 5 bits at a time from the top.
  std::array<std::uint64_t, 2> words{(ms << 16) | hi, lo};
  std::string out(prefix);
  out.reserve(prefix.size() + 26);
  for (int i = 0; i < 26; ++i) {
    int bit = 128 - 5 * (i + 1);  // low bit of this 5-bit group; the first group has 3 bits
    std::uint64_t v;
    if (bit < 0) {
      v = (words[1] << -bit) & 0x1f;
    } else if (bit >= 64) {
      v = (words[0] >> (bit - 64)) & 0x1f;
    } else if (bit > 59) {
      v = ((words[0] << (64 - bit)) | (words[1] >> bit)) & 0x1f;
    } else {
      v = (words[1] >> bit) & 0x1f;
    }
    out.push_back(kAlphabet[v]);
  }
  return out;
}

}  // namespace harnessd::queue
