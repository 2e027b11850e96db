// Error text for MOE_CUDA_CHECK / MOE_CUBLAS_CHECK; see cuda_check.h.
#include "kernels/cuda/cuda_check.h"

namespace moe::kernels::cuda {

std::string describeCudaFailure(const char* statement, cudaError_t error, const char* file,
                                int line) {
  return std::string("CUDA error ") + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) +
         ") in `" + statement + "` at " + file + ":" + std::to_string(line);
}

std::string describeCublasFailure(const char* statement, cublasStatus_t status, const char* file,
                                  int line) {
  return std::string("cuBLAS error ") + cublasGetStatusName(status) + " (" +
         cublasGetStatusString(status) + ") in `" + statement + "` at " + file + ":" +
         std::to_string(line);
}

}  // namespace moe::kernels::cuda
