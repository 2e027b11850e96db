// See dram_bandwidth.h.
#include "bench/dram_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace moe::bench {
namespace {

// Sums words [begin, end) with eight independent accumulators so the loop is bound by loads, not
// by one dependency chain; the result is kept so the reads cannot be optimized away.
uint64_t sumWords(const uint64_t* begin, const uint64_t* end) {
  uint64_t acc[8] = {};
  for (const uint64_t* p = begin; p + 8 <= end; p += 8) {
    for (int i = 0; i < 8; ++i) acc[i] += p[i];
  }
  uint64_t total = 0;
  for (uint64_t a : acc) total += a;
  return total;
}

}  // namespace

double measureDramReadGBps(unsigned threads, size_t bytes, int passes) {
  threads = std::max(1u, threads);
  constexpr size_t kBlock = 64 * 1024;
  const size_t words = std::max(kBlock, bytes / kBlock * kBlock) / sizeof(uint64_t);
  auto buffer = std::make_unique<uint64_t[]>(words);
  std::fill_n(buffer.get(), words, uint64_t{1});  // touch every page before timing
  const size_t perThread = words / threads / 8 * 8;
  double best = 0;
  std::vector<uint64_t> sums(threads);
  for (int pass = 0; pass < passes; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const uint64_t* begin = buffer.get() + t * perThread;
        sums[t] = sumWords(begin, begin + perThread);
      });
    }
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(perThread * threads * sizeof(uint64_t)) / s / 1e9);
  }
  volatile uint64_t sink = 0;
  for (uint64_t v : sums) sink = sink + v;
  return best;
}

}  // namespace moe::bench
