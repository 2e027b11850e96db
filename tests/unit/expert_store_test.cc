// ExpertStore with model.dtype: experts are held in the resolved dtype, the resident bytes
// (moe_device_memory_bytes) are measured from the matrices' allocations (bf16 and f16: half of
// f32), and a backend that cannot hold the dtype is refused at load naming backend and dtype.
#include "expert_service/expert_store.h"

#include <gtest/gtest.h>

#include <string>

#include "common/checkpoint.h"
#include "kernels/backend.h"
#include "tests/unit/test_util.h"
#include "tools/synthetic_checkpoint.h"

namespace moe::expert {
namespace {

class ExpertStoreTest : public unit::ScratchDirTest {};

TEST_F(ExpertStoreTest, ResidentBytesFollowTheDtype) {
  SyntheticModelSpec spec;
  spec.hiddenSize = 64;  // block-aligned: packed bf16 weights need no padding
  spec.intermediateSize = 128;
  spec.numExperts = 4;
  spec.numLayers = 2;
  ASSERT_TRUE(writeSyntheticCheckpoint(spec, (dir_ / "m").string()));
  auto ckpt = Checkpoint::open((dir_ / "m").string());
  ASSERT_TRUE(ckpt) << ckpt.error();
  EXPECT_EQ(ckpt.value()->expertsDType(), DType::kBF16);  // the generator's default
  ShardConfig shard;
  shard.name = "s";
  shard.experts = {0, 2, 3};
  // 2 layers × 3 experts × 3 matrices of 64 × 128.
  const uint64_t elements = uint64_t{2} * 3 * 3 * 64 * 128;
  const struct {
    kernels::BackendKind backend;
    DType dtype;
  } cases[] = {
      {kernels::BackendKind::kBlas, DType::kF32},
      {kernels::BackendKind::kBlas, DType::kBF16},
      {kernels::BackendKind::kBlas, DType::kF16},
      {kernels::BackendKind::kReference, DType::kBF16},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(std::string(dtypeName(tc.dtype)));
    auto backend = kernels::createBackend(tc.backend);
    ASSERT_TRUE(backend) << backend.error();
    auto store = ExpertStore::load(*backend.value(), *ckpt.value(), shard, tc.dtype);
    ASSERT_TRUE(store) << store.error();
    EXPECT_EQ(store.value()->dtype(), tc.dtype);
    EXPECT_EQ(store.value()->residentBytes(), elements * dtypeSize(tc.dtype));
    const kernels::ExpertFfnWeights* w = store.value()->find(1, 2);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->w2->dtype(), tc.dtype);
  }
  // A checkpoint-only dtype is never a resident one.
  auto blas = kernels::createBackend(kernels::BackendKind::kBlas);
  ASSERT_TRUE(blas);
  for (DType stored : {DType::kF8E4M3, DType::kU8}) {
    auto refused = ExpertStore::load(*blas.value(), *ckpt.value(), shard, stored);
    ASSERT_FALSE(refused) << dtypeName(stored);
    EXPECT_NE(refused.error().find("cannot compute experts in " + std::string(dtypeName(stored))),
              std::string::npos)
        << refused.error();
  }
}

}  // namespace
}  // namespace moe::expert
