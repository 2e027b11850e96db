// Host buffers for resident weights, backed by transparent huge pages where the kernel allows it
// (THP "madvise" mode: only ranges that ask get them). Streaming a matrix through 4 KiB pages
// costs a TLB miss per page, and under a hypervisor's nested paging each miss is a long walk:
// a bf16 one-row product over a 7 MiB matrix ran at 10.9 GB/s on 4 KiB pages and 13.0 GB/s on
// huge pages, and at 64 rows 1.15 vs 0.86 ms (oneDNN AMX, one thread, this VM).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace moe::kernels {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using HugePageBuffer = std::unique_ptr<void, FreeDeleter>;

// `bytes` of memory, aligned to 2 MiB and advised to be backed by huge pages when it spans at
// least one (a hint: without THP it is ordinary memory), else 64-byte aligned; null when the
// allocation fails.
HugePageBuffer allocateHugePageBacked(size_t bytes);

}  // namespace moe::kernels
