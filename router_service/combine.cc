// The combine stage; see combine.h.
#include "router_service/combine.h"

#include <algorithm>

namespace moe::router {
namespace {

// The status a request sees for a failed shard call: the shard's own kind when it is about
// reaching the shard or its limits; anything the shard rejected is the router's fault, so
// Internal.
Status requestStatusFor(const Status& shardStatus) {
  switch (shardStatus.code()) {
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kResourceExhausted:
    case StatusCode::kInternal:
      return shardStatus;
    default:
      return Status::error(StatusCode::kInternal, shardStatus.message());
  }
}

// Per member: its reply so far (output started from the router's own part) or its error.
struct MemberState {
  Status status;
  ForwardReply reply;
};

std::vector<MemberState> startMembers(const Batch& b, RoutedBatch& routed, uint32_t H,
                                      const BatchTimings& t) {
  std::vector<MemberState> states(b.members.size());
  for (size_t i = 0; i < b.members.size(); ++i) {
    const auto& m = b.members[i];
    auto& reply = states[i].reply;
    if (routed.local.empty()) {
      reply.output.assign(size_t{m.tokens} * H, 0.0f);
    } else {
      auto first = routed.local.begin() + static_cast<ptrdiff_t>(size_t{m.offset} * H);
      reply.output.assign(first, first + static_cast<ptrdiff_t>(size_t{m.tokens} * H));
    }
    auto& mr = routed.members[i];
    states[i].status = mr.status;  // failed at routing (an expert it needs is gone)
    reply.routing = std::move(mr.decision);
    reply.logits = std::move(mr.logits);
    reply.stats.dropped = mr.dropped;
    reply.stats.routerRows = mr.zeroCompute;
    reply.stats.sharedRows = routed.hasShared ? m.tokens : 0;
    reply.stats.batchRequests = static_cast<uint32_t>(b.members.size());
    reply.stats.batchTokens = b.tokens;
    reply.stats.gateMicros = t.gateMicros;
    reply.stats.dispatchMicros = t.dispatchMicros;
  }
  return states;
}

// Adds one shard's partial rows to the outputs of the members they belong to, or fails them.
void applyPartial(const ShardWork& w, const ShardPartial& p, const Batch& b,
                  std::span<const uint32_t> memberOf, uint32_t H,
                  std::vector<MemberState>& states) {
  std::vector<uint32_t> rowsOf(states.size(), 0);
  for (uint32_t t : w.tokens) ++rowsOf[memberOf[t]];
  for (size_t i = 0; i < states.size(); ++i) {
    if (rowsOf[i] == 0) continue;
    states[i].reply.stats.shardCalls += 1;
    states[i].reply.stats.rowsSent += rowsOf[i];
    if (!p.status && states[i].status) states[i].status = requestStatusFor(p.status);
  }
  if (!p.status) return;
  auto rows = p.rows->values();
  for (size_t r = 0; r < w.tokens.size(); ++r) {
    const uint32_t t = w.tokens[r];
    MemberState& s = states[memberOf[t]];
    if (!s.status) continue;
    const float* src = rows.data() + r * H;
    float* dst = s.reply.output.data() + size_t{t - b.members[memberOf[t]].offset} * H;
    for (size_t h = 0; h < H; ++h) dst[h] += src[h];
  }
}

}  // namespace

ShardPartial decodeShardReply(proto::ExpertShard::RunResults::Reader reply, const ShardWork& work,
                              uint32_t H, const std::string& shardLabel) {
  ShardPartial p;
  const std::string what = shardLabel + " output";
  auto view = decodeTensor(reply.getOutput(), what);
  if (!view) {
    p.status = Status::error(StatusCode::kInternal, view.error());
    return p;
  }
  if (auto s = expect2d(view.value(), H, what); !s || view.value().shape[0] != work.tokens.size()) {
    p.status = Status::error(StatusCode::kInternal,
                             shardLabel + " returned shape " + shapeString(view.value().shape) +
                                 " for " + std::to_string(work.tokens.size()) + " rows");
    return p;
  }
  p.rows = std::make_unique<F32Rows>(view.value());
  return p;
}

std::vector<Result<ForwardReply>> combineBatch(const Batch& b, RoutedBatch& routed,
                                               std::span<const ShardWork> works,
                                               std::span<const ShardPartial> partials, uint32_t H,
                                               const BatchTimings& timings) {
  std::vector<uint32_t> memberOf(b.tokens);
  for (uint32_t i = 0; i < b.members.size(); ++i) {
    const auto& m = b.members[i];
    std::fill_n(memberOf.begin() + m.offset, m.tokens, i);
  }
  auto states = startMembers(b, routed, H, timings);
  for (size_t w = 0; w < works.size() && w < partials.size(); ++w) {
    applyPartial(works[w], partials[w], b, memberOf, H, states);
  }
  if (routed.outputScale != 1.0f) {
    // (routed + shared) · scale, after the router's own part and every shard's are summed.
    for (auto& s : states) {
      for (float& v : s.reply.output) v *= routed.outputScale;
    }
  }
  std::vector<Result<ForwardReply>> replies;
  replies.reserve(states.size());
  for (auto& s : states) {
    if (s.status) {
      replies.emplace_back(std::move(s.reply));
    } else {
      replies.emplace_back(makeError(s.status));
    }
  }
  return replies;
}

}  // namespace moe::router
