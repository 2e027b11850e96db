// linearRowInvariant: see row_invariant_linear.h.
//
// Every output y[t, n] is summed in one fixed order: 8 lanes, lane j taking the products at
// k ≡ j (mod 8) in ascending k over the first ⌊K/8⌋·8 elements, then the lanes reduced in a
// fixed tree, then the scalar tail added in ascending k. Tiling over rows, experts and K blocks
// (multiples of 8) only changes which outputs are computed together, never that order, so a row's
// result does not depend on the other rows of the call. The file is compiled with
// -ffp-contract=off, so the AVX2 clone and the baseline give the same bits.
#include "kernels/row_invariant_linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace moe::kernels {
namespace {

typedef float v8 __attribute__((vector_size(32)));  // 8 lanes; 2 SSE or 1 AVX register

constexpr size_t kLanes = 8;
constexpr size_t kRowBlock = 32;  // rows whose partial sums stay in the accumulator buffer
constexpr size_t kKBlock = 256;   // K elements of the weights reused across a row block
constexpr size_t kTileRows = 4, kTileCols = 2;

inline __attribute__((always_inline)) v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline __attribute__((always_inline)) void store8(float* p, v8 v) {
  std::memcpy(p, &v, sizeof(v));
}

inline __attribute__((always_inline)) float reduceLanes(v8 a) {
  float s[kLanes];
  std::memcpy(s, &a, sizeof(s));
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

// The lanes of output (r, n) live at acc[(r * N + n) * 8], as plain floats (no alignment needed).
// acc(r, n) += Σ_{k in [k0, k1)} x[r, k] · w[n, k] lane-wise, for RT rows × NT columns.
template <size_t RT, size_t NT>
inline __attribute__((always_inline)) void tile(const float* x, const float* w, size_t K, size_t k0,
                                                size_t k1, float* acc, size_t N) {
  v8 a[RT][NT];
  for (size_t r = 0; r < RT; ++r)
    for (size_t n = 0; n < NT; ++n) a[r][n] = load8(acc + (r * N + n) * kLanes);
  for (size_t k = k0; k < k1; k += kLanes) {
    v8 wv[NT];
    for (size_t n = 0; n < NT; ++n) wv[n] = load8(w + n * K + k);
    for (size_t r = 0; r < RT; ++r) {
      const v8 xv = load8(x + r * K + k);
      for (size_t n = 0; n < NT; ++n) a[r][n] += xv * wv[n];
    }
  }
  for (size_t r = 0; r < RT; ++r)
    for (size_t n = 0; n < NT; ++n) store8(acc + (r * N + n) * kLanes, a[r][n]);
}

template <size_t RT>
inline __attribute__((always_inline)) void tileRow(const float* x, const float* w, size_t K,
                                                   size_t k0, size_t k1, float* acc, size_t N) {
  size_t n = 0;
  for (; n + kTileCols <= N; n += kTileCols)
    tile<RT, kTileCols>(x, w + n * K, K, k0, k1, acc + n * kLanes, N);
  for (; n < N; ++n) tile<RT, 1>(x, w + n * K, K, k0, k1, acc + n * kLanes, N);
}

// One block of rows: K blocks outermost so the weights' block is reused by every row of it.
inline __attribute__((always_inline)) void rowBlock(const float* w, size_t N, size_t K,
                                                    const float* x, size_t rows, float* y,
                                                    std::vector<float>& acc) {
  const size_t K8 = K - K % kLanes;
  acc.assign(rows * N * kLanes, 0.0f);
  for (size_t k0 = 0; k0 < K8; k0 += kKBlock) {
    const size_t k1 = std::min(K8, k0 + kKBlock);
    size_t r = 0;
    for (; r + kTileRows <= rows; r += kTileRows)
      tileRow<kTileRows>(x + r * K, w, K, k0, k1, acc.data() + r * N * kLanes, N);
    for (; r < rows; ++r) tileRow<1>(x + r * K, w, K, k0, k1, acc.data() + r * N * kLanes, N);
  }
  for (size_t r = 0; r < rows; ++r) {
    for (size_t n = 0; n < N; ++n) {
      float tail = 0.0f;
      for (size_t k = K8; k < K; ++k) tail += x[r * K + k] * w[n * K + k];
      y[r * N + n] = reduceLanes(load8(acc.data() + (r * N + n) * kLanes)) + tail;
    }
  }
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void linearRowInvariant(std::span<const float> w, size_t N, size_t K, std::span<const float> x,
                        size_t T, std::span<float> y) {
  std::vector<float> acc;
  for (size_t t0 = 0; t0 < T; t0 += kRowBlock) {
    const size_t rows = std::min(kRowBlock, T - t0);
    rowBlock(w.data(), N, K, x.data() + t0 * K, rows, y.data() + t0 * N, acc);
  }
}

}  // namespace moe::kernels
