// The fast CPU backend: GEMMs through oneDNN (bf16 weights where the CPU has native bf16, packed
// once at upload into oneDNN's blocked layout; f32 below 512 rows) and OpenBLAS (cblas_sgemm: f32
// from 512 rows, where it measures faster), chosen at run time (kernelPath says which); grouped
// expert FFN by gathering each segment's rows into one contiguous block. Used when no GPU is
// usable.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace moe::kernels {

// Calls are serialized by an internal mutex (the backend reuses grow-only scratch buffers), so
// it may be shared between threads; for parallelism use one backend per executor thread.
std::unique_ptr<Backend> makeBlasBackend();

// Threads OpenBLAS and oneDNN use in this process (n >= 1). Several shards on one machine should
// split its cores between them: oversubscribed BLAS threads slow every shard down.
void setBlasThreads(int n);

}  // namespace moe::kernels
