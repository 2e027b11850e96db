// The reference backend: plain loops over host memory, accumulating in double, never optimized.
// It defines what every other backend must compute; backend_ops_test compares them all with it.
// Keep it obviously correct rather than fast.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace moe::kernels {

// Stateless, so safe to call from several threads at once.
std::unique_ptr<Backend> makeReferenceBackend();

}  // namespace moe::kernels
