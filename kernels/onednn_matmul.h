// oneDNN matmul primitives for the CPU backend: y[M, N] (fp32) = x[M, K] · w[N, K]ᵀ with x and w
// both f32 or both bf16 (fp32 accumulation), one primitive per (M, K, N, dtype) created on first
// use and cached. Which dtypes run natively is probed at start-up, so a CPU without AVX512_BF16
// (or without oneDNN support for it) reports bf16 as unusable instead of failing later.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/dtype.h"
#include "common/result.h"

namespace moe::kernels {

// Weights [N, K] in the blocked layout oneDNN's matmul wants (made once, at upload).
class PackedWeights {
 public:
  virtual ~PackedWeights() = default;
  virtual size_t bytes() const = 0;  // of the packed buffer
};

// One product x[M, K] · w[N, K]ᵀ with x and w in `dtype` (fp32, or bf16 bit patterns), fp32
// accumulation, M, N, K >= 1, and one of two epilogues:
//   y set:   y[M, N] (fp32) = x · wᵀ
//   out set: out[M, N] (in `dtype`) = silu(x · wᵀ) ⊙ up[M, N] — the SwiGLU gate fused into the
//            GEMM (oneDNN swish + binary-mul post-ops), so the expert FFN's activation runs
//            vectorized and multi-threaded inside the matmul and lands in W2's input dtype.
struct MatmulCall {
  DType dtype = DType::kF32;
  const void* x = nullptr;
  size_t M = 0, K = 0, N = 0;
  const void* w = nullptr;                // plain [N, K] row-major, or
  const PackedWeights* packed = nullptr;  // the same weights as pack() laid them out
  float* y = nullptr;
  const float* up = nullptr;
  void* out = nullptr;
};

class OnednnMatmul {
 public:
  // nullptr when oneDNN has no CPU engine here; when it cannot run a dtype, usable() is false.
  static std::unique_ptr<OnednnMatmul> create();
  virtual ~OnednnMatmul() = default;

  virtual bool usable(DType dtype) const = 0;
  // The instruction set oneDNN dispatches to on this CPU, e.g. "avx512_core_amx".
  virtual std::string isa() const = 0;

  // w [N, K] row-major in `dtype`, repacked into the layout oneDNN picks for a one-row product
  // (so no call repacks it again); nullptr when that layout is the plain one or packing failed.
  virtual std::unique_ptr<PackedWeights> pack(DType dtype, const void* w, size_t N, size_t K) = 0;

  // The row count to run an M-row product with: M, or (bf16 on AMX) M rounded up to a multiple
  // of 16 — oneDNN 2.6's AMX brgemm runs some row counts several times slower than the next
  // multiple of 16 (this VM, one thread, [M, 1024]·[3584, 1024]ᵀ: M = 59 2.97 ms, M = 64 0.50 ms,
  // M = 53 2.71 ms; no multiple of 16 up to 160 was slow). run() pads such an M itself by copying;
  // a caller that owns its buffers sizes them for rowsFor(M) rows and calls with that M instead.
  virtual size_t rowsFor(DType dtype, size_t M) const = 0;

  // Runs one product (MatmulCall). Thread-safe. A row count whose primitive wants another weight
  // layout than pack() made unpacks them into scratch first (correct, one extra weight pass).
  virtual Status run(const MatmulCall& call) = 0;
};

// Threads oneDNN's matmuls use (its OpenMP runtime), from the service's `threads` setting like
// setBlasThreads; n <= 0: the runtime's default (all cores).
void setOnednnThreads(int n);

}  // namespace moe::kernels
