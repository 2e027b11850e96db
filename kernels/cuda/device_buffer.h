// RAII device memory for the CUDA backend: DeviceBuffer<T> owns one cudaMalloc'd array, freed on
// the device it came from.  reserve() only ever grows it, so scratch reused across calls costs one
// allocation per size increase and none in steady state.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "common/result.h"
#include "kernels/cuda/cuda_check.h"

namespace moe::kernels::cuda {

// Frees `ptr` on `device`, restoring the calling thread's current device; failures are logged
// (a destructor has nowhere to return them).
void freeOnDevice(void* ptr, int device);

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int device) : ptr_(nullptr, Free{device}) {}

  T* get() const { return ptr_.get(); }
  size_t capacity() const { return capacity_; }

  // Makes room for at least `count` elements; the contents are not preserved when it grows.
  // The caller has made `device` current.
  Status reserve(size_t count) {
    if (count <= capacity_) return Status::ok();
    ptr_.reset();  // free first: the old contents are not needed and memory may be tight
    capacity_ = 0;
    void* raw = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&raw, count * sizeof(T)));
    ptr_.reset(static_cast<T*>(raw));
    capacity_ = count;
    return Status::ok();
  }

 private:
  struct Free {
    int device;
    void operator()(T* p) const { freeOnDevice(p, device); }
  };
  std::unique_ptr<T, Free> ptr_;
  size_t capacity_ = 0;
};

}  // namespace moe::kernels::cuda
