// validateRun: see run_request.h.
#include "expert_service/run_request.h"

#include <cmath>
#include <map>
#include <utility>
#include <vector>

namespace moe::expert {
namespace {

std::string segmentName(uint32_t s) {
  return "segment " + std::to_string(s);
}

std::string expertName(bool shared, uint32_t expert) {
  return shared ? std::string("the shared expert") : "expert " + std::to_string(expert);
}

// The segments, checked against the rows (R) and what the shard holds.
Result<SegmentTable> checkSegments(proto::ExpertShard::RunParams::Reader params,
                                   const HeldExperts& held, const RunLimits& limits, uint32_t R) {
  const uint32_t layer = params.getLayer();
  auto segments = params.getSegments();
  if (segments.size() > limits.maxSegments) {
    return makeError(StatusCode::kResourceExhausted,
                     "segments: " + std::to_string(segments.size()) +
                         " segments exceeds limits.max_segments_per_shard_call = " +
                         std::to_string(limits.maxSegments));
  }
  SegmentTable table;
  std::vector<uint32_t> lastSeen(R, UINT32_MAX);        // segment that last named each row
  std::map<std::pair<bool, uint32_t>, uint32_t> named;  // expert → the segment that named it
  for (uint32_t s = 0; s < segments.size(); ++s) {
    auto seg = segments[s];
    const bool shared = seg.getShared();
    const uint32_t expert = shared ? 0 : seg.getExpert();
    const auto* w = held.find(layer, shared, expert);
    if (!w) {
      return makeError(segmentName(s) + ": " + expertName(shared, expert) + " of layer " +
                       std::to_string(layer) + " is not on shard " + held.shardName);
    }
    if (auto [it, fresh] = named.emplace(std::pair(shared, expert), s); !fresh) {
      return makeError(segmentName(s) + ": " + expertName(shared, expert) +
                       " already named by segment " + std::to_string(it->second) +
                       " (one segment per expert)");
    }
    auto idx = seg.getRowIndex();
    auto wt = seg.getWeight();
    if (idx.size() != wt.size()) {
      return makeError(segmentName(s) + ": " + std::to_string(idx.size()) + " row indices but " +
                       std::to_string(wt.size()) + " weights");
    }
    if (idx.size() > R) {
      return makeError(segmentName(s) + ": " + std::to_string(idx.size()) +
                       " row indices for a call of " + std::to_string(R) + " rows");
    }
    for (uint32_t j = 0; j < idx.size(); ++j) {
      const uint32_t r = idx[j];
      if (r >= R) {
        return makeError(segmentName(s) + ": row index " + std::to_string(r) +
                         " >= " + std::to_string(R) + " rows");
      }
      if (lastSeen[r] == s) {
        return makeError(segmentName(s) + ": row " + std::to_string(r) + " listed twice");
      }
      if (!std::isfinite(wt[j])) {
        return makeError(segmentName(s) + ": non-finite weight for row " + std::to_string(r));
      }
      lastSeen[r] = s;
      table.rows.push_back(r);
      table.weights.push_back(wt[j]);
    }
    table.closeSegment(*w, shared ? kSharedExpertKey : expert);
  }
  return table;
}

}  // namespace

Result<ValidRun> validateRun(proto::ExpertShard::RunParams::Reader params, const HeldExperts& held,
                             const RunLimits& limits) {
  const uint32_t H = held.hiddenSize;
  ValidRun run;
  run.layer = params.getLayer();
  if (!held.servesLayer(run.layer)) {
    return makeError("layer " + std::to_string(run.layer) + " is not served by shard " +
                     held.shardName);
  }
  auto view = decodeTensor(params.getRows(), "rows");
  if (!view) return makeError(view.status());
  if (auto s = expect2d(view.value(), H, "rows"); !s) return makeError(s);
  const uint32_t R = run.rows = view.value().shape[0];
  if (R == 0) return makeError("rows: zero rows; send at least one");
  if (R > limits.maxRows) {
    return makeError(
        StatusCode::kResourceExhausted,
        "rows: " + std::to_string(R) +
            " rows exceeds limits.max_rows_per_shard_call = " + std::to_string(limits.maxRows));
  }
  auto segments = checkSegments(params, held, limits, R);
  if (!segments) return makeError(segments.status());
  run.segments = std::move(segments).value();
  run.x = std::make_unique<ActivationRows>(view.value());
  run.wire = view.value().dtype;
  if (int64_t bad = run.x->view().firstNonFinite(); bad >= 0) {
    return makeError("rows: row " + std::to_string(bad / H) + " has a non-finite value at column " +
                     std::to_string(bad % H));
  }
  return run;
}

}  // namespace moe::expert
