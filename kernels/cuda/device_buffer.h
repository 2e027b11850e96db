// RAII memory for the CUDA backend: DeviceBuffer<T> owns one cudaMalloc'd array, freed on the
// device it came from; PinnedBuffer owns page-locked host memory (cudaMallocHost), the staging area
// that lets a stream's copies run asynchronously.  reserve() only ever grows them, so scratch
// reused across calls costs one allocation per size increase and none in steady state.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
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

// Page-locked host bytes, freed with cudaFreeHost (failures logged).
class PinnedBuffer {
 public:
  std::byte* get() const { return ptr_.get(); }
  size_t capacity() const { return capacity_; }

  // Makes room for at least `bytes`; the contents are not preserved when it grows.  The caller has
  // made the backend's device current.
  Status reserve(size_t bytes);

 private:
  struct Free {
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, Free> ptr_;
  size_t capacity_ = 0;
};

// Grows scratch `buffer` to hold `count` elements, by at least half its size when it grows, so a
// slowly rising batch size costs few reallocations (cudaFree synchronizes the device).
template <typename Buffer>
Status reserveScratch(Buffer& buffer, size_t count) {
  if (count <= buffer.capacity()) return Status::ok();
  return buffer.reserve(std::max(count, buffer.capacity() + buffer.capacity() / 2));
}

}  // namespace moe::kernels::cuda
