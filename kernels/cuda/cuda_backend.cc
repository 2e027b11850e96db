// CUDA backend implementation; see cuda_backend.h.  Host code only (compiled by the C++ compiler
// against the CUDA headers); the kernels are behind the launchers in the *.cuh headers.
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/log.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gather_scatter.cuh"
#include "kernels/cuda/softmax_topk.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "kernels/op_checks.h"

namespace moe::kernels {
namespace {

using cuda::DeviceBuffer;

// RAII for the stream and the cuBLAS handle.  The backend makes its device current before they
// are destroyed (see ~CudaBackend).
struct StreamDestroy {
  void operator()(cudaStream_t s) const {
    if (cudaError_t e = cudaStreamDestroy(s); e != cudaSuccess) {
      logWarn("kernels: cudaStreamDestroy failed: ", cudaGetErrorName(e));
    }
  }
};
struct CublasDestroy {
  void operator()(cublasHandle_t h) const {
    if (cublasStatus_t s = cublasDestroy(h); s != CUBLAS_STATUS_SUCCESS) {
      logWarn("kernels: cublasDestroy failed: ", cublasGetStatusName(s));
    }
  }
};
using StreamPtr = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDestroy>;
using CublasPtr = std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, CublasDestroy>;

// A weight matrix [rows, cols] in device memory of one GPU.
class CudaMatrix final : public Matrix {
 public:
  CudaMatrix(size_t rows, size_t cols, int device)
      : Matrix(rows, cols), device_(device), data_(device) {}
  int device() const { return device_; }
  const float* data() const { return data_.get(); }  // [rows, cols]
  DeviceBuffer<float>& buffer() { return data_; }
  size_t residentBytes() const override { return data_.capacity() * sizeof(float); }

 private:
  int device_;
  DeviceBuffer<float> data_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device)
      : device_(device),
        name_("cuda:" + std::to_string(device)),
        in_(device),
        in2_(device),
        out_(device),
        gathered_(device),
        h1_(device),
        h3_(device),
        ffnOut_(device),
        ids_(device),
        rows_(device) {}

  ~CudaBackend() override {
    // The members (buffers, handle, stream) are released after this body: make our device
    // current for them and let queued work finish first.
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      logWarn("kernels: ", name_, " cudaSetDevice at shutdown failed: ", cudaGetErrorName(e));
    }
    if (stream_ != nullptr) {
      if (cudaError_t e = cudaStreamSynchronize(stream_.get()); e != cudaSuccess) {
        logWarn("kernels: ", name_, " stream sync at shutdown failed: ", cudaGetErrorName(e));
      }
    }
  }

  Status init() {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    cudaStream_t stream = nullptr;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    cublasHandle_t handle = nullptr;
    MOE_CUBLAS_CHECK(cublasCreate(&handle));
    cublas_.reset(handle);
    MOE_CUBLAS_CHECK(cublasSetStream(handle, stream));
    MOE_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
    // fp32 stays fp32: CUBLAS_DEFAULT_MATH never lowers cublasSgemm to TF32 tensor cores (that
    // would be CUBLAS_TF32_TENSOR_OP_MATH), so results agree with the CPU backends to fp32
    // rounding and the cluster parity checks stay tight.
    MOE_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    return Status::ok();
  }

  std::string_view name() const override { return name_; }

  using Backend::upload;

  // fp32 weights only, for now: bf16 (cuBLAS tensor cores) is issue 12's GPU part.
  bool supports(Op, DType dtype) const override { return dtype == DType::kF32; }
  std::string kernelPath(DType dtype) const override {
    return dtype == DType::kF32 ? "cublas-sgemm" : "unsupported";
  }

  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows, size_t cols,
                                         DType dtype) override {
    if (Status s = checkUpload(data, rows, cols); !s.isOk()) return makeError(s);
    if (dtype != DType::kF32) {
      return makeError(name_ + ": " + std::string(dtypeName(dtype)) +
                       " weights are not supported (f32 only); set model.dtype: f32");
    }
    auto m = std::make_unique<CudaMatrix>(rows, cols, device_);
    if (Status s = uploadInto(*m, data); !s.isOk()) return makeError(s);
    return std::unique_ptr<Matrix>(std::move(m));
  }

  Status linear(const Matrix& w, std::span<const float> x, size_t T, std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkLinear(w, x.size(), T, y.size()));
    auto cw = resolve(&w, "w");
    if (!cw.isOk()) return cw.status();
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (y.empty()) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in_, x));
    MOE_KERNELS_RETURN_IF_ERROR(out_.reserve(y.size()));
    MOE_KERNELS_RETURN_IF_ERROR(gemm(*cw.value(), in_.get(), T, out_.get()));
    MOE_KERNELS_RETURN_IF_ERROR(toHost(y, out_));
    return finish();
  }

  Status swiglu(std::span<const float> gate, std::span<const float> up,
                std::span<float> out) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkSwiglu(gate.size(), up.size(), out.size()));
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (out.empty()) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in_, gate));
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in2_, up));
    MOE_KERNELS_RETURN_IF_ERROR(out_.reserve(out.size()));
    MOE_CUDA_CHECK(cuda::launchSwiglu(in_.get(), in2_.get(), out_.get(), out.size(), stream()));
    MOE_KERNELS_RETURN_IF_ERROR(toHost(out, out_));
    return finish();
  }

  Status softmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k, bool renormalize,
                     std::span<uint32_t> ids, std::span<float> weights) override {
    MOE_KERNELS_RETURN_IF_ERROR(
        checkSoftmaxTopk(logits.size(), T, E, k, ids.size(), weights.size()));
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (T == 0) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in_, logits));
    MOE_KERNELS_RETURN_IF_ERROR(ids_.reserve(ids.size()));
    MOE_KERNELS_RETURN_IF_ERROR(out_.reserve(weights.size()));
    MOE_CUDA_CHECK(
        cuda::launchSoftmaxTopk(in_.get(), T, E, k, renormalize, ids_.get(), out_.get(), stream()));
    MOE_KERNELS_RETURN_IF_ERROR(toHost(ids, ids_));
    MOE_KERNELS_RETURN_IF_ERROR(toHost(weights, out_));
    return finish();
  }

  // Uploads x and the segment arrays once, then per non-empty segment (in order, on the one
  // stream): gather its rows (× weight when weightOnInput), h1 = xs·w1ᵀ, h3 = xs·w3ᵀ,
  // h1 = act(h1 + b1, h3 + b3) (non-gated: no w1, h1 = relu(h3 + b3)²), out = h1·w2ᵀ, and
  // y[row] += weight · (out + b2) (unweighted when
  // weightOnInput).  Rows are distinct within a segment and segments are serialized, so
  // the scatter needs no atomics and the sum order is fixed: the result is deterministic.
  Status expertFfn(const ExpertSegments& segments, std::span<const float> x, size_t R, size_t H,
                   std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkExpertSegments(segments, x.size(), R, H, y.size()));
    const size_t S = segments.experts.size();
    // Resolve every matrix (and size the scratch) before touching the device, so a bad handle
    // fails cleanly.
    std::vector<const CudaMatrix*> mats(3 * S);        // [S, 3]: w1, w3, w2
    std::vector<const float*> biases(3 * S, nullptr);  // [S, 3]: b1, b3, b2 (device), or null
    size_t maxRows = 0, maxI = 0;
    for (size_t s = 0; s < S; ++s) {
      const ExpertFfnWeights& e = segments.experts[s];
      // A non-gated FFN (relu2) has no w1: its slot stays null.
      auto w1 = e.activation.gated()
                    ? resolve(e.w1, "w1")
                    : Result<const CudaMatrix*>(static_cast<const CudaMatrix*>(nullptr));
      auto w3 = resolve(e.w3, "w3");
      auto w2 = resolve(e.w2, "w2");
      if (!w1.isOk()) return w1.status();
      if (!w3.isOk()) return w3.status();
      if (!w2.isOk()) return w2.status();
      mats[3 * s] = w1.value();
      mats[3 * s + 1] = w3.value();
      mats[3 * s + 2] = w2.value();
      const Matrix* bias[3] = {e.b1, e.b3, e.b2};
      const char* biasName[3] = {"b1", "b3", "b2"};
      for (size_t b = 0; b < 3; ++b) {
        if (bias[b] == nullptr) continue;
        auto cb = resolve(bias[b], biasName[b]);
        if (!cb.isOk()) return cb.status();
        biases[3 * s + b] = cb.value()->data();
      }
      const size_t n = segments.offsets[s + 1] - segments.offsets[s];
      if (n > 0) {
        maxRows = std::max(maxRows, n);
        maxI = std::max(maxI, e.w3->rows());
      }
    }

    std::lock_guard<std::mutex> lock(mu_);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (y.empty()) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in_, x));                  // x [R, H]
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(rows_, segments.rows));    // [entries]
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(in2_, segments.weights));  // [entries]
    MOE_KERNELS_RETURN_IF_ERROR(out_.reserve(y.size()));            // y [R, H]
    MOE_CUDA_CHECK(cudaMemsetAsync(out_.get(), 0, y.size() * sizeof(float), stream()));
    MOE_KERNELS_RETURN_IF_ERROR(gathered_.reserve(maxRows * H));  // [n, H]
    MOE_KERNELS_RETURN_IF_ERROR(h1_.reserve(maxRows * maxI));     // [n, I]
    MOE_KERNELS_RETURN_IF_ERROR(h3_.reserve(maxRows * maxI));     // [n, I]
    MOE_KERNELS_RETURN_IF_ERROR(ffnOut_.reserve(maxRows * H));    // [n, H]

    for (size_t s = 0; s < S; ++s) {
      const size_t begin = segments.offsets[s], n = segments.offsets[s + 1] - begin;
      if (n == 0) continue;
      const CudaMatrix* w1 = mats[3 * s];  // null for a non-gated FFN
      const CudaMatrix& w3 = *mats[3 * s + 1];
      const CudaMatrix& w2 = *mats[3 * s + 2];
      const ExpertFfnWeights& e = segments.experts[s];
      const float* const* bias = &biases[3 * s];  // b1, b3, b2
      const uint32_t* segRows = rows_.get() + begin;
      const float* segWeights = in2_.get() + begin;
      // weightOnInput (Llama 4): the weights scale the gathered rows, the output is unweighted.
      const bool onInput = segments.weightOnInput;
      MOE_CUDA_CHECK(cuda::launchGatherRows(in_.get(), segRows, n, H, gathered_.get(), stream(),
                                            onInput ? segWeights : nullptr));
      if (w1 != nullptr) MOE_KERNELS_RETURN_IF_ERROR(gemm(*w1, gathered_.get(), n, h1_.get()));
      MOE_KERNELS_RETURN_IF_ERROR(gemm(w3, gathered_.get(), n, h3_.get()));
      const size_t I = w3.rows();
      const bool clamped = e.activation.kind == FfnActivation::Kind::kClampedSwiglu;
      if (!e.activation.gated()) {
        MOE_CUDA_CHECK(cuda::launchRelu2(h3_.get(), bias[1], h1_.get(), n, I, stream()));
      } else if (!clamped && bias[0] == nullptr && bias[1] == nullptr) {
        MOE_CUDA_CHECK(cuda::launchSwiglu(h1_.get(), h3_.get(), h1_.get(), n * I, stream()));
      } else {
        MOE_CUDA_CHECK(cuda::launchGatedActivation(h1_.get(), h3_.get(), bias[0], bias[1],
                                                   h1_.get(), n, I, clamped, e.activation.alpha,
                                                   e.activation.limit, stream()));
      }
      MOE_KERNELS_RETURN_IF_ERROR(gemm(w2, h1_.get(), n, ffnOut_.get()));
      MOE_CUDA_CHECK(cuda::launchWeightedScatterAdd(ffnOut_.get(), segRows,
                                                    onInput ? nullptr : segWeights, n, H,
                                                    out_.get(), stream(), bias[2]));
    }
    MOE_KERNELS_RETURN_IF_ERROR(toHost(y, out_));
    return finish();
  }

 private:
  cudaStream_t stream() const { return stream_.get(); }

  Result<const CudaMatrix*> resolve(const Matrix* m, std::string_view what) const {
    auto cm = asBackendMatrix<CudaMatrix>(m, name_, what);
    if (cm.isOk() && cm.value()->device() != device_) {
      return makeError(name_ + ": " + std::string(what) + " lives on GPU " +
                       std::to_string(cm.value()->device()));
    }
    return cm;
  }

  Status uploadInto(CudaMatrix& m, std::span<const float> data) {
    std::lock_guard<std::mutex> lock(mu_);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (data.empty()) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(toDevice(m.buffer(), data));
    return finish();  // the host span may die as soon as upload returns
  }

  // y[T, N] = x[T, K] · w[N, K]ᵀ on the stream; x and y are device pointers.
  Status gemm(const CudaMatrix& w, const float* x, size_t T, float* y) {
    const size_t N = w.rows(), K = w.cols();
    if (T == 0 || N == 0) return Status::ok();
    if (K == 0) {  // an empty sum; cuBLAS would also want ld >= 1
      MOE_CUDA_CHECK(cudaMemsetAsync(y, 0, T * N * sizeof(float), stream()));
      return Status::ok();
    }
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("GEMM rows T", T));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("GEMM N", N));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("GEMM K", K));
    const float alpha = 1.0f, beta = 0.0f;
    // cuBLAS is column-major.  Row-major y[T, N] is column-major yᵀ [N, T] (ld N), row-major
    // w[N, K] is column-major wᵀ [K, N] (ld K), row-major x[T, K] is column-major xᵀ [K, T]
    // (ld K).  So yᵀ = (wᵀ)ᵀ · xᵀ: op(A) = transpose of w's column-major view, op(B) = xᵀ as is.
    MOE_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                 static_cast<int>(T), static_cast<int>(K), &alpha, w.data(),
                                 static_cast<int>(K), x, static_cast<int>(K), &beta, y,
                                 static_cast<int>(N)));
    return Status::ok();
  }

  // Grows `dst` and queues a copy of `src` into it (pageable host memory: the copy is staged
  // before cudaMemcpyAsync returns, so `src` need not outlive the call).
  template <typename T>
  Status toDevice(DeviceBuffer<T>& dst, std::span<const T> src) {
    if (src.empty()) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(dst.reserve(src.size()));
    MOE_CUDA_CHECK(
        cudaMemcpyAsync(dst.get(), src.data(), src.size_bytes(), cudaMemcpyHostToDevice, stream()));
    return Status::ok();
  }

  // Queues a copy of the first dst.size() elements of `src` to host memory; valid after finish().
  template <typename T>
  Status toHost(std::span<T> dst, const DeviceBuffer<T>& src) {
    if (dst.empty()) return Status::ok();
    MOE_CUDA_CHECK(
        cudaMemcpyAsync(dst.data(), src.get(), dst.size_bytes(), cudaMemcpyDeviceToHost, stream()));
    return Status::ok();
  }

  // Waits for everything queued; also surfaces any asynchronous kernel fault.
  Status finish() {
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return Status::ok();
  }

  const int device_;
  const std::string name_;
  std::mutex mu_;  // serializes calls: they share the stream and the scratch buffers
  // Declared before the buffers so they are destroyed after them.
  StreamPtr stream_;
  CublasPtr cublas_;
  // Grow-only scratch, reused across calls.
  DeviceBuffer<float> in_, in2_, out_;               // op inputs / output
  DeviceBuffer<float> gathered_, h1_, h3_, ffnOut_;  // expertFfn per-segment intermediates
  DeviceBuffer<uint32_t> ids_, rows_;
};

}  // namespace

CudaDeviceQuery queryCudaDevices() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    // Reset the runtime's last-error slot so this expected failure (no driver / no GPU) does not
    // resurface from an unrelated later cudaGetLastError(); it returns the same error again.
    const cudaError_t cleared = cudaGetLastError();
    (void)cleared;
    return {0, std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + " (" +
                   cudaGetErrorString(e) + ")"};
  }
  if (count <= 0) return {0, "the CUDA runtime reports no device"};
  return {count, ""};
}

Result<std::unique_ptr<Backend>> createCudaBackend(int device) {
  const CudaDeviceQuery devices = queryCudaDevices();
  if (devices.count == 0) return makeError("CUDA backend unavailable: " + devices.why);
  if (device < 0 || device >= devices.count) {
    return makeError("CUDA backend unavailable: device " + std::to_string(device) +
                     " requested but " + std::to_string(devices.count) + " device(s) present");
  }
  auto backend = std::make_unique<CudaBackend>(device);
  if (Status s = backend->init(); !s.isOk()) {
    return makeError("CUDA backend on device " + std::to_string(device) +
                     " failed to start: " + s.message());
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace moe::kernels
