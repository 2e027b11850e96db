// Shape validation for the backend operations; see op_checks.h.
#include "kernels/op_checks.h"

#include <climits>
#include <cmath>
#include <vector>

namespace moe::kernels {
namespace {

// a * b, or false when it does not fit in size_t (a corrupt size from a caller must not wrap
// around into a small, "valid" one).
bool mulFits(size_t a, size_t b, size_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

std::string str(size_t v) {
  return std::to_string(v);
}

Status sizeMismatch(std::string_view op, std::string_view what, size_t got, size_t want) {
  return Status::error(std::string(op) + ": " + std::string(what) + " has " + str(got) +
                       " elements, expected " + str(want));
}

Status checkMatrixShape(std::string_view what, const Matrix* m, size_t rows, size_t cols) {
  if (m == nullptr) return Status::error("expertFfn: " + std::string(what) + " is null");
  if (m->rows() != rows || m->cols() != cols) {
    return Status::error("expertFfn: " + std::string(what) + " is [" + str(m->rows()) + ", " +
                         str(m->cols()) + "], expected [" + str(rows) + ", " + str(cols) + "]");
  }
  return Status::ok();
}

// An optional bias: null, or an f32 column vector [n, 1].
Status checkBias(const std::string& what, const Matrix* b, size_t n) {
  if (b == nullptr) return Status::ok();
  MOE_KERNELS_RETURN_IF_ERROR(checkMatrixShape(what, b, n, 1));
  if (b->dtype() != DType::kF32) {
    return Status::error("expertFfn: " + what + " is " + std::string(dtypeName(b->dtype())) +
                         "; biases are held in f32");
  }
  return Status::ok();
}

Status checkActivation(const std::string& what, const FfnActivation& a) {
  switch (a.kind) {
    case FfnActivation::Kind::kSwiglu:
    case FfnActivation::Kind::kRelu2:
      return Status::ok();
    case FfnActivation::Kind::kClampedSwiglu:
      if (!std::isfinite(a.alpha) || !std::isfinite(a.limit) || a.limit < 0.0f) {
        return Status::error("expertFfn: " + what + " clamped SwiGLU needs a finite alpha and a " +
                             "finite limit >= 0 (alpha " + std::to_string(a.alpha) + ", limit " +
                             std::to_string(a.limit) + ")");
      }
      return Status::ok();
  }
  return Status::error("expertFfn: " + what + " has an unknown activation kind " +
                       std::to_string(static_cast<int>(a.kind)));
}

}  // namespace

Status checkUpload(std::span<const float> data, size_t rows, size_t cols) {
  size_t n = 0;
  if (!mulFits(rows, cols, &n)) return Status::error("upload: rows * cols overflows");
  if (data.size() != n) return sizeMismatch("upload", "data", data.size(), n);
  return Status::ok();
}

Status checkUploadDType(std::string_view backend, DType dtype) {
  if (isComputeDType(dtype)) return Status::ok();
  return Status::error(std::string(backend) + ": upload: " + std::string(dtypeName(dtype)) +
                       " is a checkpoint storage dtype, not one weights are held in (f32, bf16, "
                       "f16)");
}

Status checkLinear(const Matrix& w, size_t xSize, size_t T, size_t ySize) {
  size_t nx = 0, ny = 0;
  if (!mulFits(T, w.cols(), &nx) || !mulFits(T, w.rows(), &ny)) {
    return Status::error("linear: T * width overflows");
  }
  if (xSize != nx) return sizeMismatch("linear", "x", xSize, nx);
  if (ySize != ny) return sizeMismatch("linear", "y", ySize, ny);
  return Status::ok();
}

Status checkSwiglu(size_t gateSize, size_t upSize, size_t outSize) {
  if (upSize != gateSize) return sizeMismatch("swiglu", "up", upSize, gateSize);
  if (outSize != gateSize) return sizeMismatch("swiglu", "out", outSize, gateSize);
  return Status::ok();
}

Status checkSoftmaxTopk(size_t logitsSize, size_t T, size_t E, size_t k, size_t idsSize,
                        size_t weightsSize) {
  if (k < 1 || k > E) {
    return Status::error("softmaxTopk: k = " + str(k) + " must be in [1, E = " + str(E) + "]");
  }
  if (E > UINT32_MAX) return Status::error("softmaxTopk: E does not fit in a uint32 expert id");
  size_t nl = 0, nk = 0;
  if (!mulFits(T, E, &nl) || !mulFits(T, k, &nk)) {
    return Status::error("softmaxTopk: T * E overflows");
  }
  if (logitsSize != nl) return sizeMismatch("softmaxTopk", "logits", logitsSize, nl);
  if (idsSize != nk) return sizeMismatch("softmaxTopk", "ids", idsSize, nk);
  if (weightsSize != nk) return sizeMismatch("softmaxTopk", "weights", weightsSize, nk);
  return Status::ok();
}

Status checkExpertSegments(const ExpertSegments& segments, size_t xSize, size_t R, size_t H,
                           size_t ySize) {
  size_t n = 0;
  if (!mulFits(R, H, &n)) return Status::error("expertFfn: R * H overflows");
  if (xSize != n) return sizeMismatch("expertFfn", "x", xSize, n);
  if (ySize != n) return sizeMismatch("expertFfn", "y", ySize, n);

  const size_t S = segments.experts.size();
  const auto& offsets = segments.offsets;
  // An empty offsets span is accepted for "no segments at all" so callers need not build {0}.
  if (S == 0 && offsets.empty()) {
    if (!segments.rows.empty() || !segments.weights.empty()) {
      return Status::error("expertFfn: rows/weights given without any segment");
    }
    return Status::ok();
  }
  if (offsets.size() != S + 1) return sizeMismatch("expertFfn", "offsets", offsets.size(), S + 1);
  if (offsets[0] != 0) return Status::error("expertFfn: offsets[0] must be 0");
  for (size_t s = 0; s < S; ++s) {
    if (offsets[s + 1] < offsets[s]) {
      return Status::error("expertFfn: offsets decrease at segment " + str(s));
    }
  }
  const size_t entries = offsets[S];
  if (segments.rows.size() != entries) {
    return sizeMismatch("expertFfn", "rows", segments.rows.size(), entries);
  }
  if (segments.weights.size() != entries) {
    return sizeMismatch("expertFfn", "weights", segments.weights.size(), entries);
  }

  // lastSegment[r] = 1 + the last segment that named row r, to find repeats within a segment.
  std::vector<size_t> lastSegment(R, 0);
  for (size_t s = 0; s < S; ++s) {
    const ExpertFfnWeights& e = segments.experts[s];
    const std::string name = "segment " + str(s);
    MOE_KERNELS_RETURN_IF_ERROR(checkActivation(name, e.activation));
    if (e.w3 == nullptr || e.w2 == nullptr || (e.activation.gated() && e.w1 == nullptr)) {
      return Status::error("expertFfn: segment " + str(s) + " has a null weight matrix");
    }
    if (!e.activation.gated() && (e.w1 != nullptr || e.b1 != nullptr)) {
      return Status::error("expertFfn: " + name +
                           " has a gate (w1/b1) but a non-gated activation (relu2)");
    }
    const size_t I = e.w3->rows();
    if (e.w1 != nullptr) MOE_KERNELS_RETURN_IF_ERROR(checkMatrixShape(name + " w1", e.w1, I, H));
    MOE_KERNELS_RETURN_IF_ERROR(checkMatrixShape(name + " w3", e.w3, I, H));
    MOE_KERNELS_RETURN_IF_ERROR(checkMatrixShape(name + " w2", e.w2, H, I));
    MOE_KERNELS_RETURN_IF_ERROR(checkBias(name + " b1", e.b1, I));
    MOE_KERNELS_RETURN_IF_ERROR(checkBias(name + " b3", e.b3, I));
    MOE_KERNELS_RETURN_IF_ERROR(checkBias(name + " b2", e.b2, H));
    for (size_t j = offsets[s]; j < offsets[s + 1]; ++j) {
      const size_t r = segments.rows[j];
      if (r >= R) {
        return Status::error("expertFfn: " + name + " names row " + str(r) + " but R = " + str(R));
      }
      if (lastSegment[r] == s + 1) {
        return Status::error("expertFfn: " + name + " names row " + str(r) + " twice");
      }
      lastSegment[r] = s + 1;
    }
  }
  return Status::ok();
}

Status checkFitsInt(std::string_view what, size_t value) {
  if (value > static_cast<size_t>(INT_MAX)) {
    return Status::error(std::string(what) + " = " + str(value) +
                         " exceeds the int range of BLAS/cuBLAS");
  }
  return Status::ok();
}

}  // namespace moe::kernels
