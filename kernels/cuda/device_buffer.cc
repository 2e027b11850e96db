// Freeing device and pinned host memory from any thread; see device_buffer.h.
#include "kernels/cuda/device_buffer.h"

#include "common/log.h"

namespace moe::kernels::cuda {
namespace {

void logFailure(const char* what, cudaError_t error, int device) {
  logWarn("kernels: ", what, " on GPU ", device, " failed: ", cudaGetErrorName(error), " (",
          cudaGetErrorString(error), ")");
}

}  // namespace

void freeOnDevice(void* ptr, int device) {
  if (ptr == nullptr) return;
  // The buffer may die on a thread whose current device is another GPU: switch for the free and
  // switch back, so the destructor has no visible side effect on the thread.
  int previous = -1;
  if (cudaError_t e = cudaGetDevice(&previous); e != cudaSuccess) {
    logFailure("cudaGetDevice", e, device);
    previous = -1;
  }
  if (previous != device) {
    if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
      logFailure("cudaSetDevice", e, device);
  }
  if (cudaError_t e = cudaFree(ptr); e != cudaSuccess) logFailure("cudaFree", e, device);
  if (previous >= 0 && previous != device) {
    if (cudaError_t e = cudaSetDevice(previous); e != cudaSuccess) {
      logFailure("restoring the current device", e, previous);
    }
  }
}

Status PinnedBuffer::reserve(size_t bytes) {
  if (bytes <= capacity_) return Status::ok();
  ptr_.reset();
  capacity_ = 0;
  void* raw = nullptr;
  MOE_CUDA_CHECK(cudaMallocHost(&raw, bytes));
  ptr_.reset(static_cast<std::byte*>(raw));
  capacity_ = bytes;
  return Status::ok();
}

void PinnedBuffer::Free::operator()(std::byte* p) const {
  if (p == nullptr) return;
  if (cudaError_t e = cudaFreeHost(p); e != cudaSuccess) {
    logWarn("kernels: cudaFreeHost failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e),
            ")");
  }
}

}  // namespace moe::kernels::cuda
