// Softmax + top-k routing kernel; see softmax_topk.cuh.
//
// One warp per token row.  The lanes stride over the E logits for the row max and the exp-sum
// (warp shuffles reduce them), then the k winners are found one at a time: each pass every lane
// proposes its best expert that ranks strictly after the previous winner, and a warp reduction
// keeps the best proposal.  That needs no per-row storage, handles any E and k <= E, and costs
// O(k * E / 32) per lane, which is small for routing sizes (E <= a few hundred).
#include <climits>
#include <cmath>

#include "kernels/cuda/softmax_topk.cuh"

namespace moe::kernels::cuda {
namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kRowsPerBlock = 4;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr uint32_t kNone = UINT32_MAX;  // "no candidate" (E <= UINT32_MAX is validated)

// NaN ranks as -inf so the order stays total (as in cpuSoftmaxTopk).
__device__ float rankKey(float p) {
  return isnan(p) ? -INFINITY : p;
}

// (ka, a) ranks before (kb, b): larger probability first, then the lower expert id.
__device__ bool ranksBefore(float ka, uint32_t a, float kb, uint32_t b) {
  return ka > kb || (ka == kb && a < b);
}

__global__ void softmaxTopkKernel(const float* __restrict__ logits, size_t T, uint32_t E,
                                  uint32_t k, bool renormalize, uint32_t* __restrict__ ids,
                                  float* __restrict__ weights) {
  const unsigned lane = threadIdx.x % kWarp;
  const size_t t = size_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarp;
  if (t >= T) return;  // t is the same for the whole warp, so the warp exits together
  const float* row = logits + t * E;

  float rowMax = -INFINITY;  // fmaxf skips NaN, like the CPU's std::max
  for (uint32_t e = lane; e < E; e += kWarp) rowMax = fmaxf(rowMax, row[e]);
  for (unsigned off = kWarp / 2; off > 0; off /= 2) {
    rowMax = fmaxf(rowMax, __shfl_xor_sync(kFullMask, rowMax, off));
  }
  float sum = 0.0f;
  for (uint32_t e = lane; e < E; e += kWarp) sum += expf(row[e] - rowMax);
  for (unsigned off = kWarp / 2; off > 0; off /= 2) sum += __shfl_xor_sync(kFullMask, sum, off);

  float prevKey = 0.0f, selected = 0.0f;
  uint32_t prevId = kNone;  // kNone: no winner yet, every expert is a candidate
  for (uint32_t j = 0; j < k; ++j) {
    float bestKey = 0.0f, bestP = 0.0f;
    uint32_t bestId = kNone;
    for (uint32_t e = lane; e < E; e += kWarp) {
      const float p = expf(row[e] - rowMax) / sum;
      const float key = rankKey(p);
      if (prevId != kNone && !ranksBefore(prevKey, prevId, key, e)) continue;  // already taken
      if (bestId == kNone || ranksBefore(key, e, bestKey, bestId)) {
        bestKey = key;
        bestId = e;
        bestP = p;
      }
    }
    // Butterfly reduction: picking the best under a total order is associative and commutative,
    // so every lane ends with the same winner.
    for (unsigned off = kWarp / 2; off > 0; off /= 2) {
      const float otherKey = __shfl_xor_sync(kFullMask, bestKey, off);
      const float otherP = __shfl_xor_sync(kFullMask, bestP, off);
      const uint32_t otherId = __shfl_xor_sync(kFullMask, bestId, off);
      if (otherId != kNone &&
          (bestId == kNone || ranksBefore(otherKey, otherId, bestKey, bestId))) {
        bestKey = otherKey;
        bestId = otherId;
        bestP = otherP;
      }
    }
    // j < k <= E guarantees a winner exists.
    if (lane == 0) {
      ids[t * k + j] = bestId;
      weights[t * k + j] = bestP;
    }
    selected += bestP;
    prevKey = bestKey;
    prevId = bestId;
  }
  if (renormalize && lane == 0) {
    for (uint32_t j = 0; j < k; ++j) weights[t * k + j] = weights[t * k + j] / selected;
  }
}

}  // namespace

cudaError_t launchSoftmaxTopk(const float* logits, size_t T, size_t E, size_t k, bool renormalize,
                              uint32_t* ids, float* weights, cudaStream_t stream) {
  if (T == 0) return cudaSuccess;  // a zero-sized grid is a launch error
  const size_t blocks = (T + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > size_t{INT_MAX} || E > UINT32_MAX || k > E) return cudaErrorInvalidValue;
  softmaxTopkKernel<<<static_cast<unsigned>(blocks), kRowsPerBlock * kWarp, 0, stream>>>(
      logits, T, static_cast<uint32_t>(E), static_cast<uint32_t>(k), renormalize, ids, weights);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
