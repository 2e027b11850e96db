// CUDA backend implementation; see cuda_backend.h.  Host code only (compiled by the C++ compiler
// against the CUDA headers); the kernels are behind the launchers in the *.cuh headers.
//
// Every call takes a CallContext from a small pool (its own stream, cuBLAS handle, pinned staging
// and grow-only device scratch), stages its inputs into one pinned buffer, copies them in with one
// transfer, runs on that stream, copies the result out with one transfer and synchronizes only its
// own stream.  Concurrent calls therefore run on different streams: one call's copies overlap
// another's kernels, and no lock is held while the device works.
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/log.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gather_scatter.cuh"
#include "kernels/cuda/grouped_ffn.cuh"
#include "kernels/cuda/softmax_topk.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "kernels/op_checks.h"

namespace moe::kernels {
namespace {

using cuda::ComputeType;
using cuda::DeviceBuffer;
using cuda::FfnGroup;
using cuda::FfnKind;
using cuda::PinnedBuffer;
using cuda::reserveScratch;

// Calls that may run at once on one backend (each on its own stream); more wait for a context.
constexpr size_t kMaxContexts = 4;
// Sections of a staged transfer start at this byte alignment (cudaMalloc's own), so any element
// type, pointers included, is aligned on both sides.
constexpr size_t kStageAlign = 256;
// Each group's block in the expert FFN's scratch starts at a multiple of this many elements:
// 16 bytes of bf16, the pointer alignment cuBLAS asks of grouped bf16 GEMMs.
constexpr size_t kGroupAlignElements = 8;

size_t alignUp(size_t n, size_t to) {
  return (n + to - 1) / to * to;
}

// RAII for a stream and a cuBLAS handle; their owner makes the device current before they die.
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

// A stream with a cuBLAS handle bound to it.  Fp32 stays fp32: CUBLAS_DEFAULT_MATH never lowers
// an f32 GEMM to TF32 (that takes CUBLAS_TF32_TENSOR_OP_MATH or a FAST_TF32 compute type), so f32
// results agree with the CPU backends to fp32 rounding; bf16 GEMMs use tensor cores regardless.
Status createStreamAndHandle(StreamPtr& stream, CublasPtr& cublas) {
  cudaStream_t s = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream.reset(s);
  cublasHandle_t handle = nullptr;
  MOE_CUBLAS_CHECK(cublasCreate(&handle));
  cublas.reset(handle);
  MOE_CUBLAS_CHECK(cublasSetStream(handle, s));
  // Host scalars: the grouped GEMM refuses CUBLAS_POINTER_MODE_DEVICE.
  MOE_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  MOE_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  return Status::ok();
}

cudaDataType_t cudaTypeOf(ComputeType t) {
  return t == ComputeType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}
size_t elementBytes(ComputeType t) {
  return t == ComputeType::kBF16 ? 2 : 4;
}

// Byte offsets of the sections of one staged transfer, each kStageAlign-aligned.
class StageLayout {
 public:
  template <typename T>
  size_t add(size_t count) {
    const size_t at = alignUp(size_, kStageAlign);
    size_ = at + count * sizeof(T);
    return at;
  }
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;
};

// One cublasGemmGroupedBatchedEx call, one problem per group (group_size 1), every problem
// y[n, m] = x[n, k] · w[m, k]ᵀ in row-major terms.  cuBLAS is column-major: row-major y[n, m] is
// column-major [m, n] (ld m), row-major w[m, k] is column-major [k, m] (ld k) used transposed,
// row-major x[n, k] is column-major [k, n] (ld k) used as is.  The host arrays live here until
// the call's stream is synchronized; the A/B/C pointer arrays must be in device memory: the
// caller stages a(), b(), c() and passes their device copies to run().
class GroupedGemm {
 public:
  // Device pointers w [m, k], x [n, k], y [n, m], row-major; dimensions already fit int.
  void add(size_t m, size_t n, size_t k, const void* w, const void* x, void* y) {
    m_.push_back(static_cast<int>(m));
    n_.push_back(static_cast<int>(n));
    k_.push_back(static_cast<int>(k));
    lda_.push_back(static_cast<int>(k));
    ldb_.push_back(static_cast<int>(k));
    ldc_.push_back(static_cast<int>(m));
    a_.push_back(w);
    b_.push_back(x);
    c_.push_back(y);
  }
  size_t count() const { return m_.size(); }
  const std::vector<const void*>& a() const { return a_; }
  const std::vector<const void*>& b() const { return b_; }
  const std::vector<void*>& c() const { return c_; }

  // Queues the GEMMs on `handle`'s stream; dA/dB/dC are device copies of a(), b(), c().
  Status run(cublasHandle_t handle, ComputeType type, const void* const* dA, const void* const* dB,
             void* const* dC) {
    if (count() == 0) return Status::ok();
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("grouped GEMM groups", count()));
    transA_.assign(count(), CUBLAS_OP_T);
    transB_.assign(count(), CUBLAS_OP_N);
    alpha_.assign(count(), 1.0f);
    beta_.assign(count(), 0.0f);
    groupSize_.assign(count(), 1);
    // A = B = C in the compute dtype, fp32 accumulation and scalars: the combinations cuBLAS
    // documents for this call are (16BF, 16BF, 16BF) and (32F, 32F, 32F) under COMPUTE_32F.
    const cudaDataType_t t = cudaTypeOf(type);
    MOE_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
        handle, transA_.data(), transB_.data(), m_.data(), n_.data(), k_.data(), alpha_.data(), dA,
        t, lda_.data(), dB, t, ldb_.data(), beta_.data(), dC, t, ldc_.data(),
        static_cast<int>(count()), groupSize_.data(), CUBLAS_COMPUTE_32F));
    return Status::ok();
  }

 private:
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, groupSize_;
  std::vector<const void*> a_, b_;
  std::vector<void*> c_;
  std::vector<cublasOperation_t> transA_, transB_;
  std::vector<float> alpha_, beta_;
};

// A weight matrix [rows, cols] in device memory of one GPU, f32 or bf16 (row-major).
class CudaMatrix final : public Matrix {
 public:
  CudaMatrix(size_t rows, size_t cols, DType dtype, int device)
      : Matrix(rows, cols, dtype), device_(device), data_(device) {}
  int device() const { return device_; }
  const void* data() const { return data_.get(); }
  const float* f32() const { return reinterpret_cast<const float*>(data_.get()); }
  DeviceBuffer<std::byte>& buffer() { return data_; }
  size_t residentBytes() const override { return data_.capacity(); }

 private:
  int device_;
  DeviceBuffer<std::byte> data_;
};

// What one call runs with: a stream, a cuBLAS handle on it, pinned staging for the one copy in and
// the one copy out, and grow-only device scratch.  Used by one call at a time (ContextPool).
struct CallContext {
  explicit CallContext(int dev)
      : device(dev), in(dev), out(dev), xs(dev), h1(dev), h3(dev), ffnOut(dev) {}

  ~CallContext() {
    // The members are released after this body: make their device current and let queued work
    // finish first.
    if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
      logWarn("kernels: cuda:", device, " cudaSetDevice at shutdown failed: ", cudaGetErrorName(e));
    }
    if (stream != nullptr) {
      if (cudaError_t e = cudaStreamSynchronize(stream.get()); e != cudaSuccess) {
        logWarn("kernels: cuda:", device, " stream sync at shutdown failed: ", cudaGetErrorName(e));
      }
    }
  }

  cudaStream_t s() const { return stream.get(); }
  cublasHandle_t blas() const { return cublas.get(); }

  // Reserves both sides of a staged copy in (`bytes`); fill pinnedIn, then sendIn().
  Status prepareIn(size_t bytes) {
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(pinnedIn, bytes));
    return reserveScratch(in, bytes);
  }
  Status sendIn(size_t bytes) {
    if (bytes == 0) return Status::ok();
    MOE_CUDA_CHECK(
        cudaMemcpyAsync(in.get(), pinnedIn.get(), bytes, cudaMemcpyHostToDevice, stream.get()));
    return Status::ok();
  }
  // Copies the first `bytes` of `out` to pinnedOut and waits for everything queued on the stream
  // (which also surfaces any asynchronous fault of the call's kernels).
  Status receiveOut(size_t bytes) {
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(pinnedOut, bytes));
    if (bytes > 0) {
      MOE_CUDA_CHECK(
          cudaMemcpyAsync(pinnedOut.get(), out.get(), bytes, cudaMemcpyDeviceToHost, stream.get()));
    }
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    return Status::ok();
  }
  template <typename T>
  T* inAt(size_t offset) const {
    return reinterpret_cast<T*>(in.get() + offset);
  }

  const int device;
  // Declared before the buffers so they are destroyed after them.
  StreamPtr stream;
  CublasPtr cublas;
  PinnedBuffer pinnedIn, pinnedOut;
  DeviceBuffer<std::byte> in, out;             // the staged inputs, the result
  DeviceBuffer<std::byte> xs, h1, h3, ffnOut;  // expertFfn intermediates / linear's bf16 x
};

// Up to kMaxContexts CallContexts, created on demand; a caller beyond that waits for one.
class ContextPool {
 public:
  // A context taken from the pool; returned (stream synchronized) when the lease dies.
  class Lease {
   public:
    Lease(ContextPool* pool, std::unique_ptr<CallContext> ctx)
        : pool_(pool), ctx_(std::move(ctx)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (ctx_ != nullptr) pool_->release(std::move(ctx_));
    }
    CallContext& operator*() const { return *ctx_; }
    CallContext* operator->() const { return ctx_.get(); }

   private:
    ContextPool* pool_;
    std::unique_ptr<CallContext> ctx_;
  };

  explicit ContextPool(int device) : device_(device) {}

  // The caller has made the device current.
  Result<Lease> acquire() {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !idle_.empty() || created_ < kMaxContexts; });
      if (!idle_.empty()) {
        std::unique_ptr<CallContext> ctx = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(ctx));
      }
      ++created_;
    }
    auto ctx = std::make_unique<CallContext>(device_);
    if (Status s = createStreamAndHandle(ctx->stream, ctx->cublas); !s.isOk()) {
      ctx.reset();
      forget();
      return makeError("cuda:" + std::to_string(device_) +
                       ": creating a stream and cuBLAS handle failed: " + s.message());
    }
    return Lease(this, std::move(ctx));
  }

 private:
  // A context comes back with nothing in flight: a call that failed half-way may have left work
  // queued that still reads its staging.  One whose stream faulted is dropped, not reused.
  void release(std::unique_ptr<CallContext> ctx) {
    if (cudaError_t e = cudaStreamSynchronize(ctx->s()); e != cudaSuccess) {
      logWarn("kernels: cuda:", device_,
              " dropping a call context whose stream failed: ", cudaGetErrorName(e));
      ctx.reset();
      forget();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle_.push_back(std::move(ctx));
    }
    cv_.notify_one();
  }
  void forget() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --created_;
    }
    cv_.notify_one();
  }

  const int device_;
  std::mutex mu_;  // guards idle_ and created_ only; never held while the device works
  std::condition_variable cv_;
  std::vector<std::unique_ptr<CallContext>> idle_;
  size_t created_ = 0;
};

FfnKind ffnKindOf(FfnActivation::Kind kind) {
  switch (kind) {
    case FfnActivation::Kind::kClampedSwiglu:
      return FfnKind::kClampedSwiglu;
    case FfnActivation::Kind::kRelu2:
      return FfnKind::kRelu2;
    case FfnActivation::Kind::kSwiglu:
      break;
  }
  return FfnKind::kSwiglu;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device)
      : device_(device), name_("cuda:" + std::to_string(device)), pool_(device) {}

  ~CudaBackend() override {
    // The pool's contexts make their device current themselves; this keeps the thread's current
    // device on ours for anything else released with the backend.
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      logWarn("kernels: ", name_, " cudaSetDevice at shutdown failed: ", cudaGetErrorName(e));
    }
  }

  // Creates the first call context, so a device that cannot run cuBLAS fails here.
  Status init() {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    auto lease = pool_.acquire();
    return lease.isOk() ? Status::ok() : lease.status();
  }

  std::string_view name() const override { return name_; }

  using Backend::upload;

  // Weights resident in f32 or bf16 for the GEMM ops; swiglu and softmaxTopk take fp32
  // activations only.  f16 is not held (no path computes with it here).
  bool supports(Op op, DType dtype) const override {
    if (dtype == DType::kF32) return true;
    return dtype == DType::kBF16 && (op == Op::kLinear || op == Op::kExpertFfn);
  }
  std::string kernelPath(DType dtype) const override {
    switch (dtype) {
      case DType::kF32:
        return "cublas-gemmex-f32 (fp32, no tf32), grouped";
      case DType::kBF16:
        return "cublas-gemmex-bf16 (tensor cores), grouped";
      default:
        return "unsupported";
    }
  }

  Result<std::unique_ptr<Matrix>> upload(std::span<const float> data, size_t rows, size_t cols,
                                         DType dtype) override {
    if (Status s = checkUpload(data, rows, cols); !s.isOk()) return makeError(s);
    if (Status s = checkUploadDType(name_, dtype); !s.isOk()) return makeError(s);
    if (dtype != DType::kF32 && dtype != DType::kBF16) {
      return makeError(name_ + ": " + std::string(dtypeName(dtype)) +
                       " weights are not supported (f32 and bf16 only); set model.dtype: bf16 "
                       "or f32");
    }
    auto m = std::make_unique<CudaMatrix>(rows, cols, dtype, device_);
    if (Status s = uploadInto(*m, data); !s.isOk()) return makeError(s);
    return std::unique_ptr<Matrix>(std::move(m));
  }

  // y = x · wᵀ through cublasGemmEx: f32 weights in fp32; bf16 weights with x rounded to bf16 on
  // the device, fp32 accumulation and output (tensor cores).
  Status linear(const Matrix& w, std::span<const float> x, size_t T, std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkLinear(w, x.size(), T, y.size()));
    auto cw = resolve(&w, "w");
    if (!cw.isOk()) return cw.status();
    const size_t N = w.rows(), K = w.cols();
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear T", T));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear N", N));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("linear K", K));
    if (y.empty()) return Status::ok();
    if (K == 0) {  // an empty sum; cuBLAS would also want ld >= 1
      std::fill(y.begin(), y.end(), 0.0f);
      return Status::ok();
    }
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    auto lease = pool_.acquire();
    if (!lease.isOk()) return lease.status();
    CallContext& c = *lease.value();
    const bool bf16 = w.dtype() == DType::kBF16;
    MOE_KERNELS_RETURN_IF_ERROR(c.prepareIn(x.size_bytes()));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.out, y.size_bytes()));
    std::memcpy(c.pinnedIn.get(), x.data(), x.size_bytes());
    MOE_KERNELS_RETURN_IF_ERROR(c.sendIn(x.size_bytes()));
    const void* xDev = c.in.get();
    if (bf16) {
      MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.xs, x.size() * sizeof(uint16_t)));
      auto* x16 = reinterpret_cast<uint16_t*>(c.xs.get());
      MOE_CUDA_CHECK(cuda::launchToBf16(c.inAt<float>(0), x.size(), x16, c.s()));
      xDev = x16;
    }
    const cudaDataType_t wType = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const float alpha = 1.0f, beta = 0.0f;
    // Column-major view (see GroupedGemm): yᵀ [N, T] = (wᵀ [K, N])ᵀ · xᵀ [K, T].
    MOE_CUBLAS_CHECK(cublasGemmEx(c.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                  static_cast<int>(T), static_cast<int>(K), &alpha,
                                  cw.value()->data(), wType, static_cast<int>(K), xDev, wType,
                                  static_cast<int>(K), &beta, c.out.get(), CUDA_R_32F,
                                  static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    MOE_KERNELS_RETURN_IF_ERROR(c.receiveOut(y.size_bytes()));
    std::memcpy(y.data(), c.pinnedOut.get(), y.size_bytes());
    return Status::ok();
  }

  Status swiglu(std::span<const float> gate, std::span<const float> up,
                std::span<float> out) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkSwiglu(gate.size(), up.size(), out.size()));
    if (out.empty()) return Status::ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    auto lease = pool_.acquire();
    if (!lease.isOk()) return lease.status();
    CallContext& c = *lease.value();
    StageLayout layout;
    const size_t gateAt = layout.add<float>(gate.size()), upAt = layout.add<float>(up.size());
    MOE_KERNELS_RETURN_IF_ERROR(c.prepareIn(layout.size()));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.out, out.size_bytes()));
    std::memcpy(c.pinnedIn.get() + gateAt, gate.data(), gate.size_bytes());
    std::memcpy(c.pinnedIn.get() + upAt, up.data(), up.size_bytes());
    MOE_KERNELS_RETURN_IF_ERROR(c.sendIn(layout.size()));
    MOE_CUDA_CHECK(cuda::launchSwiglu(c.inAt<float>(gateAt), c.inAt<float>(upAt),
                                      reinterpret_cast<float*>(c.out.get()), out.size(), c.s()));
    MOE_KERNELS_RETURN_IF_ERROR(c.receiveOut(out.size_bytes()));
    std::memcpy(out.data(), c.pinnedOut.get(), out.size_bytes());
    return Status::ok();
  }

  Status softmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k, bool renormalize,
                     std::span<uint32_t> ids, std::span<float> weights) override {
    MOE_KERNELS_RETURN_IF_ERROR(
        checkSoftmaxTopk(logits.size(), T, E, k, ids.size(), weights.size()));
    if (T == 0) return Status::ok();
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    auto lease = pool_.acquire();
    if (!lease.isOk()) return lease.status();
    CallContext& c = *lease.value();
    StageLayout result;  // ids then weights, one copy out
    const size_t idsAt = result.add<uint32_t>(ids.size()), weightsAt = result.add<float>(T * k);
    MOE_KERNELS_RETURN_IF_ERROR(c.prepareIn(logits.size_bytes()));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.out, result.size()));
    std::memcpy(c.pinnedIn.get(), logits.data(), logits.size_bytes());
    MOE_KERNELS_RETURN_IF_ERROR(c.sendIn(logits.size_bytes()));
    MOE_CUDA_CHECK(cuda::launchSoftmaxTopk(
        c.inAt<float>(0), T, E, k, renormalize, reinterpret_cast<uint32_t*>(c.out.get() + idsAt),
        reinterpret_cast<float*>(c.out.get() + weightsAt), c.s()));
    MOE_KERNELS_RETURN_IF_ERROR(c.receiveOut(result.size()));
    std::memcpy(ids.data(), c.pinnedOut.get() + idsAt, ids.size_bytes());
    std::memcpy(weights.data(), c.pinnedOut.get() + weightsAt, weights.size_bytes());
    return Status::ok();
  }

  // The whole call on the device with one copy in and one copy out:
  //   stage x, rows, weights, the entry → group map, the row → entries CSR, the group table and
  //   the grouped GEMMs' pointer arrays; copy them in;
  //   gather every entry's row (× weight when weightOnInput) into xs in the compute dtype;
  //   h1 = xs·w1ᵀ and h3 = xs·w3ᵀ as two grouped GEMMs over the non-empty segments;
  //   h1 = act(h1 + b1, h3 + b3) in one kernel over all entries (non-gated: relu(h3 + b3)²);
  //   out = h1·w2ᵀ as one grouped GEMM;
  //   y[r] = Σ weight · (out + b2) over the entries naming r, in segment order (a block per row,
  //   no atomics: deterministic, and the CPU backends' summation order); copy y out.
  // The GEMMs read and write the weights' dtype (bf16: h1, h3 and out are rounded to bf16, as
  // the grouped GEMM writes only its input type) and accumulate in fp32.
  // bf16 rows are widened to fp32 while they are staged (the device rounds them back exactly);
  // staging them as bf16 would halve the copy in, a follow-up that needs a GPU to test.
  Status expertFfn(const ExpertSegments& segments, Activations x, size_t R, size_t H,
                   std::span<float> y) override {
    MOE_KERNELS_RETURN_IF_ERROR(checkExpertSegments(segments, x.size(), R, H, y.size()));
    const size_t S = segments.experts.size();
    const size_t entries = segments.offsets.empty() ? 0 : segments.offsets[S];
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn H", H));
    MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn segments", S));

    // Resolve every matrix and plan the groups before touching the device, so a bad handle (or
    // a call mixing dtypes) fails cleanly.
    struct GroupWeights {
      const CudaMatrix* w1;  // null for a non-gated FFN
      const CudaMatrix* w3;
      const CudaMatrix* w2;
    };
    std::optional<DType> dtype;
    std::vector<FfnGroup> groups;
    std::vector<GroupWeights> groupWeights;
    size_t xElements = 0, hElements = 0;  // the groups' blocks in xs/ffnOut and in h1/h3
    for (size_t s = 0; s < S; ++s) {
      const ExpertFfnWeights& e = segments.experts[s];
      auto w1 = e.activation.gated()
                    ? resolve(e.w1, "w1")
                    : Result<const CudaMatrix*>(static_cast<const CudaMatrix*>(nullptr));
      auto w3 = resolve(e.w3, "w3");
      auto w2 = resolve(e.w2, "w2");
      if (!w1.isOk()) return w1.status();
      if (!w3.isOk()) return w3.status();
      if (!w2.isOk()) return w2.status();
      for (const CudaMatrix* m : {w1.value(), w3.value(), w2.value()}) {
        if (m == nullptr) continue;
        if (!dtype) dtype = m->dtype();
        if (m->dtype() != *dtype) {
          return Status::error(name_ + ": expertFfn: segment " + std::to_string(s) + " mixes " +
                               std::string(dtypeName(m->dtype())) + " and " +
                               std::string(dtypeName(*dtype)) +
                               " weights; one call computes in one dtype");
        }
      }
      const float* bias[3] = {nullptr, nullptr, nullptr};
      const Matrix* biasIn[3] = {e.b1, e.b3, e.b2};
      const char* biasName[3] = {"b1", "b3", "b2"};
      for (size_t b = 0; b < 3; ++b) {
        if (biasIn[b] == nullptr) continue;
        auto cb = resolve(biasIn[b], biasName[b]);
        if (!cb.isOk()) return cb.status();
        bias[b] = cb.value()->f32();  // f32 (checkExpertSegments)
      }
      const size_t I = e.w3->rows();
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn I", I));
      const size_t n = segments.offsets[s + 1] - segments.offsets[s];
      if (n == 0) continue;
      MOE_KERNELS_RETURN_IF_ERROR(checkFitsInt("expertFfn segment rows", n));
      FfnGroup g{};
      g.xOffset = xElements;
      g.hOffset = hElements;
      g.b1 = bias[0];
      g.b3 = bias[1];
      g.b2 = bias[2];
      g.firstEntry = segments.offsets[s];
      g.rows = static_cast<uint32_t>(n);
      g.inter = static_cast<uint32_t>(I);
      g.kind = ffnKindOf(e.activation.kind);
      g.alpha = e.activation.alpha;
      g.limit = e.activation.limit;
      groups.push_back(g);
      groupWeights.push_back({w1.value(), w3.value(), w2.value()});
      xElements += alignUp(n * H, kGroupAlignElements);
      hElements += alignUp(n * I, kGroupAlignElements);
    }
    if (y.empty()) return Status::ok();
    if (entries == 0) {  // no row is named: y is all zeros, nothing to run
      std::fill(y.begin(), y.end(), 0.0f);
      return Status::ok();
    }
    const ComputeType type = dtype == DType::kBF16 ? ComputeType::kBF16 : ComputeType::kF32;
    const size_t es = elementBytes(type);
    const size_t G = groups.size();

    // entry → group, and row → entries in segment order (the summation order of the combine).
    std::vector<uint32_t> entryGroup(entries);
    for (size_t g = 0; g < G; ++g) {
      std::fill_n(entryGroup.begin() + groups[g].firstEntry, groups[g].rows,
                  static_cast<uint32_t>(g));
    }
    std::vector<uint32_t> rowOffsets(R + 1, 0), rowEntries(entries);
    for (uint32_t r : segments.rows) ++rowOffsets[size_t{r} + 1];
    for (size_t r = 0; r < R; ++r) rowOffsets[r + 1] += rowOffsets[r];
    {
      std::vector<uint32_t> cursor(rowOffsets.begin(), rowOffsets.end() - 1);
      for (size_t e = 0; e < entries; ++e) {
        rowEntries[cursor[segments.rows[e]]++] = static_cast<uint32_t>(e);
      }
    }

    // Declared before the lease: cuBLAS is given their host arrays, which must outlive any work
    // the lease's release still waits for.
    GroupedGemm gemm1, gemm3, gemm2;  // x·w1ᵀ, x·w3ᵀ, h·w2ᵀ
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    auto lease = pool_.acquire();
    if (!lease.isOk()) return lease.status();
    CallContext& c = *lease.value();
    // Scratch first: the GEMMs' pointer arrays name addresses inside it.
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.xs, xElements * es));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.h1, hElements * es));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.h3, hElements * es));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.ffnOut, xElements * es));
    MOE_KERNELS_RETURN_IF_ERROR(reserveScratch(c.out, y.size_bytes()));

    bool emptyInter = false;  // some expert has I == 0: its out block is an empty sum
    for (size_t g = 0; g < G; ++g) {
      const FfnGroup& fg = groups[g];
      const size_t n = fg.rows, I = fg.inter;
      if (I == 0) {
        emptyInter = true;
        continue;
      }
      std::byte* xsG = c.xs.get() + fg.xOffset * es;
      std::byte* h1G = c.h1.get() + fg.hOffset * es;
      std::byte* h3G = c.h3.get() + fg.hOffset * es;
      std::byte* outG = c.ffnOut.get() + fg.xOffset * es;
      const GroupWeights& w = groupWeights[g];
      if (w.w1 != nullptr) gemm1.add(I, n, H, w.w1->data(), xsG, h1G);  // h1 [n, I]
      gemm3.add(I, n, H, w.w3->data(), xsG, h3G);                       // h3 [n, I]
      gemm2.add(H, n, I, w.w2->data(), h1G, outG);                      // out [n, H]
    }

    StageLayout layout;
    const size_t xAt = layout.add<float>(x.size());
    const size_t rowsAt = layout.add<uint32_t>(entries);
    const size_t weightsAt = layout.add<float>(entries);
    const size_t entryGroupAt = layout.add<uint32_t>(entries);
    const size_t rowOffsetsAt = layout.add<uint32_t>(R + 1);
    const size_t rowEntriesAt = layout.add<uint32_t>(entries);
    const size_t groupsAt = layout.add<FfnGroup>(G);
    GroupedGemm* gemms[3] = {&gemm1, &gemm3, &gemm2};
    size_t ptrsAt[3][3];  // [gemm][a, b, c]
    for (size_t i = 0; i < 3; ++i) {
      for (size_t j = 0; j < 3; ++j) ptrsAt[i][j] = layout.add<void*>(gemms[i]->count());
    }
    MOE_KERNELS_RETURN_IF_ERROR(c.prepareIn(layout.size()));
    std::byte* pin = c.pinnedIn.get();
    x.widenInto({reinterpret_cast<float*>(pin + xAt), x.size()});
    std::memcpy(pin + rowsAt, segments.rows.data(), entries * sizeof(uint32_t));
    std::memcpy(pin + weightsAt, segments.weights.data(), entries * sizeof(float));
    std::memcpy(pin + entryGroupAt, entryGroup.data(), entries * sizeof(uint32_t));
    std::memcpy(pin + rowOffsetsAt, rowOffsets.data(), (R + 1) * sizeof(uint32_t));
    std::memcpy(pin + rowEntriesAt, rowEntries.data(), entries * sizeof(uint32_t));
    std::memcpy(pin + groupsAt, groups.data(), G * sizeof(FfnGroup));
    for (size_t i = 0; i < 3; ++i) {
      const size_t n = gemms[i]->count();
      if (n == 0) continue;  // (a gated-free call has no W1 GEMM)
      std::memcpy(pin + ptrsAt[i][0], gemms[i]->a().data(), n * sizeof(void*));
      std::memcpy(pin + ptrsAt[i][1], gemms[i]->b().data(), n * sizeof(void*));
      std::memcpy(pin + ptrsAt[i][2], gemms[i]->c().data(), n * sizeof(void*));
    }
    MOE_KERNELS_RETURN_IF_ERROR(c.sendIn(layout.size()));

    const auto* entryGroupDev = c.inAt<const uint32_t>(entryGroupAt);
    const auto* groupsDev = c.inAt<const FfnGroup>(groupsAt);
    const float* weightsDev = c.inAt<const float>(weightsAt);
    // weightOnInput (Llama 4): the weights scale the gathered rows and the output is unweighted.
    const bool onInput = segments.weightOnInput;
    MOE_CUDA_CHECK(cuda::launchGatherEntries(
        c.inAt<const float>(xAt), c.inAt<const uint32_t>(rowsAt), onInput ? weightsDev : nullptr,
        entryGroupDev, groupsDev, entries, H, type, c.xs.get(), c.s()));
    for (size_t i = 0; i < 3; ++i) {
      if (i == 2) {  // between the up projections and the down projection: the activation
        MOE_CUDA_CHECK(cuda::launchExpertActivation(c.h1.get(), c.h3.get(), type, entryGroupDev,
                                                    groupsDev, entries, c.s()));
        if (emptyInter) {
          MOE_CUDA_CHECK(cudaMemsetAsync(c.ffnOut.get(), 0, xElements * es, c.s()));
        }
      }
      MOE_KERNELS_RETURN_IF_ERROR(gemms[i]->run(
          c.blas(), type, c.inAt<const void* const>(ptrsAt[i][0]),
          c.inAt<const void* const>(ptrsAt[i][1]), c.inAt<void* const>(ptrsAt[i][2])));
    }
    MOE_CUDA_CHECK(cuda::launchCombineRows(
        c.ffnOut.get(), type, onInput ? nullptr : weightsDev, c.inAt<const uint32_t>(rowOffsetsAt),
        c.inAt<const uint32_t>(rowEntriesAt), entryGroupDev, groupsDev, R, H,
        reinterpret_cast<float*>(c.out.get()), c.s()));
    MOE_KERNELS_RETURN_IF_ERROR(c.receiveOut(y.size_bytes()));
    std::memcpy(y.data(), c.pinnedOut.get(), y.size_bytes());
    return Status::ok();
  }

 private:
  Result<const CudaMatrix*> resolve(const Matrix* m, std::string_view what) const {
    auto cm = asBackendMatrix<CudaMatrix>(m, name_, what);
    if (cm.isOk() && cm.value()->device() != device_) {
      return makeError(name_ + ": " + std::string(what) + " lives on GPU " +
                       std::to_string(cm.value()->device()));
    }
    return cm;
  }

  // Rounds on the host (bf16: nearest even) and copies on a pooled stream; returns once the
  // matrix is resident (the host span may die as soon as upload returns).
  Status uploadInto(CudaMatrix& m, std::span<const float> data) {
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    if (data.empty()) return Status::ok();
    std::vector<uint16_t> half;  // before the lease: it outlives the copy in every case
    auto lease = pool_.acquire();
    if (!lease.isOk()) return lease.status();
    CallContext& c = *lease.value();
    const void* src = data.data();
    size_t bytes = data.size_bytes();
    if (m.dtype() == DType::kBF16) {
      half.resize(data.size());
      std::transform(data.begin(), data.end(), half.begin(), floatToBf16);
      src = half.data();
      bytes = half.size() * sizeof(uint16_t);
    }
    MOE_KERNELS_RETURN_IF_ERROR(m.buffer().reserve(bytes));
    // Pageable source: weights are uploaded once, so no pinned buffer the size of the largest
    // matrix is kept per context.
    MOE_CUDA_CHECK(cudaMemcpyAsync(m.buffer().get(), src, bytes, cudaMemcpyHostToDevice, c.s()));
    MOE_CUDA_CHECK(cudaStreamSynchronize(c.s()));
    return Status::ok();
  }

  const int device_;
  const std::string name_;
  ContextPool pool_;
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

namespace {

// Fills `buffer` with `count` bf16 values drawn uniformly from ±0.05 (synchronous copy).
Status fillRandomBf16(DeviceBuffer<uint16_t>& buffer, size_t count, std::mt19937& rng) {
  MOE_KERNELS_RETURN_IF_ERROR(buffer.reserve(count));
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  std::vector<uint16_t> host(count);
  for (uint16_t& v : host) v = floatToBf16(dist(rng));
  if (count > 0) {
    MOE_CUDA_CHECK(
        cudaMemcpy(buffer.get(), host.data(), count * sizeof(uint16_t), cudaMemcpyHostToDevice));
  }
  return Status::ok();
}

struct EventDestroy {
  void operator()(cudaEvent_t e) const {
    if (cudaError_t err = cudaEventDestroy(e); err != cudaSuccess) {
      logWarn("kernels: cudaEventDestroy failed: ", cudaGetErrorName(err));
    }
  }
};
using EventPtr = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDestroy>;

double medianOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The body of compareCudaExpertGemms, with the device current.
Result<CudaGemmComparison> compareOnDevice(int device, size_t E, size_t rows, size_t H, size_t I,
                                           int repeats) {
  StreamPtr stream;
  CublasPtr cublas;
  MOE_KERNELS_RETURN_IF_ERROR(createStreamAndHandle(stream, cublas));
  cudaEvent_t rawStart = nullptr, rawStop = nullptr;
  MOE_CUDA_CHECK(cudaEventCreate(&rawStart));
  EventPtr start(rawStart);
  MOE_CUDA_CHECK(cudaEventCreate(&rawStop));
  EventPtr stop(rawStop);

  // Expert e's rows are block e of x [E·rows, H] (and of h1/h3 [E·rows, I], out [E·rows, H]):
  // the grouped GEMMs see E groups, the dense ones one matrix of E·rows rows.
  const size_t total = E * rows;
  DeviceBuffer<uint16_t> w1(device), w3(device), w2(device), x(device), h1(device), h3(device),
      out(device);
  DeviceBuffer<void*> ptrs(device);
  std::mt19937 rng(7);
  MOE_KERNELS_RETURN_IF_ERROR(fillRandomBf16(w1, E * I * H, rng));
  MOE_KERNELS_RETURN_IF_ERROR(fillRandomBf16(w3, E * I * H, rng));
  MOE_KERNELS_RETURN_IF_ERROR(fillRandomBf16(w2, E * H * I, rng));
  MOE_KERNELS_RETURN_IF_ERROR(fillRandomBf16(x, total * H, rng));
  MOE_KERNELS_RETURN_IF_ERROR(h1.reserve(total * I));
  MOE_KERNELS_RETURN_IF_ERROR(h3.reserve(total * I));
  MOE_KERNELS_RETURN_IF_ERROR(out.reserve(total * H));

  GroupedGemm grouped[3];  // x·w1ᵀ, x·w3ᵀ, h1·w2ᵀ
  for (size_t e = 0; e < E; ++e) {
    const uint16_t* xe = x.get() + e * rows * H;
    uint16_t* h1e = h1.get() + e * rows * I;
    grouped[0].add(I, rows, H, w1.get() + e * I * H, xe, h1e);
    grouped[1].add(I, rows, H, w3.get() + e * I * H, xe, h3.get() + e * rows * I);
    grouped[2].add(H, rows, I, w2.get() + e * H * I, h1e, out.get() + e * rows * H);
  }
  MOE_KERNELS_RETURN_IF_ERROR(ptrs.reserve(9 * E));
  for (size_t i = 0; i < 3; ++i) {
    const void* arrays[3] = {grouped[i].a().data(), grouped[i].b().data(), grouped[i].c().data()};
    for (size_t j = 0; j < 3; ++j) {
      MOE_CUDA_CHECK(cudaMemcpy(ptrs.get() + (3 * i + j) * E, arrays[j], E * sizeof(void*),
                                cudaMemcpyHostToDevice));
    }
  }
  auto runGrouped = [&]() -> Status {
    for (size_t i = 0; i < 3; ++i) {
      void* const* p = ptrs.get() + 3 * i * E;
      MOE_KERNELS_RETURN_IF_ERROR(
          grouped[i].run(cublas.get(), ComputeType::kBF16, p, p + E, p + 2 * E));
    }
    return Status::ok();
  };
  // The same three GEMMs dense: y[total, m] = x[total, k] · w[m, k]ᵀ, bf16 in and out.
  auto dense = [&](size_t m, size_t k, const void* w, const void* in, void* y) -> Status {
    const float alpha = 1.0f, beta = 0.0f;
    MOE_CUBLAS_CHECK(cublasGemmEx(cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m),
                                  static_cast<int>(total), static_cast<int>(k), &alpha, w,
                                  CUDA_R_16BF, static_cast<int>(k), in, CUDA_R_16BF,
                                  static_cast<int>(k), &beta, y, CUDA_R_16BF, static_cast<int>(m),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return Status::ok();
  };
  auto runDense = [&]() -> Status {
    MOE_KERNELS_RETURN_IF_ERROR(dense(I, H, w1.get(), x.get(), h1.get()));
    MOE_KERNELS_RETURN_IF_ERROR(dense(I, H, w3.get(), x.get(), h3.get()));
    return dense(H, I, w2.get(), h1.get(), out.get());
  };
  auto timeIt = [&](auto&& body) -> Result<double> {
    MOE_KERNELS_RETURN_IF_ERROR(body());  // warm-up (heuristics, lazy module loading)
    std::vector<double> seconds;
    for (int r = 0; r < repeats; ++r) {
      MOE_CUDA_CHECK(cudaEventRecord(start.get(), stream.get()));
      MOE_KERNELS_RETURN_IF_ERROR(body());
      MOE_CUDA_CHECK(cudaEventRecord(stop.get(), stream.get()));
      MOE_CUDA_CHECK(cudaEventSynchronize(stop.get()));
      float ms = 0.0f;
      MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
      seconds.push_back(double(ms) * 1e-3);
    }
    return medianOf(std::move(seconds));
  };
  auto groupedSeconds = timeIt(runGrouped);
  if (!groupedSeconds.isOk()) return groupedSeconds.status();
  auto denseSeconds = timeIt(runDense);
  if (!denseSeconds.isOk()) return denseSeconds.status();
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  return CudaGemmComparison{groupedSeconds.value(), denseSeconds.value(),
                            3.0 * 2.0 * double(total) * double(H) * double(I)};
}

}  // namespace

Result<CudaGemmComparison> compareCudaExpertGemms(int device, size_t experts, size_t rowsPerExpert,
                                                  size_t H, size_t I, int repeats) {
  if (experts == 0 || rowsPerExpert == 0 || H == 0 || I == 0 || repeats < 1) {
    return makeError("compareCudaExpertGemms: every size and repeats must be positive");
  }
  for (auto [what, v] : {std::pair<const char*, size_t>{"rows", experts * rowsPerExpert},
                         {"hidden", H},
                         {"intermediate", I}}) {
    if (Status s = checkFitsInt(what, v); !s.isOk()) return makeError(s);
  }
  const CudaDeviceQuery devices = queryCudaDevices();
  if (device < 0 || device >= devices.count) {
    return makeError("compareCudaExpertGemms: no CUDA device " + std::to_string(device) +
                     (devices.why.empty() ? std::string() : " (" + devices.why + ")"));
  }
  MOE_CUDA_CHECK(cudaSetDevice(device));
  return compareOnDevice(device, experts, rowsPerExpert, H, I, repeats);
}

}  // namespace moe::kernels
