// decodeForward: see decode.h.
#include "router_service/decode.h"

#include <cmath>
#include <sstream>
#include <string>

namespace moe::router {
namespace {

std::string listIds(const std::vector<uint32_t>& ids) {
  std::string s;
  for (auto v : ids) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

// rows [T, cols] of a tensor field, widened to f32, every value finite. More than `maxRows` rows
// fail (ResourceExhausted) before any value is read.
Result<std::shared_ptr<const F32Rows>> decodeRows(proto::Tensor::Reader tensor, uint32_t cols,
                                                  const std::string& what,
                                                  const std::string& rowName, uint32_t maxRows) {
  auto view = decodeTensor(tensor, what);
  if (!view) return makeError(view.status());
  if (auto s = expect2d(view.value(), cols, what); !s) return makeError(s);
  if (const uint32_t t = view.value().shape[0]; t > maxRows) {
    return makeError(StatusCode::kResourceExhausted,
                     what + ": " + std::to_string(t) +
                         " tokens exceeds limits.max_tokens_per_request = " +
                         std::to_string(maxRows) + "; split the batch");
  }
  auto rows = std::make_shared<const F32Rows>(view.value());
  auto xs = rows->values();
  if (int64_t bad = firstNonFinite(xs); bad >= 0) {
    return makeError(what + ": " + rowName + " " + std::to_string(bad / cols) +
                     " has a non-finite value (" + std::to_string(xs[bad]) + ") at column " +
                     std::to_string(bad % cols));
  }
  return rows;
}

Status decodeHidden(proto::Router::ForwardParams::Reader params, const RouterModel& model,
                    float inputBound, ForwardRequest& r) {
  const ModelConfig& m = model.model;
  if (!params.hasHidden()) return Status::error("hidden: missing");
  auto x = decodeRows(params.getHidden(), m.hiddenSize, "hidden", "token",
                      model.cluster.limits.maxTokensPerRequest);
  if (!x) return x.status();
  r.tokens = static_cast<uint32_t>(x.value()->values().size() / m.hiddenSize);
  // Finite but huge: the gate would overflow float32 (the client's input, not a shard, is at
  // fault).
  const auto xs = x.value()->values();
  for (size_t i = 0; i < xs.size(); ++i) {
    if (std::fabs(xs[i]) > inputBound) {
      std::ostringstream os;
      os << "hidden: token " << i / m.hiddenSize << " has |value| " << std::fabs(xs[i])
         << " at column " << i % m.hiddenSize << ", over the " << inputBound << " that layer "
         << r.layer << "'s gate takes without overflowing float32; scale it down";
      return Status::error(os.str());
    }
  }
  if (r.tokens == 0) {
    return Status::error("hidden: zero tokens (shape [0, " + std::to_string(m.hiddenSize) +
                         "]); send at least one");
  }
  r.hidden = std::move(x).value();
  return Status::ok();
}

Status decodePrevLogits(proto::Router::ForwardParams::Reader params, const RouterModel& model,
                        bool hasResidual, ForwardRequest& r) {
  if (!params.hasPrevLogits()) return Status::ok();
  const ModelConfig& m = model.model;
  if (!hasResidual) {
    return Status::error("prevLogits: model_type '" + m.modelType +
                         "' has no gating residual; send prevLogits only to MoE++ models");
  }
  // The row count first, so that no more than the batch's rows are ever read.
  const auto shape = params.getPrevLogits().getShape();
  const size_t rows = shape.size() == 2 ? shape[0] : r.tokens;
  if (rows != r.tokens) {
    return Status::error("prevLogits: " + std::to_string(rows) + " rows for a batch of " +
                         std::to_string(r.tokens) + " tokens");
  }
  auto prev = decodeRows(params.getPrevLogits(), m.numExperts, "prevLogits", "token", r.tokens);
  if (!prev) return prev.status();
  r.prevLogits = std::move(prev).value();
  return Status::ok();
}

}  // namespace

Result<ForwardRequest> decodeForward(proto::Router::ForwardParams::Reader params,
                                     const RouterModel& model) {
  ForwardRequest r;
  r.layer = params.getLayer();
  auto gate = model.gates.find(r.layer);
  if (gate == model.gates.end()) {
    return makeError(
        "layer " + std::to_string(r.layer) +
        " is not an MoE layer of this model (MoE layers: " + listIds(model.model.moeLayers) + ")");
  }
  if (auto s = decodeHidden(params, model, gate->second->inputBound(), r); !s) return makeError(s);
  if (auto s = decodePrevLogits(params, model, gate->second->hasResidual(), r); !s)
    return makeError(s);
  const auto options = params.getOptions();
  r.returnRouting = options.getReturnRouting();
  const RoutingOptions& routing = model.cluster.routing;
  if (routing.noisyTopk) {
    r.noiseSeed = options.getNoiseSeed() != 0 ? options.getNoiseSeed() : routing.noiseSeed;
  } else if (options.getNoiseSeed() != 0) {
    return makeError("options.noiseSeed: noisy top-k is off in this cluster (routing.noisy_topk)");
  }
  return r;
}

}  // namespace moe::router
