// encodeShardCall: see encode.h.
#include "router_service/encode.h"

#include <cstring>
#include <vector>

#include "common/tensor_wire.h"

namespace moe::router {

void encodeShardCall(const ShardWork& work, uint32_t layer, std::span<const float> x, uint32_t H,
                     float scale, DType wire, proto::ExpertShard::RunParams::Builder request) {
  request.setLayer(layer);
  const uint32_t shape[2] = {static_cast<uint32_t>(work.tokens.size()), H};
  if (wire == DType::kBF16) {
    std::vector<float> rows(work.tokens.size() * H);  // [rows, H], scaled, before rounding
    for (size_t r = 0; r < work.tokens.size(); ++r) {
      const float* src = x.data() + size_t{work.tokens[r]} * H;
      for (size_t h = 0; h < H; ++h) rows[r * H + h] = scale * src[h];
    }
    encodeBf16(request.initRows(), shape, rows);
  } else {
    auto rows = initF32(request.initRows(), shape);
    for (size_t r = 0; r < work.tokens.size(); ++r) {
      const float* src = x.data() + size_t{work.tokens[r]} * H;
      float* dst = rows.data() + r * H;
      if (scale == 1.0f) {
        std::memcpy(dst, src, H * sizeof(float));
      } else {
        for (size_t h = 0; h < H; ++h) dst[h] = scale * src[h];
      }
    }
  }
  auto segs = request.initSegments(static_cast<unsigned>(work.segments.size()));
  for (size_t s = 0; s < work.segments.size(); ++s) {
    const auto& seg = work.segments[s];
    auto out = segs[static_cast<unsigned>(s)];
    out.setExpert(seg.expert);
    out.setShared(seg.shared);
    auto idx = out.initRowIndex(static_cast<unsigned>(seg.rowIndex.size()));
    auto wt = out.initWeight(static_cast<unsigned>(seg.weight.size()));
    for (size_t j = 0; j < seg.rowIndex.size(); ++j) {
      idx.set(static_cast<unsigned>(j), seg.rowIndex[j]);
      wt.set(static_cast<unsigned>(j), seg.weight[j]);
    }
  }
}

}  // namespace moe::router
