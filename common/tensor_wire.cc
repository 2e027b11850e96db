// Tensor decoding and encoding for the RPC boundary.
#include "common/tensor_wire.h"

#include <cmath>
#include <cstring>

namespace moe {

uint64_t TensorView::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shapeString(std::span<const uint32_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

proto::DType toProto(DType t) {
  switch (t) {
    case DType::kF32:
      return proto::DType::F32;
    case DType::kBF16:
      return proto::DType::BF16;
    case DType::kF16:
      return proto::DType::F16;
    case DType::kF64:  // storage-only dtypes never reach the wire
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kU8:
      break;
  }
  return proto::DType::F32;
}

Result<TensorView> decodeTensor(proto::Tensor::Reader tensor, std::string_view what) {
  TensorView v{};
  const std::string name(what);
  switch (tensor.getDtype()) {
    case proto::DType::F32:
      v.dtype = DType::kF32;
      break;
    case proto::DType::BF16:
      v.dtype = DType::kBF16;
      break;
    case proto::DType::F16:
      v.dtype = DType::kF16;
      break;
    default:
      return makeError(name + ": unknown dtype code " +
                       std::to_string(static_cast<uint16_t>(tensor.getDtype())) +
                       " (supported: f32, bf16, f16)");
  }
  uint64_t numel = 1;
  constexpr uint64_t kMaxElements = uint64_t{1} << 40;
  bool tooLarge = false;
  for (auto d : tensor.getShape()) {
    v.shape.push_back(d);
    // Checked before multiplying, so the count can never wrap.
    if (d != 0 && numel > kMaxElements / d) tooLarge = true;
    numel *= d;
  }
  if (tooLarge) return makeError(name + ": shape " + shapeString(v.shape) + " is absurdly large");
  auto data = tensor.getData();
  uint64_t need = numel * dtypeSize(v.dtype);
  if (data.size() != need) {
    return makeError(name + ": data has " + std::to_string(data.size()) + " bytes, shape " +
                     shapeString(v.shape) + " × " + std::string(dtypeName(v.dtype)) + " needs " +
                     std::to_string(need) + (data.size() < need ? " (truncated)" : ""));
  }
  v.data =
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.begin()), data.size());
  return v;
}

Status expect2d(const TensorView& t, uint32_t cols, std::string_view what) {
  const std::string name(what);
  if (t.shape.size() != 2) {
    return Status::error(name + ": expected a 2-D tensor [tokens, " + std::to_string(cols) +
                         "], got shape " + shapeString(t.shape));
  }
  if (t.shape[1] != cols) {
    return Status::error(name + ": hidden size " + std::to_string(cols) + " expected, got " +
                         std::to_string(t.shape[1]) + " (shape " + shapeString(t.shape) + ")");
  }
  return Status::ok();
}

F32Rows::F32Rows(const TensorView& t) {
  const size_t n = t.numel();
  auto addr = reinterpret_cast<uintptr_t>(t.data.data());
  if (t.dtype == DType::kF32 && addr % alignof(float) == 0) {
    values_ = std::span<const float>(reinterpret_cast<const float*>(t.data.data()), n);
  } else {
    owned_.resize(n);
    convertToF32(t.dtype, t.data, owned_);
    values_ = owned_;
  }
}

ActivationRows::ActivationRows(const TensorView& t) {
  const size_t n = t.numel();
  const auto addr = reinterpret_cast<uintptr_t>(t.data.data());
  if (t.dtype == DType::kBF16) {
    if (addr % alignof(uint16_t) == 0) {
      view_ = Activations::bf16({reinterpret_cast<const uint16_t*>(t.data.data()), n});
    } else {
      bf16_.resize(n);
      std::memcpy(bf16_.data(), t.data.data(), n * sizeof(uint16_t));
      view_ = Activations::bf16(bf16_);
    }
    return;
  }
  if (t.dtype == DType::kF32 && addr % alignof(float) == 0) {
    view_ = std::span<const float>(reinterpret_cast<const float*>(t.data.data()), n);
    return;
  }
  f32_.resize(n);
  convertToF32(t.dtype, t.data, f32_);
  view_ = f32_;
}

int64_t firstNonFinite(std::span<const float> values) {
  return Activations(values).firstNonFinite();
}

std::span<float> initF32(proto::Tensor::Builder tensor, std::span<const uint32_t> shape) {
  tensor.setDtype(proto::DType::F32);
  auto s = tensor.initShape(static_cast<unsigned>(shape.size()));
  uint64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    s.set(static_cast<unsigned>(i), shape[i]);
    n *= shape[i];
  }
  auto data = tensor.initData(static_cast<unsigned>(n * sizeof(float)));
  return std::span<float>(reinterpret_cast<float*>(data.begin()), n);
}

void encodeBf16(proto::Tensor::Builder tensor, std::span<const uint32_t> shape,
                std::span<const float> values) {
  tensor.setDtype(proto::DType::BF16);
  auto s = tensor.initShape(static_cast<unsigned>(shape.size()));
  for (size_t i = 0; i < shape.size(); ++i) s.set(static_cast<unsigned>(i), shape[i]);
  auto data = tensor.initData(static_cast<unsigned>(values.size() * sizeof(uint16_t)));
  std::byte* out = reinterpret_cast<std::byte*>(data.begin());
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t v = floatToBf16(values[i]);  // little-endian on the wire
    out[2 * i] = static_cast<std::byte>(v & 0xff);
    out[2 * i + 1] = static_cast<std::byte>(v >> 8);
  }
}

}  // namespace moe
