// Reference backend implementation; see reference_backend.h.
#include "kernels/reference_backend.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu_softmax_topk.h"
#include "kernels/host_matrix.h"
#include "kernels/op_checks.h"

namespace moe::kernels {
namespace {

constexpr const char* kName = "reference";

double silu(double g) {
  return g / (1.0 + std::exp(-g));
}

// The FFN's gated activation on (h1, h3), straight from backend.h.
double activate(const FfnActivation& a, double g, double u) {
  if (a.kind == FfnActivation::Kind::kSwiglu) return silu(g) * u;
  if (a.kind == FfnActivation::Kind::kRelu2) {  // non-gated: g is unused (0)
    const double r = std::max(u, 0.0);
    return r * r;
  }
  const double limit = a.limit;
  g = std::min(g, limit);
  u = std::clamp(u, -limit, limit);
  return (u + 1.0) * (g / (1.0 + std::exp(-double(a.alpha) * g)));
}

// A bias widened to fp32 ([n]; zeros when absent).
Result<std::vector<float>> widenBias(const Matrix* b, size_t n, const char* what) {
  std::vector<float> out(n, 0.0f);
  if (b == nullptr) return out;
  auto hb = asBackendMatrix<HostMatrix>(b, kName, what);
  if (!hb.isOk()) return makeError(hb.status());
  hb.value()->widen(out);
  return out;
}

class ReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return kName; }

  using Backend::upload;

  // Every op with every weight dtype: weights are widened exactly to fp32, then to double.
  bool supports(Op, DType dtype) const override { return isComputeDType(dtype); }
  std::string kernelPath(DType dtype) const override {
    return std::string("reference-") + std::string(dtypeName(dtype));
  }

  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows, size_t cols,
                                         DType dtype) override {
    if (Status s = checkUpload(data, rows, cols); !s.isOk()) return makeError(s);
    if (Status s = checkUploadDType(kName, dtype); !s.isOk()) return makeError(s);
    return std::unique_ptr<Matrix>(std::make_unique<HostMatrix>(data, rows, cols, dtype));
  }

  Status linear(const Matrix& w, std::span<const float> x, size_t T, std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkLinear(w, x.size(), T, y.size()));
    auto hw = asBackendMatrix<HostMatrix>(&w, kName, "w");
    if (!hw.isOk()) return hw.status();
    const size_t N = w.rows(), K = w.cols();
    std::vector<float> W(N * K);  // [N, K]
    hw.value()->widen(W);
    for (size_t t = 0; t < T; ++t) {
      for (size_t n = 0; n < N; ++n) {
        double acc = 0.0;
        for (size_t kk = 0; kk < K; ++kk) acc += double(x[t * K + kk]) * double(W[n * K + kk]);
        y[t * N + n] = static_cast<float>(acc);
      }
    }
    return Status::ok();
  }

  Status swiglu(std::span<const float> gate, std::span<const float> up,
                std::span<float> out) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkSwiglu(gate.size(), up.size(), out.size()));
    for (size_t i = 0; i < gate.size(); ++i) {
      out[i] = static_cast<float>(silu(gate[i]) * double(up[i]));
    }
    return Status::ok();
  }

  Status softmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k, bool renormalize,
                     std::span<uint32_t> ids, std::span<float> weights) override {
    MOE_KERNELS_RETURN_IF_ERROR(
        checkSoftmaxTopk(logits.size(), T, E, k, ids.size(), weights.size()));
    cpuSoftmaxTopk(logits, T, E, k, renormalize, ids, weights);
    return Status::ok();
  }

  // Token by token, expert by expert, straight from the definition in backend.h.
  // bf16 rows widen exactly first.
  Status expertFfn(const ExpertSegments& segments, Activations rows, size_t R, size_t H,
                   std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkExpertSegments(segments, rows.size(), R, H, y.size()));
    std::vector<float> widened;
    if (rows.dtype() != DType::kF32) {
      widened.resize(rows.size());
      rows.widenInto(widened);
    }
    const std::span<const float> x = widened.empty() ? rows.f32() : std::span<const float>(widened);
    std::vector<double> acc(R * H, 0.0);  // [R, H]
    for (size_t s = 0; s < segments.experts.size(); ++s) {
      const ExpertFfnWeights& e = segments.experts[s];
      const bool gated = e.activation.gated();  // else no w1: W1 stays 0, g = 0 unused
      auto w1 = gated ? asBackendMatrix<HostMatrix>(e.w1, kName, "w1")
                      : Result<const HostMatrix*>(static_cast<const HostMatrix*>(nullptr));
      auto w3 = asBackendMatrix<HostMatrix>(e.w3, kName, "w3");
      auto w2 = asBackendMatrix<HostMatrix>(e.w2, kName, "w2");
      if (!w1.isOk()) return w1.status();
      if (!w3.isOk()) return w3.status();
      if (!w2.isOk()) return w2.status();
      const size_t I = e.w3->rows();
      std::vector<float> W1(I * H, 0.0f), W3(I * H), W2(H * I);  // [I, H], [I, H], [H, I]
      if (gated) w1.value()->widen(W1);
      w3.value()->widen(W3);
      w2.value()->widen(W2);
      auto b1 = widenBias(e.b1, I, "b1");
      auto b3 = widenBias(e.b3, I, "b3");
      auto b2 = widenBias(e.b2, H, "b2");
      if (!b1.isOk()) return b1.status();
      if (!b3.isOk()) return b3.status();
      if (!b2.isOk()) return b2.status();
      const std::vector<float>&B1 = b1.value(), &B3 = b3.value(), &B2 = b2.value();
      std::vector<double> act(I);  // [I]
      std::vector<float> in(H);    // [H] the expert's input row
      for (size_t j = segments.offsets[s]; j < segments.offsets[s + 1]; ++j) {
        const size_t r = segments.rows[j];
        const float w = segments.weights[j];
        // Llama 4 scales the input in the activations' dtype (fp32), before the expert.
        for (size_t h = 0; h < H; ++h)
          in[h] = segments.weightOnInput ? w * x[r * H + h] : x[r * H + h];
        for (size_t i = 0; i < I; ++i) {
          double g = B1[i], u = B3[i];
          for (size_t h = 0; h < H; ++h) {
            g += double(W1[i * H + h]) * double(in[h]);
            u += double(W3[i * H + h]) * double(in[h]);
          }
          act[i] = activate(e.activation, g, u);
        }
        const double outWeight = segments.weightOnInput ? 1.0 : double(w);
        for (size_t h = 0; h < H; ++h) {
          double o = B2[h];
          for (size_t i = 0; i < I; ++i) o += double(W2[h * I + i]) * act[i];
          acc[r * H + h] += outWeight * o;
        }
      }
    }
    for (size_t i = 0; i < R * H; ++i) y[i] = static_cast<float>(acc[i]);
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Backend> makeReferenceBackend() {
  return std::make_unique<ReferenceBackend>();
}

}  // namespace moe::kernels
