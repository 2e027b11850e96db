// See huge_pages.h.
#include "kernels/huge_pages.h"

#include <sys/mman.h>

namespace moe::kernels {

HugePageBuffer allocateHugePageBacked(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  // Below one huge page there is nothing to back with one: a cache-line alignment, so thousands of
  // small experts (fine-grained models) do not each reserve a 2 MiB-aligned mapping.
  const size_t alignment = bytes >= kHugePage ? kHugePage : 64;
  void* p = nullptr;
  if (posix_memalign(&p, alignment, bytes == 0 ? 1 : bytes) != 0) return nullptr;
  // Only whole huge pages can be huge; the tail stays on small pages. madvise failing (no THP
  // here) leaves ordinary memory, which is still correct.
  if (const size_t whole = bytes / kHugePage * kHugePage; whole > 0) {
    (void)madvise(p, whole, MADV_HUGEPAGE);
  }
  return HugePageBuffer(p);
}

}  // namespace moe::kernels
