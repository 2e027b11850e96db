// The decode stage: a Router.forward call's parameters checked and turned into a ForwardRequest —
// the layer is an MoE layer, `hidden` is [T, H] with 1 ≤ T ≤ limits.max_tokens_per_request (over
// it: ResourceExhausted, before any value is read), every value is finite and small enough that the
// layer's gate cannot overflow float32 (GateNetwork::inputBound), MoE++'s prevLogits fits,
// a noise seed only where noise is on. Bad input is rejected here (InvalidArgument naming the
// field), before it can join a batch. f32 rows stay views into the request message; f16/bf16 are
// widened once.
#pragma once

#include "common/proto/moe.capnp.h"
#include "common/result.h"
#include "router_service/forward_types.h"
#include "router_service/router_model.h"

namespace moe::router {

Result<ForwardRequest> decodeForward(proto::Router::ForwardParams::Reader params,
                                     const RouterModel& model);

}  // namespace moe::router
