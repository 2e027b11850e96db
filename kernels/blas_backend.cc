// BLAS backend implementation; see blas_backend.h.
#include "kernels/blas_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu_rows.h"
#include "kernels/cpu_softmax_topk.h"
#include "kernels/host_matrix.h"
#include "kernels/onednn_matmul.h"
#include "kernels/op_checks.h"

namespace moe::kernels {
namespace {

constexpr const char* kName = "blas";

// y[T, N] = x[T, K] · w[N, K]ᵀ.  Dimensions already checked to fit in int.
void gemmTransB(const float* x, size_t T, size_t K, const float* w, size_t N, float* y) {
  if (T == 0 || N == 0) return;
  if (K == 0) {  // BLAS wants ld >= 1 and would only scale C by beta = 0 anyway.
    std::fill(y, y + T * N, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(N),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w, static_cast<int>(K), 0.0f, y,
              static_cast<int>(N));
}

// out[i] = silu(gate[i]) * up[i]; out may alias gate.
void swigluLoop(const float* gate, const float* up, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

// gpt-oss's clamped SwiGLU (backend.h): out[i] = (clamp(up, ±limit) + 1) · g · σ(alpha·g) with
// g = min(gate, limit); out may alias gate.
void clampedSwigluLoop(const float* gate, const float* up, float* out, size_t n, float alpha,
                       float limit) {
  for (size_t i = 0; i < n; ++i) {
    const float g = std::min(gate[i], limit);
    const float u = std::clamp(up[i], -limit, limit);
    out[i] = (u + 1.0f) * (g / (1.0f + std::exp(-alpha * g)));
  }
}

// NemotronH's non-gated relu² (backend.h): out[i] = max(up[i], 0)²; out may alias up.
void relu2Loop(const float* up, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float r = std::max(up[i], 0.0f);
    out[i] = r * r;
  }
}

// h[n, cols] += bias[cols] on every row.
void addBias(float* h, size_t n, size_t cols, const float* bias) {
  for (size_t j = 0; j < n; ++j) {
    float* row = h + j * cols;
    for (size_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

// Grows `v` to at least n elements; never shrinks, so steady-state calls do not allocate.
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Below this many rows oneDNN's f32 matmul beats OpenBLAS sgemm (DESIGN.md §8, one thread:
// 53 vs 2.9 GFLOP/s at M = 1, 115 vs 20 at M = 8, 99 vs 69 at M = 64, 97 vs 93 at M = 256); at
// M = 1024 OpenBLAS is faster (102 vs 94).
constexpr size_t kOnednnF32MaxRows = 512;

class BlasBackend final : public Backend {
 public:
  BlasBackend() : dnnl_(OnednnMatmul::create()) {}

  std::string_view name() const override { return kName; }

  using Backend::upload;

  // Every weight dtype runs: f32 on OpenBLAS/oneDNN, bf16 on oneDNN where the CPU has native
  // bf16, and otherwise (and for f16) by widening the weights to fp32 per call (kernelPath says
  // which).
  bool supports(Op, DType dtype) const override { return isComputeDType(dtype); }

  std::string kernelPath(DType dtype) const override {
    const std::string isa = dnnl_ ? dnnl_->isa() : "none";
    if (dtype == DType::kF32) {
      return dnnl_ && dnnl_->usable(DType::kF32)
                 ? "onednn-f32:" + isa + " (rows < 512), openblas-sgemm"
                 : "openblas-sgemm";
    }
    if (dtype == DType::kBF16 && dnnl_ && dnnl_->usable(DType::kBF16)) return "onednn-bf16:" + isa;
    return std::string("widen-") + std::string(dtypeName(dtype)) + "+openblas-sgemm";
  }

  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows, size_t cols,
                                         DType dtype) override {
    if (Status s = checkUpload(data, rows, cols); !s.isOk()) return makeError(s);
    if (Status s = checkUploadDType(kName, dtype); !s.isOk()) return makeError(s);
    auto m = std::make_unique<HostMatrix>(data, rows, cols, dtype);
    // bf16 on oneDNN: packed once into its blocked layout, so no call repacks the weights.
    if (dtype == DType::kBF16 && dnnl_ && dnnl_->usable(DType::kBF16) && rows > 0 && cols > 0 &&
        checkFitsInt("upload rows", rows).isOk() && checkFitsInt("upload cols", cols).isOk()) {
      if (auto p = dnnl_->pack(dtype, m->half().data(), rows, cols)) m->setPacked(std::move(p));
    }
    return std::unique_ptr<Matrix>(std::move(m));
  }

  Status linear(const Matrix& w, std::span<const float> x, size_t T, std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkLinear(w, x.size(), T, y.size()));
    auto hw = asBackendMatrix<HostMatrix>(&w, kName, "w");
    if (!hw.isOk()) return hw.status();
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear T", T));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear N", w.rows()));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear K", w.cols()));
    if (w.dtype() == DType::kF32) {  // OpenBLAS only: gate logits must not depend on T's path
      gemmTransB(x.data(), T, w.cols(), hw.value()->data().data(), w.rows(), y.data());
      return Status::ok();
    }
    std::lock_guard<std::mutex> lock(mu_);
    return matmul(*hw.value(), x.data(), T, y.data());
  }

  Status swiglu(std::span<const float> gate, std::span<const float> up,
                std::span<float> out) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkSwiglu(gate.size(), up.size(), out.size()));
    swigluLoop(gate.data(), up.data(), out.data(), gate.size());
    return Status::ok();
  }

  Status softmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k, bool renormalize,
                     std::span<uint32_t> ids, std::span<float> weights) override {
    MOE_KERNELS_RETURN_IF_ERROR(
        checkSoftmaxTopk(logits.size(), T, E, k, ids.size(), weights.size()));
    cpuSoftmaxTopk(logits, T, E, k, renormalize, ids, weights);
    return Status::ok();
  }

  // Per segment: gather rows → xs (scaled by their weights when weightOnInput), h1 = xs·w1ᵀ
  // (+ b1), h3 = xs·w3ᵀ (+ b3), h1 = act(h1, h3) (non-gated: no w1, h1 = relu(h3)²), out = h1·w2ᵀ,
  // then y[row] += weight · (out[row] + b2) (unweighted when weightOnInput).  Segments run in
  // order, so the sum order is fixed.
  // bf16 rows go straight into the bf16 GEMMs' input; the stepwise path widens them.
  Status expertFfn(const ExpertSegments& segments, Activations x, size_t R, size_t H,
                   std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkExpertSegments(segments, x.size(), R, H, y.size()));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn H", H));
    const size_t S = segments.experts.size();
    // Resolve every matrix before computing so a bad handle leaves y untouched.
    std::vector<const HostMatrix*> mats(3 * S);
    std::vector<const float*> biases(3 * S, nullptr);  // [S, 3]: b1, b3, b2 (f32), or null
    for (size_t s = 0; s < S; ++s) {
      const ExpertFfnWeights& e = segments.experts[s];
      // A non-gated FFN (relu2) has no w1: its slot stays null.
      auto w1 = e.activation.gated()
                    ? asBackendMatrix<HostMatrix>(e.w1, kName, "w1")
                    : Result<const HostMatrix*>(static_cast<const HostMatrix*>(nullptr));
      auto w3 = asBackendMatrix<HostMatrix>(e.w3, kName, "w3");
      auto w2 = asBackendMatrix<HostMatrix>(e.w2, kName, "w2");
      if (!w1.isOk()) return w1.status();
      if (!w3.isOk()) return w3.status();
      if (!w2.isOk()) return w2.status();
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn I", e.w3->rows()));
      mats[3 * s] = w1.value();
      mats[3 * s + 1] = w3.value();
      mats[3 * s + 2] = w2.value();
      const Matrix* bias[3] = {e.b1, e.b3, e.b2};
      const char* biasName[3] = {"b1", "b3", "b2"};
      for (size_t b = 0; b < 3; ++b) {
        if (bias[b] == nullptr) continue;
        auto hb = asBackendMatrix<HostMatrix>(bias[b], kName, biasName[b]);
        if (!hb.isOk()) return hb.status();
        biases[3 * s + b] = hb.value()->data().data();  // f32 (checkExpertSegments)
      }
    }
    if (!segments.offsets.empty()) {
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn segment rows", segments.offsets[S]));
    }

    std::lock_guard<std::mutex> lock(mu_);
    std::fill(y.begin(), y.end(), 0.0f);
    for (size_t s = 0; s < S; ++s) {
      const size_t begin = segments.offsets[s], n = segments.offsets[s + 1] - begin;
      if (n == 0) continue;
      const Segment seg{mats[3 * s],
                        mats[3 * s + 1],
                        mats[3 * s + 2],
                        &biases[3 * s],
                        segments.experts[s].activation,
                        segments.rows.subspan(begin, n),
                        segments.weights.subspan(begin, n),
                        segments.weightOnInput};
      // [n, H]; the fused path computes padded rows (OnednnMatmul::rowsFor) past n
      float* out = scratch(out_, fusedRows(n) * H);
      MOE_KERNELS_RETURN_IF_ERROR(fusedApplies(seg) ? ffnFused(seg, x, H, out)
                                                    : ffnStepwise(seg, x, H, out));
      if (seg.bias[2] != nullptr) addBias(out, n, H, seg.bias[2]);
      scatterAdd(seg, out, H, y.data());
    }
    return Status::ok();
  }

 private:
  // One segment of an expertFfn call: its expert's matrices and biases (b1, b3, b2; null: none),
  // and the rows it applies to with their routing weights.
  struct Segment {
    const HostMatrix *w1, *w3, *w2;  // w1 null for a non-gated FFN
    const float* const* bias;        // [3]
    FfnActivation activation;
    std::span<const uint32_t> rows;
    std::span<const float> weights;
    bool weightOnInput;
    size_t n() const { return rows.size(); }
    size_t I() const { return w3->rows(); }
  };

  // The bf16 SwiGLU expert without gate/up biases (every bf16 family but gpt-oss and NemotronH)
  // runs as three oneDNN products with the activation fused into the W1 product's epilogue.
  bool fusedApplies(const Segment& seg) const {
    return dnnl_ && dnnl_->usable(DType::kBF16) &&
           seg.activation.kind == FfnActivation::Kind::kSwiglu && seg.bias[0] == nullptr &&
           seg.bias[1] == nullptr && seg.w1->dtype() == DType::kBF16 &&
           seg.w3->dtype() == DType::kBF16 && seg.w2->dtype() == DType::kBF16 && seg.I() > 0;
  }

  // Rows the fused path computes for an n-row segment: n rounded up where oneDNN runs such a
  // row count slowly; the extra rows are zeros and their results are never read.
  size_t fusedRows(size_t n) const { return dnnl_ ? dnnl_->rowsFor(DType::kBF16, n) : n; }

  // The segment's rows of x[R, H] (scaled by their weights when weightOnInput) as bf16, in one
  // pass into x16_[fusedRows(n), H], zero past row n.
  uint16_t* gatherBf16(const Segment& seg, Activations x, size_t H) {
    const size_t rows = fusedRows(seg.n());
    uint16_t* xs = scratch(x16_, rows * H);
    std::fill(xs + seg.n() * H, xs + rows * H, uint16_t{0});
    x16From_ = nullptr;  // x16_ no longer holds a matmul() input
    gatherRowsBf16(x, seg.rows, seg.weightOnInput ? seg.weights.data() : nullptr, H, xs);
    return xs;
  }

  // out[n, H] = W2 · (silu(W1·xs) ⊙ W3·xs), bf16 operands, fp32 accumulation: h3 in fp32, then
  // the W1 product's epilogue applies silu, multiplies by h3 and stores bf16, W2's input. Over
  // fusedRows(n) rows: out must hold that many.
  Status ffnFused(const Segment& seg, Activations x, size_t H, float* out) {
    const size_t n = fusedRows(seg.n()), I = seg.I();
    const uint16_t* xs = gatherBf16(seg, x, H);
    float* h3 = scratch(h3_, n * I);
    uint16_t* h16 = scratch(h16_, n * I);
    MOE_KERNELS_RETURN_IF_ERROR(dnnl_->run(bf16Call(*seg.w3, xs, n, h3)));
    MatmulCall gate = bf16Call(*seg.w1, xs, n, nullptr);
    gate.up = h3;
    gate.out = h16;
    MOE_KERNELS_RETURN_IF_ERROR(dnnl_->run(gate));
    return dnnl_->run(bf16Call(*seg.w2, h16, n, out));
  }

  // out[n, H] = W2 · act(W1·xs + b1, W3·xs + b3), each product by matmul() in its weights' dtype.
  Status ffnStepwise(const Segment& seg, Activations x, size_t H, float* out) {
    const size_t n = seg.n(), I = seg.I();
    float* xs = scratch(xs_, n * H);  // [n, H]
    float* h1 = scratch(h1_, n * I);  // [n, I]
    float* h3 = scratch(h3_, n * I);  // [n, I]
    gatherRows(x, seg.rows, seg.weightOnInput ? seg.weights.data() : nullptr, H, xs);
    const bool gated = seg.activation.gated();
    if (gated) MOE_KERNELS_RETURN_IF_ERROR(matmul(*seg.w1, xs, n, h1));
    MOE_KERNELS_RETURN_IF_ERROR(matmul(*seg.w3, xs, n, h3, /*sameX=*/gated));
    if (seg.bias[0] != nullptr) addBias(h1, n, I, seg.bias[0]);
    if (seg.bias[1] != nullptr) addBias(h3, n, I, seg.bias[1]);
    if (!gated) {
      relu2Loop(h3, h1, n * I);
    } else if (seg.activation.kind == FfnActivation::Kind::kClampedSwiglu) {
      clampedSwigluLoop(h1, h3, h1, n * I, seg.activation.alpha, seg.activation.limit);
    } else {
      swigluLoop(h1, h3, h1, n * I);
    }
    return matmul(*seg.w2, h1, n, out);
  }

  // y[row] += weight · out[j] for the segment's rows (unweighted when weightOnInput).
  static void scatterAdd(const Segment& seg, const float* out, size_t H, float* y) {
    scatterAddRows(out, seg.rows, seg.weightOnInput ? nullptr : seg.weights.data(), H, y);
  }

  // A bf16 product of packed (or plain) bf16 weights and bf16 rows x[T, w.cols] into y (fp32).
  static MatmulCall bf16Call(const HostMatrix& w, const uint16_t* x, size_t T, float* y) {
    MatmulCall c{.dtype = DType::kBF16, .x = x, .M = T, .K = w.cols(), .N = w.rows(), .y = y};
    if (w.packed() != nullptr) {
      c.packed = w.packed();
    } else {
      c.w = w.half().data();
    }
    return c;
  }
  // y[T, w.rows] = x[T, w.cols] · wᵀ in w's dtype with fp32 accumulation, on the fastest path
  // this CPU has (see kernelPath). `sameX`: x is the one the previous call rounded to bf16, so
  // its bf16 copy in x16_ is reused. Caller holds mu_; T, rows, cols fit in int.
  Status matmul(const HostMatrix& w, const float* x, size_t T, float* y, bool sameX = false) {
    const size_t N = w.rows(), K = w.cols();
    if (T == 0 || N == 0) return Status::ok();
    if (K == 0) {
      std::fill(y, y + T * N, 0.0f);
      return Status::ok();
    }
    const bool dnnlF32 = dnnl_ && dnnl_->usable(DType::kF32);
    const bool dnnlBf16 = dnnl_ && dnnl_->usable(DType::kBF16);
    switch (w.dtype()) {
      case DType::kF32:
        if (dnnlF32 && T < kOnednnF32MaxRows) {
          return dnnl_->run(
              {.dtype = DType::kF32, .x = x, .M = T, .K = K, .N = N, .w = w.data().data(), .y = y});
        }
        gemmTransB(x, T, K, w.data().data(), N, y);
        return Status::ok();
      case DType::kBF16:
        if (dnnlBf16) {
          uint16_t* x16 = scratch(x16_, T * K);
          if (!sameX || x16From_ != x || x16Count_ != T * K) roundToBf16(x, x16, T * K);
          x16From_ = x;
          x16Count_ = T * K;
          return dnnl_->run(bf16Call(w, x16, T, y));
        }
        break;
      default:  // f16: no native path here
        break;
    }
    float* wide = scratch(wide_, N * K);  // fallback: widen the weights, fp32 GEMM
    w.widen({wide, N * K});
    gemmTransB(x, T, K, wide, N, y);
    return Status::ok();
  }

  std::unique_ptr<OnednnMatmul> dnnl_;  // null when oneDNN has no CPU engine
  std::mutex mu_;                       // guards the scratch buffers below
  std::vector<float> xs_, h1_, h3_, out_, wide_;
  std::vector<uint16_t> x16_;       // x rounded to bf16 for oneDNN
  std::vector<uint16_t> h16_;       // the fused SwiGLU's bf16 output, W2's input
  const float* x16From_ = nullptr;  // the x that x16_ holds, for `sameX`
  size_t x16Count_ = 0;
};

}  // namespace

std::unique_ptr<Backend> makeBlasBackend() {
  return std::make_unique<BlasBackend>();
}

void setBlasThreads(int n) {
  openblas_set_num_threads(std::max(1, n));
  setOnednnThreads(std::max(1, n));
}

}  // namespace moe::kernels
