// BLAS backend implementation; see blas_backend.h.
#include "kernels/blas_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "kernels/cpu_softmax_topk.h"
#include "kernels/host_matrix.h"
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

// Grows `v` to at least n elements; never shrinks, so steady-state calls do not allocate.
float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

class BlasBackend final : public Backend {
 public:
  std::string_view name() const override { return kName; }

  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows,
                                         size_t cols) override {
    if (Status s = checkUpload(data, rows, cols); !s.isOk()) return makeError(s);
    return std::unique_ptr<Matrix>(
        std::make_unique<HostMatrix>(std::vector<float>(data.begin(), data.end()), rows, cols));
  }

  Status linear(const Matrix& w, std::span<const float> x, size_t T, std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkLinear(w, x.size(), T, y.size()));
    auto hw = asBackendMatrix<HostMatrix>(&w, kName, "w");
    if (!hw.isOk()) return hw.status();
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear T", T));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear N", w.rows()));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear K", w.cols()));
    gemmTransB(x.data(), T, w.cols(), hw.value()->data().data(), w.rows(), y.data());
    return Status::ok();
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

  // Per segment: gather rows → xs, h1 = xs·w1ᵀ, h3 = xs·w3ᵀ, h1 = silu(h1)⊙h3, out = h1·w2ᵀ,
  // then y[row] += weight · out[row].  Segments run in order, so the sum order is fixed.
  Status expertFfn(const ExpertSegments& segments, std::span<const float> x, size_t R, size_t H,
                   std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkExpertSegments(segments, x.size(), R, H, y.size()));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn H", H));
    const size_t S = segments.experts.size();
    // Resolve every matrix before computing so a bad handle leaves y untouched.
    std::vector<const HostMatrix*> mats(3 * S);
    for (size_t s = 0; s < S; ++s) {
      const ExpertFfnWeights& e = segments.experts[s];
      auto w1 = asBackendMatrix<HostMatrix>(e.w1, kName, "w1");
      auto w3 = asBackendMatrix<HostMatrix>(e.w3, kName, "w3");
      auto w2 = asBackendMatrix<HostMatrix>(e.w2, kName, "w2");
      if (!w1.isOk()) return w1.status();
      if (!w3.isOk()) return w3.status();
      if (!w2.isOk()) return w2.status();
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn I", e.w1->rows()));
      mats[3 * s] = w1.value();
      mats[3 * s + 1] = w3.value();
      mats[3 * s + 2] = w2.value();
    }
    if (!segments.offsets.empty()) {
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn segment rows", segments.offsets[S]));
    }

    std::lock_guard<std::mutex> lock(mu_);
    std::fill(y.begin(), y.end(), 0.0f);
    for (size_t s = 0; s < S; ++s) {
      const size_t begin = segments.offsets[s], n = segments.offsets[s + 1] - begin;
      if (n == 0) continue;
      const size_t I = mats[3 * s]->rows();
      float* xs = scratch(xs_, n * H);    // [n, H]
      float* h1 = scratch(h1_, n * I);    // [n, I]
      float* h3 = scratch(h3_, n * I);    // [n, I]
      float* out = scratch(out_, n * H);  // [n, H]
      for (size_t j = 0; j < n; ++j) {
        const float* src = x.data() + size_t{segments.rows[begin + j]} * H;
        std::copy(src, src + H, xs + j * H);
      }
      gemmTransB(xs, n, H, mats[3 * s]->data().data(), I, h1);
      gemmTransB(xs, n, H, mats[3 * s + 1]->data().data(), I, h3);
      swigluLoop(h1, h3, h1, n * I);
      gemmTransB(h1, n, I, mats[3 * s + 2]->data().data(), H, out);
      for (size_t j = 0; j < n; ++j) {
        const float w = segments.weights[begin + j];
        float* dst = y.data() + size_t{segments.rows[begin + j]} * H;
        for (size_t h = 0; h < H; ++h) dst[h] += w * out[j * H + h];
      }
    }
    return Status::ok();
  }

 private:
  std::mutex mu_;  // guards the scratch buffers below
  std::vector<float> xs_, h1_, h3_, out_;
};

}  // namespace

std::unique_ptr<Backend> makeBlasBackend() {
  return std::make_unique<BlasBackend>();
}

void setBlasThreads(int n) {
  openblas_set_num_threads(std::max(1, n));
}

}  // namespace moe::kernels
