// CUDA_CHECK / CUBLAS_CHECK for host code: a failing CUDA runtime or cuBLAS call returns a Status
// that names the statement, the error and the file:line, so a GPU fault reaches the RPC caller as
// a readable error instead of an abort.  Only for functions returning moe::Status.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/result.h"

namespace moe::kernels::cuda {

std::string describeCudaFailure(const char* statement, cudaError_t error, const char* file,
                                int line);
std::string describeCublasFailure(const char* statement, cublasStatus_t status, const char* file,
                                  int line);

}  // namespace moe::kernels::cuda

#define MOE_CUDA_CHECK(statement)                                            \
  do {                                                                       \
    const cudaError_t moe_cuda_error_ = (statement);                         \
    if (moe_cuda_error_ != cudaSuccess) {                                    \
      return ::moe::Status::error(::moe::kernels::cuda::describeCudaFailure( \
          #statement, moe_cuda_error_, __FILE__, __LINE__));                 \
    }                                                                        \
  } while (0)

#define MOE_CUBLAS_CHECK(statement)                                            \
  do {                                                                         \
    const cublasStatus_t moe_cublas_status_ = (statement);                     \
    if (moe_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                         \
      return ::moe::Status::error(::moe::kernels::cuda::describeCublasFailure( \
          #statement, moe_cublas_status_, __FILE__, __LINE__));                \
    }                                                                          \
  } while (0)
