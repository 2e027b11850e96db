// decodeForward: see decode.h.
#include "router_service/decode.h"

#include <string>

namespace moe::router {
namespace {

std::string listIds(const std::vector<uint32_t>& ids) {
  std::string s;
  for (auto v : ids) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

// rows [T, cols] of a tensor field, widened to f32, every value finite.
Result<std::shared_ptr<const F32Rows>> decodeRows(proto::Tensor::Reader tensor, uint32_t cols,
                                                  const std::string& what,
                                                  const std::string& rowName) {
  auto view = decodeTensor(tensor, what);
  if (!view) return makeError(view.status());
  if (auto s = expect2d(view.value(), cols, what); !s) return makeError(s);
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
                    ForwardRequest& r) {
  const ModelConfig& m = model.model;
  if (!params.hasHidden()) return Status::error("hidden: missing");
  auto x = decodeRows(params.getHidden(), m.hiddenSize, "hidden", "token");
  if (!x) return x.status();
  r.tokens = static_cast<uint32_t>(x.value()->values().size() / m.hiddenSize);
  if (r.tokens == 0) {
    return Status::error("hidden: zero tokens (shape [0, " + std::to_string(m.hiddenSize) +
                         "]); send at least one");
  }
  if (r.tokens > model.cluster.router.maxTokens) {
    return Status::error("hidden: " + std::to_string(r.tokens) +
                         " tokens exceeds router.max_tokens = " +
                         std::to_string(model.cluster.router.maxTokens) + "; split the batch");
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
  auto prev = decodeRows(params.getPrevLogits(), m.numExperts, "prevLogits", "token");
  if (!prev) return prev.status();
  const size_t rows = prev.value()->values().size() / m.numExperts;
  if (rows != r.tokens) {
    return Status::error("prevLogits: " + std::to_string(rows) + " rows for a batch of " +
                         std::to_string(r.tokens) + " tokens");
  }
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
  if (auto s = decodeHidden(params, model, r); !s) return makeError(s);
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
