// The reply stage: one request's ForwardReply written into its Router.forward results (on the
// event loop, which owns the reply message): the output rows, the routing when asked, the gate
// logits when asked or when the model passes them on (MoE++), and the stats.
#pragma once

#include "common/checkpoint.h"
#include "common/proto/moe.capnp.h"
#include "router_service/forward_types.h"

namespace moe::router {

void writeForwardResults(const ForwardReply& reply, const ModelConfig& model, bool returnRouting,
                         uint64_t totalMicros, proto::Router::ForwardResults::Builder results);

}  // namespace moe::router
