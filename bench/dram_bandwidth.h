// The machine's DRAM read bandwidth, measured: `threads` threads stream-sum disjoint parts of one
// buffer much larger than the last-level cache (so it is DRAM, not cache, that answers). The
// batch-1 memory bound of moe-bench divides the bytes a token reads by it.
#pragma once

#include <cstddef>

namespace moe::bench {

// GB/s (1e9 bytes/s), the best of `passes` passes over `bytes` (rounded down to 64 KiB blocks).
double measureDramReadGBps(unsigned threads, size_t bytes, int passes = 3);

}  // namespace moe::bench
