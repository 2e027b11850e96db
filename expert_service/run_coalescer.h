// Coalescing of ExpertShard.run calls as plain data, testable without RPC: RunQueue, the rule that
// picks which waiting calls form the next compute job, and mergeRuns / mergedRows, which turn the
// picked calls into one grouped FFN input (each expert once) and hand each call its output rows.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "common/config.h"
#include "kernels/backend.h"

namespace moe::expert {

// The segment key of a layer's shared expert (routed experts use their id).
inline constexpr uint32_t kSharedExpertKey = UINT32_MAX;

// The CSR form of a call's segments (or of a merged job's), owned for the compute job.
struct SegmentTable {
  std::vector<kernels::ExpertFfnWeights> experts;
  std::vector<uint32_t> keys;  // the expert each segment applies: its id, or kSharedExpertKey
  std::vector<uint32_t> offsets{0};
  std::vector<uint32_t> rows;
  std::vector<float> weights;

  // Closes the segment whose rows and weights were appended since the previous one.
  void closeSegment(const kernels::ExpertFfnWeights& w, uint32_t key);
  // `weightOnInput`: the model's (ModelConfig::weightOnInput), for every segment of the call.
  kernels::ExpertSegments view(bool weightOnInput = false) const {
    return {experts, offsets, rows, weights, weightOnInput};
  }
};

// One call's part of a merged job.
struct MergePart {
  Activations x;  // [rows, H], f32 or bf16
  const SegmentTable* segments;
};

struct MergedRuns {
  // [ΣR, H]: the calls' rows one after the other, in bf16 (x16) when every call's rows are bf16
  // (one bf16 wire), else in f32 (x; bf16 rows widened exactly).
  std::vector<float> x;
  std::vector<uint16_t> x16;
  DType dtype = DType::kF32;
  Activations rows() const { return dtype == DType::kBF16 ? Activations::bf16(x16) : x; }
  // One segment per expert: each call's rows of it, shifted by the call's row offset, calls in
  // order. (A call that names one expert in several segments keeps them apart: its k-th segment of
  // an expert merges with the other calls' k-th ones, so rows stay distinct within a segment.)
  SegmentTable segments;
  std::vector<uint32_t> rowOffsets;  // [calls + 1]; call i owns rows rowOffsets[i] .. [i + 1]
  uint32_t totalRows() const { return rowOffsets.back(); }
};

// Concatenates the parts' rows and merges their segments. Segment order: first appearance.
MergedRuns mergeRuns(std::span<const MergePart> parts, uint32_t H);

// Call `call`'s rows [R_call, H] of a merged job's output [ΣR, H].
std::span<const float> mergedRows(const MergedRuns& merged, size_t call, std::span<const float> out,
                                  uint32_t H);

// The calls of one shard waiting for the compute thread, and which of them the next job takes.
// Times are microseconds on any monotonic clock. Not thread-safe: the RPC loop owns it.
class RunQueue {
 public:
  explicit RunQueue(const ExpertBatchingConfig& config) : config_(config) {}

  void push(uint64_t id, uint32_t layer, uint32_t rows, uint64_t nowUs);
  bool remove(uint64_t id);  // a cancelled call; false when it is not waiting (already taken)
  size_t size() const { return waiting_.size(); }
  bool busy() const { return busy_; }

  struct Next {
    std::vector<uint64_t> ids;            // the next job's calls, oldest first; empty: none now
    std::optional<uint64_t> waitUntilUs;  // no job yet: the oldest call waits for company until
  };
  // When no job runs: the calls of the next job, taken out of the queue (the job then runs until
  // finished()). The oldest call decides the layer; calls of that layer follow in arrival order
  // while the rows fit in max_rows (the oldest call alone may exceed it). With window_us > 0 a
  // call that arrived while no job ran waits for company until window_us after its arrival, or
  // until its layer's waiting rows reach max_rows.
  Next take(uint64_t nowUs);
  void finished() { busy_ = false; }

 private:
  struct Waiting {
    uint64_t id;
    uint32_t layer;
    uint32_t rows;
    uint64_t arrivedUs;
    bool mayWait;  // arrived while no job ran: only then does the window apply
  };
  bool waitsForCompany(const Waiting& head, uint64_t nowUs) const;

  ExpertBatchingConfig config_;
  std::deque<Waiting> waiting_;
  bool busy_ = false;
};

}  // namespace moe::expert
