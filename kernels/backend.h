// The one compute interface. Every backend (plain CPU reference, BLAS CPU, CUDA) implements the
// same operations with the same semantics; tests/backend_ops_test compares each against the
// reference. Weights are typed Matrix handles (f32, bf16 or f16) resident where the backend
// computes (GPU memory for CUDA); the backend converts to its resident dtype once, at upload, and
// says with supports(op, dtype) which weight dtypes each operation takes. Activations cross this
// interface as row-major host rows: fp32 spans, and for expertFfn (the serving path) typed
// Activations, fp32 or bf16 as a bf16 wire carries them. The backend alone converts them: one
// computing in bf16 rounds fp32 rows itself and takes bf16 rows as they are, one computing in fp32
// widens bf16 rows exactly. Every operation accumulates in fp32 (or wider).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/activations.h"
#include "common/dtype.h"
#include "common/result.h"

namespace moe::kernels {

// A weight matrix [rows, cols], resident where the backend computes. Created by Backend::upload;
// only usable with the backend that created it.
class Matrix {
 public:
  Matrix(size_t rows, size_t cols, DType dtype = DType::kF32)
      : rows_(rows), cols_(cols), dtype_(dtype) {}
  virtual ~Matrix() = default;
  size_t rows() const { return rows_; }
  size_t cols() const { return cols_; }
  DType dtype() const { return dtype_; }  // the resident (and compute) dtype of the elements
  // Bytes this handle holds on its device, measured from its allocations (0 when it owns none).
  virtual size_t residentBytes() const { return 0; }

 private:
  size_t rows_, cols_;
  DType dtype_;
};

// The operations of a Backend, for supports().
enum class Op { kLinear, kSwiglu, kSoftmaxTopk, kExpertFfn };

// The activation of an expert FFN, on h1 = w1·x (+ b1) and h3 = w3·x (+ b3):
//   kSwiglu:        silu(h1) ⊙ h3                                        (every family but these)
//   kClampedSwiglu: gpt-oss (GptOssExperts._apply_gate): g = min(h1, limit),
//                   u = clamp(h3, -limit, limit), (u + 1) ⊙ g ⊙ σ(alpha·g)
//   kRelu2:         NemotronH (non-gated): relu(h3)²; there is no gate, w1 and b1 are null
struct FfnActivation {
  enum class Kind { kSwiglu, kClampedSwiglu, kRelu2 };
  Kind kind = Kind::kSwiglu;
  float alpha = 1.702f;  // kClampedSwiglu only
  float limit = 7.0f;    // kClampedSwiglu only
  // Whether the FFN has a gate projection (w1): false for kRelu2, up/down only.
  bool gated() const { return kind != Kind::kRelu2; }
};

// One expert's FFN: FFN(x) = w2 · act(w1·x + b1, w3·x + b3) + b2, with act as above (a non-gated
// activation has no w1/b1: FFN(x) = w2 · act(w3·x + b3) + b2). The
// biases are optional (null: none) f32 column vectors [I, 1], [I, 1], [H, 1] whatever the weights'
// dtype (a column, so linear(b, ones[T, 1]) broadcasts it over T rows exactly: the in-process
// layer adds biases that way). Defaults (no bias, kSwiglu) are the plain SwiGLU FFN
// w2 · (silu(w1·x) ⊙ (w3·x)).
struct ExpertFfnWeights {
  const Matrix* w1;            // [I, H]  gate_proj; null iff !activation.gated()
  const Matrix* w3;            // [I, H]  up_proj
  const Matrix* w2;            // [H, I]  down_proj
  const Matrix* b1 = nullptr;  // [I, 1]  gate bias
  const Matrix* b3 = nullptr;  // [I, 1]  up bias
  const Matrix* b2 = nullptr;  // [H, 1]  down bias
  FfnActivation activation{};
};

// Work for a grouped expert computation, CSR-style over S segments (one per expert):
// segment s applies experts[s] to rows rows[offsets[s] .. offsets[s+1]) of x, each scaled by the
// matching weights[] entry. Rows within one segment are distinct; a row may appear in several
// segments (a token whose top-k experts share a shard). Segments may be empty.
struct ExpertSegments {
  std::span<const ExpertFfnWeights> experts;  // [S]
  std::span<const uint32_t> offsets;          // [S + 1], offsets[0] == 0, non-decreasing
  std::span<const uint32_t> rows;             // [offsets[S]], each < R
  std::span<const float> weights;             // [offsets[S]]
  // Where each weight applies. false: to the expert's output, w · FFN(x) (every family but
  // Llama 4). true: to its input, FFN(w · x), the output unweighted (Llama4TextMoe); the same
  // for a weight of 1 (an ungated shared expert), different wherever the FFN is not linear in w.
  bool weightOnInput = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;  // "reference", "blas", "cuda:0"

  // Whether `op` runs with weights resident in `dtype` (kSwiglu/kSoftmaxTopk: their fp32
  // activations; true for f32 on every backend). A false answer means upload() in that dtype
  // fails, or the op refuses such a Matrix, with an error naming backend and dtype.
  virtual bool supports(Op op, DType dtype) const = 0;

  // Which kernel computes matrix products with `dtype` weights on this machine, chosen at run
  // time (e.g. "onednn:avx512_core_amx"); for logs and the benchmark.
  virtual std::string kernelPath(DType dtype) const { return std::string(dtypeName(dtype)); }

  // Copies a host matrix [rows, cols] (data.size() == rows*cols) to where this backend computes,
  // rounded (nearest-even) to `dtype`.
  virtual Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows,
                                                 size_t cols, DType dtype) = 0;
  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows, size_t cols) {
    return upload(data, rows, cols, DType::kF32);
  }

  // y[T, w.rows] = x[T, w.cols] · wᵀ.  T may be 0.
  virtual Status linear(const Matrix& w, std::span<const float> x, size_t T,
                        std::span<float> y) = 0;

  // out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
  virtual Status swiglu(std::span<const float> gate, std::span<const float> up,
                        std::span<float> out) = 0;

  // For each row t of logits[T, E]: p = softmax(logits[t]); ids[t, :k] = the k largest p in
  // descending order, ties broken towards the lower expert id; weights[t, j] = p[ids[t, j]], or
  // that divided by the sum of the k selected p when `renormalize`.  1 <= k <= E.
  virtual Status softmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k,
                             bool renormalize, std::span<uint32_t> ids,
                             std::span<float> weights) = 0;

  // y[R, H] = for every row r: Σ over (segment s, entry j) with rows[j] == r of
  //           weights[j] · FFN_{experts[s]}(x[r])   (FFN_{experts[s]}(weights[j] · x[r]) when
  //           segments.weightOnInput).   Rows no segment names get 0. y is overwritten.
  // x is f32 or bf16 (a bf16 row r gives the same y as an f32 row holding its widened values).
  virtual Status expertFfn(const ExpertSegments& segments, Activations x, size_t R, size_t H,
                           std::span<float> y) = 0;
};

// Which backend a service wants. kAuto: CUDA device `device` if one is usable, else BLAS.
enum class BackendKind { kAuto, kReference, kBlas, kCuda };

// Creates a backend. For kCuda/kAuto `device` picks the GPU. kCuda fails with a clear error when
// the build has no CUDA or no device is usable; kAuto then falls back to BLAS and logs why.
Result<std::unique_ptr<Backend>> createBackend(BackendKind kind, int device = 0);

// Number of usable CUDA devices at run time (0 in a build without CUDA or without a GPU).
int cudaDeviceCount();

}  // namespace moe::kernels
