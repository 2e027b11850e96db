// The CUDA backend: weights live in device memory in f32 or bf16; GEMMs run through cuBLAS
// (cublasGemmEx for linear; for the expert FFN one cublasGemmGroupedBatchedEx per projection over
// all of a call's experts), bf16 on tensor cores with fp32 accumulation, f32 in plain fp32 (no
// TF32); routing, activation, gather and combine are small kernels of their own (*.cu/*.cuh).
// Plain C++ header (no CUDA includes) so the backend factory compiles the same with or without
// CUDA; only built when MOE_HAVE_CUDA.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/result.h"
#include "kernels/backend.h"

namespace moe::kernels {

// Devices the CUDA runtime reports, or count 0 with `why` saying what failed (no driver, no
// device).  Never aborts: a machine without a GPU is a normal configuration.
struct CudaDeviceQuery {
  int count = 0;
  std::string why;
};
CudaDeviceQuery queryCudaDevices();

// A backend bound to GPU `device`: every entry point makes that device current first, because
// callers may use any thread.  Each call takes one of up to 4 call contexts (a stream, a cuBLAS
// handle on it, pinned staging, grow-only device scratch; more callers wait), copies its inputs in
// with one transfer, runs on that stream, copies its result out with one transfer and returns once
// it is in host memory.  Concurrent calls run on different streams; no lock is held while the
// device works.
Result<std::unique_ptr<Backend>> createCudaBackend(int device);

// Device time of an expert FFN's three GEMMs alone (bf16 in and out, fp32 accumulation), for the
// benchmark: as three grouped GEMMs over `experts` groups of `rowsPerExpert` rows (what
// expertFfn runs) and as three dense GEMMs of the same total shape, x [experts·rowsPerExpert,
// hidden] · w1ᵀ, · w3ᵀ and h [.., intermediate] · w2ᵀ.  Medians of `repeats` timed runs after one
// warm-up, measured with CUDA events; random weights and inputs.
struct CudaGemmComparison {
  double groupedSeconds = 0.0;
  double denseSeconds = 0.0;
  double flops = 0.0;  // of either
};
Result<CudaGemmComparison> compareCudaExpertGemms(int device, size_t experts, size_t rowsPerExpert,
                                                  size_t hidden, size_t intermediate, int repeats);

}  // namespace moe::kernels
