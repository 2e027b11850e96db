# For `capnp encode` only (tests/fuzz/make_seeds.sh): a struct laid out like the parameters of
# ExpertShard.run (same fields, same ordinals), which capnp cannot name as a root type itself.
@0xb7c1a5e9d3f20461;
using Moe = import "/common/proto/moe.capnp";

struct RunParams {
  layer @0 :UInt32;
  rows @1 :Moe.Tensor;
  segments @2 :List(Moe.ExpertSegment);
}
