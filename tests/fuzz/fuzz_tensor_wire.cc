// libFuzzer target: the tensor wire decoder. The input is a Cap'n Proto message (as a peer would
// send it) whose root is a Tensor; decodeTensor must accept it with a consistent size or refuse it
// with an error naming the field. Cap'n Proto's own refusals (kj::Exception) become RPC errors in
// the services and are fine here.
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/proto/moe.capnp.h"
#include "common/tensor_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < sizeof(capnp::word)) return 0;
  std::vector<capnp::word> words(size / sizeof(capnp::word));
  std::memcpy(words.data(), data, words.size() * sizeof(capnp::word));
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1 << 20;
  options.nestingLimit = 16;
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words.data(), words.size()), options);
    auto view = moe::decodeTensor(reader.getRoot<moe::proto::Tensor>(), "fuzz");
    if (!view.isOk()) {
      if (view.error().rfind("fuzz", 0) != 0) __builtin_trap();
      return 0;
    }
    const moe::TensorView& t = view.value();
    if (t.data.size() != t.numel() * moe::dtypeSize(t.dtype)) __builtin_trap();
    if (t.shape.size() == 2 && t.shape[1] > 0 && moe::expect2d(t, t.shape[1], "fuzz").isOk()) {
      moe::F32Rows rows(t);
      if (rows.values().size() != t.numel()) __builtin_trap();
      (void)moe::firstNonFinite(rows.values());
      const moe::ActivationRows typed(t);  // what a shard hands its backend
      if (typed.view().size() != t.numel()) __builtin_trap();
      std::vector<float> wide(typed.view().size());
      typed.view().widenInto(wide);
      const int64_t bad = typed.view().firstNonFinite();
      if ((bad >= 0) != (moe::firstNonFinite(wide) >= 0)) __builtin_trap();
    }
  } catch (const kj::Exception&) {
  }
  return 0;
}
