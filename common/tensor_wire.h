// Tensors on the wire: checked, zero-copy views over a message's bytes, and fp32 encoding of
// results. Cap'n Proto places Data blobs on 8-byte boundaries, so an f32 view needs no copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/activations.h"
#include "common/dtype.h"
#include "common/proto/moe.capnp.h"
#include "common/result.h"

namespace moe {

// A decoded tensor: dtype known, data size == product(shape) × element size.
struct TensorView {
  DType dtype;
  std::vector<uint32_t> shape;
  std::span<const std::byte> data;
  uint64_t numel() const;
};

// `what` names the tensor in errors ("hidden: data has 4000 bytes, shape [1, 1024] × f32 needs
// 4096"). Rejects unknown dtypes and size mismatches (truncated data).
Result<TensorView> decodeTensor(proto::Tensor::Reader tensor, std::string_view what);

// Checks a 2-D shape [rows, cols] with cols == `cols` (rows unconstrained here).
Status expect2d(const TensorView& t, uint32_t cols, std::string_view what);

// fp32 rows of a tensor: a view straight into the message when it is f32, else a widened copy.
class F32Rows {
 public:
  explicit F32Rows(const TensorView& t);
  explicit F32Rows(std::vector<float> owned) : owned_(std::move(owned)), values_(owned_) {}
  std::span<const float> values() const { return values_; }

 private:
  std::vector<float> owned_;
  std::span<const float> values_;
};

// A tensor's rows as backend activations: f32 and bf16 viewed straight in the message (copied
// when misaligned), f16 widened to f32. A shard's input rows: a bf16 wire's rows reach the
// backend as they arrived.
class ActivationRows {
 public:
  explicit ActivationRows(const TensorView& t);
  const Activations& view() const { return view_; }

 private:
  std::vector<float> f32_;
  std::vector<uint16_t> bf16_;
  Activations view_;
};

// Index of the first NaN/Inf element, or -1. Used to reject non-finite inputs with a clear error.
int64_t firstNonFinite(std::span<const float> values);

// Sets `tensor` to f32 with `shape` and returns its (uninitialised) payload to write into: results
// are computed straight into the reply message.
std::span<float> initF32(proto::Tensor::Builder tensor, std::span<const uint32_t> shape);

// Sets `tensor` to bf16 with `shape` holding `values` (product(shape) of them) rounded to nearest
// even: results and shard rows on a bf16 wire (router.wire_dtype).
void encodeBf16(proto::Tensor::Builder tensor, std::span<const uint32_t> shape,
                std::span<const float> values);

proto::DType toProto(DType t);
std::string shapeString(std::span<const uint32_t> shape);

}  // namespace moe
