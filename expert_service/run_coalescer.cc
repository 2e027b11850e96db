// RunQueue and the merge / split of coalesced ExpertShard.run calls.
#include "expert_service/run_coalescer.h"

#include <algorithm>
#include <map>
#include <utility>

namespace moe::expert {

void SegmentTable::closeSegment(const kernels::ExpertFfnWeights& w, uint32_t key) {
  experts.push_back(w);
  keys.push_back(key);
  offsets.push_back(static_cast<uint32_t>(rows.size()));
}

namespace {

// The merged segment of each (key, occurrence within its call), in order of first appearance,
// with its rows and weights gathered before the CSR arrays are laid out.
struct MergeGroup {
  kernels::ExpertFfnWeights weights;
  uint32_t key;
  std::vector<uint32_t> rows;
  std::vector<float> rowWeights;
};

std::vector<MergeGroup> groupSegments(std::span<const MergePart> parts,
                                      std::span<const uint32_t> rowOffsets) {
  std::vector<MergeGroup> groups;
  std::map<std::pair<uint32_t, uint32_t>, size_t> groupOf;  // (key, occurrence) → group
  for (size_t p = 0; p < parts.size(); ++p) {
    const SegmentTable& t = *parts[p].segments;
    std::map<uint32_t, uint32_t> seen;  // key → segments of it so far in this call
    for (size_t s = 0; s < t.experts.size(); ++s) {
      const auto [it, added] = groupOf.try_emplace({t.keys[s], seen[t.keys[s]]++}, groups.size());
      if (added) groups.push_back({t.experts[s], t.keys[s], {}, {}});
      MergeGroup& g = groups[it->second];
      for (uint32_t j = t.offsets[s]; j < t.offsets[s + 1]; ++j) {
        g.rows.push_back(t.rows[j] + rowOffsets[p]);
        g.rowWeights.push_back(t.weights[j]);
      }
    }
  }
  return groups;
}

}  // namespace

MergedRuns mergeRuns(std::span<const MergePart> parts, uint32_t H) {
  MergedRuns m;
  m.rowOffsets.reserve(parts.size() + 1);
  m.rowOffsets.push_back(0);
  for (const MergePart& p : parts) {
    m.rowOffsets.push_back(m.rowOffsets.back() + static_cast<uint32_t>(p.x.size() / H));
  }
  const bool allBf16 = std::all_of(parts.begin(), parts.end(),
                                   [](const MergePart& p) { return p.x.dtype() == DType::kBF16; });
  if (allBf16) {
    m.dtype = DType::kBF16;
    m.x16.reserve(size_t{m.totalRows()} * H);
    for (const MergePart& p : parts)
      m.x16.insert(m.x16.end(), p.x.bf16().begin(), p.x.bf16().end());
  } else {
    m.x.resize(size_t{m.totalRows()} * H);
    size_t at = 0;
    for (const MergePart& p : parts) {
      p.x.widenInto(std::span(m.x).subspan(at, p.x.size()));
      at += p.x.size();
    }
  }
  for (MergeGroup& g : groupSegments(parts, m.rowOffsets)) {
    m.segments.rows.insert(m.segments.rows.end(), g.rows.begin(), g.rows.end());
    m.segments.weights.insert(m.segments.weights.end(), g.rowWeights.begin(), g.rowWeights.end());
    m.segments.closeSegment(g.weights, g.key);
  }
  return m;
}

std::span<const float> mergedRows(const MergedRuns& merged, size_t call, std::span<const float> out,
                                  uint32_t H) {
  const size_t begin = size_t{merged.rowOffsets[call]} * H;
  const size_t end = size_t{merged.rowOffsets[call + 1]} * H;
  return out.subspan(begin, end - begin);
}

void RunQueue::push(uint64_t id, uint32_t layer, uint32_t rows, uint64_t nowUs) {
  waiting_.push_back({id, layer, rows, nowUs, !busy_});
}

bool RunQueue::remove(uint64_t id) {
  auto it =
      std::find_if(waiting_.begin(), waiting_.end(), [id](const Waiting& w) { return w.id == id; });
  if (it == waiting_.end()) return false;
  waiting_.erase(it);
  return true;
}

bool RunQueue::waitsForCompany(const Waiting& head, uint64_t nowUs) const {
  if (!config_.enabled || config_.windowUs == 0 || !head.mayWait) return false;
  if (nowUs >= head.arrivedUs + config_.windowUs) return false;
  uint64_t rows = 0;
  for (const Waiting& w : waiting_) {
    if (w.layer == head.layer) rows += w.rows;
  }
  return rows < config_.maxRows;  // a full job starts at once
}

RunQueue::Next RunQueue::take(uint64_t nowUs) {
  Next next;
  if (busy_ || waiting_.empty()) return next;
  const Waiting head = waiting_.front();
  if (waitsForCompany(head, nowUs)) {
    next.waitUntilUs = head.arrivedUs + config_.windowUs;
    return next;
  }
  uint64_t rows = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const bool fits = next.ids.empty() || (config_.enabled && rows + it->rows <= config_.maxRows);
    if (it->layer != head.layer || !fits) {
      ++it;
      continue;
    }
    next.ids.push_back(it->id);
    rows += it->rows;
    it = waiting_.erase(it);
  }
  busy_ = true;
  return next;
}

}  // namespace moe::expert
