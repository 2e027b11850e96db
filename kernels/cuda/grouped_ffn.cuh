// The per-call plan of the CUDA backend's grouped expert FFN, as the kernels read it: one FfnGroup
// per non-empty segment (staged to the device with the call's inputs) and the compute dtype.
// Shared by the host code (C++20) and the kernels (nvcc, C++17): plain structs only.
#pragma once

#include <cstdint>

namespace moe::kernels::cuda {

// The dtype the grouped GEMMs read and write: the weights' resident dtype.  Activations are
// rounded to it on the device; accumulation is fp32 either way.
enum class ComputeType : uint32_t { kF32 = 0, kBF16 = 1 };

enum class FfnKind : uint32_t { kSwiglu = 0, kClampedSwiglu = 1, kRelu2 = 2 };

// One non-empty segment s of an ExpertSegments call, as a group of the grouped GEMMs.  Its rows
// are entries firstEntry .. firstEntry + rows of the call (segment order); entry firstEntry + j
// sits at row j of the group's blocks:
//   xs and the W2 output, [rows, H]: from element xOffset;  h1 and h3, [rows, inter]: from hOffset
// (offsets in elements of the compute dtype, multiples of 8 so every block starts 16-byte
// aligned, as cuBLAS wants of bf16 pointers).
struct FfnGroup {
  uint64_t xOffset;
  uint64_t hOffset;
  const float* b1;  // [inter] on the device, or null
  const float* b3;  // [inter] or null
  const float* b2;  // [H] or null
  uint32_t firstEntry;
  uint32_t rows;
  uint32_t inter;
  FfnKind kind;
  float alpha;  // kClampedSwiglu only
  float limit;  // kClampedSwiglu only
};

}  // namespace moe::kernels::cuda
