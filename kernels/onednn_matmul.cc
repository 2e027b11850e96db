// OnednnMatmul on oneDNN 2.x (Debian libdnnl-dev); see onednn_matmul.h.
#include "kernels/onednn_matmul.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/huge_pages.h"

namespace moe::kernels {
namespace {

using dnnl::memory;

std::atomic<int> gThreads{0};  // setOnednnThreads; 0 = the OpenMP default

memory::data_type dnnlType(DType t) {
  switch (t) {
    case DType::kF32:
      return memory::data_type::f32;
    case DType::kBF16:
      return memory::data_type::bf16;
    case DType::kF16:
      return memory::data_type::f16;
    default:
      break;
  }
  return memory::data_type::undef;
}

std::string isaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

class OnednnMatmulImpl final : public OnednnMatmul {
 public:
  OnednnMatmulImpl() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    isa_ = isaName(dnnl::get_effective_cpu_isa());
    // bf16 is "usable" only where oneDNN has a native kernel for it (AVX512_BF16 or AMX);
    // elsewhere it would emulate slowly or refuse, and the CPU backend takes its fp32 path.
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    amx_ = isa == dnnl::cpu_isa::avx512_core_amx;
    bf16_ = (isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx) &&
            probe(DType::kBF16);
    f32_ = probe(DType::kF32);
  }

  bool usable(DType dtype) const override {
    return dtype == DType::kF32 ? f32_ : dtype == DType::kBF16 ? bf16_ : false;
  }
  std::string isa() const override { return isa_; }

  std::unique_ptr<PackedWeights> pack(DType dtype, const void* w, size_t N, size_t K) override {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      const Entry& e = primitive({dtype, 1, K, N, /*anyWeights=*/true, /*siluMul=*/false});
      const memory::desc plain = plainWeights(dtype, K, N);
      if (e.wei == plain) return nullptr;
      HugePageBuffer buffer = allocateHugePageBacked(e.wei.get_size());
      if (!buffer) return nullptr;
      auto packed = std::make_unique<Packed>(e.wei, engine_, std::move(buffer));
      memory src(plain, engine_, const_cast<void*>(w));
      dnnl::reorder(src, packed->mem).execute(stream_, src, packed->mem);
      stream_.wait();
      return packed;
    } catch (const dnnl::error&) {
      return nullptr;
    }
  }

  size_t rowsFor(DType dtype, size_t M) const override {
    return dtype == DType::kBF16 && amx_ && M > 16 ? (M + 15) / 16 * 16 : M;
  }

  Status run(const MatmulCall& c) override {
    const bool siluMul = c.out != nullptr;
    try {
      std::lock_guard<std::mutex> lock(mu_);
      // OpenMP's thread count is per calling thread: set it on the one that computes.
      if (const int n = gThreads.load(std::memory_order_relaxed); n > 0) omp_set_num_threads(n);
      if (const size_t Mp = rowsFor(c.dtype, c.M); Mp != c.M) {
        executePadded(c, Mp);
      } else {
        execute(c);
      }
      return Status::ok();
    } catch (const dnnl::error& err) {
      return Status::error(std::string("onednn matmul ") + std::string(dtypeName(c.dtype)) +
                           (siluMul ? " (silu-mul)" : "") + " [" + std::to_string(c.M) + ", " +
                           std::to_string(c.K) + "] x [" + std::to_string(c.N) + ", " +
                           std::to_string(c.K) + "]ᵀ: " + err.what());
    }
  }

 private:
  // Runs `c` as given; throws dnnl::error. Caller holds mu_.
  void execute(const MatmulCall& c) {
    const bool siluMul = c.out != nullptr;
    const auto* packed = static_cast<const Packed*>(c.packed);
    const Entry& e = primitive({c.dtype, c.M, c.K, c.N, packed != nullptr, siluMul});
    memory wei = packed ? packed->mem : memory(e.wei, engine_, const_cast<void*>(c.w));
    const Entry* use = &e;
    if (packed && e.wei != packed->mem.get_desc()) {  // this M wants another layout: unpack
      const memory::desc plain = plainWeights(c.dtype, c.K, c.N);
      if (unpacked_.size() < plain.get_size()) unpacked_.resize(plain.get_size());
      memory plainMem(plain, engine_, unpacked_.data());
      dnnl::reorder(wei, plainMem).execute(stream_, wei, plainMem);
      wei = plainMem;
      use = &primitive({c.dtype, c.M, c.K, c.N, /*anyWeights=*/false, siluMul});
    }
    memory src(use->src, engine_, const_cast<void*>(c.x));
    memory dst(use->dst, engine_, siluMul ? c.out : static_cast<void*>(c.y));
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
    if (siluMul) {
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
                   memory(use->up, engine_, const_cast<float*>(c.up)));
    }
    use->prim.execute(stream_, args);
    stream_.wait();
  }

  // Runs `c` over Mp > c.M rows: x (and up) copied into zero-padded scratch, the first c.M rows
  // of the result copied out. Callers that own their buffers pad them instead (rowsFor).
  void executePadded(const MatmulCall& c, size_t Mp) {
    const size_t xBytes = c.M * c.K * dtypeSize(c.dtype);
    const size_t outElem = c.out != nullptr ? dtypeSize(c.dtype) : sizeof(float);
    padX_.assign(Mp * c.K * dtypeSize(c.dtype), 0);
    std::memcpy(padX_.data(), c.x, xBytes);
    padOut_.resize(Mp * c.N * outElem);
    MatmulCall p = c;
    p.M = Mp;
    p.x = padX_.data();
    if (c.out != nullptr) {
      padUp_.assign(Mp * c.N, 0.0f);
      std::memcpy(padUp_.data(), c.up, c.M * c.N * sizeof(float));
      p.up = padUp_.data();
      p.out = padOut_.data();
    } else {
      p.y = reinterpret_cast<float*>(padOut_.data());
    }
    execute(p);
    std::memcpy(c.out != nullptr ? c.out : static_cast<void*>(c.y), padOut_.data(),
                c.M * c.N * outElem);
  }

  struct Entry {
    memory::desc src, wei, dst, up;  // up: the silu-mul post-op's second input (else empty)
    dnnl::matmul prim;
  };
  // What a cached primitive computes; anyWeights: oneDNN picks the weights' layout (packed).
  struct Shape {
    DType dtype;
    size_t M, K, N;
    bool anyWeights, siluMul;
  };
  struct Packed final : PackedWeights {
    Packed(const memory::desc& d, const dnnl::engine& eng, HugePageBuffer b)
        : buffer(std::move(b)), mem(d, eng, buffer.get()) {}
    size_t bytes() const override { return mem.get_desc().get_size(); }
    HugePageBuffer buffer;  // the weights, on huge pages where the kernel allows
    memory mem;             // views buffer
  };

  static memory::desc plainWeights(DType dtype, size_t K, size_t N) {
    const auto k = static_cast<memory::dim>(K), n = static_cast<memory::dim>(N);
    return memory::desc({k, n}, dnnlType(dtype), memory::dims{1, k});  // w [N, K] as [K, N]
  }
  // Bounds the cache: every distinct row count M is a primitive, and a long-running shard sees
  // many. Past this many the cache is cleared (re-creating a primitive costs tens of µs).
  static constexpr size_t kMaxCached = 512;

  bool probe(DType dtype) {
    try {
      std::vector<float> y(4 * 8);
      std::vector<uint32_t> zeros(4 * 16, 0);  // enough bytes for f32 and bf16 x/w
      return run({.dtype = dtype,
                  .x = zeros.data(),
                  .M = 4,
                  .K = 16,
                  .N = 8,
                  .w = zeros.data(),
                  .y = y.data()})
          .isOk();
    } catch (...) {
      return false;
    }
  }

  // Caller holds mu_.
  const Entry& primitive(const Shape& p) {
    const auto key = std::make_tuple(
        static_cast<int>(p.dtype) + (p.anyWeights ? 16 : 0) + (p.siluMul ? 32 : 0), p.M, p.K, p.N);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    if (cache_.size() >= kMaxCached) cache_.clear();
    const auto m = static_cast<memory::dim>(p.M), k = static_cast<memory::dim>(p.K),
               n = static_cast<memory::dim>(p.N);
    const memory::data_type dt = dnnlType(p.dtype);
    memory::desc src({m, k}, dt, memory::dims{k, 1});
    const memory::desc wei = p.anyWeights ? memory::desc({k, n}, dt, memory::format_tag::any)
                                          : plainWeights(p.dtype, p.K, p.N);
    memory::desc dst({m, n}, p.siluMul ? dt : memory::data_type::f32, memory::dims{n, 1});
    memory::desc up;
    dnnl::primitive_attr attr;
    if (p.siluMul) {  // silu(h) = swish(h, alpha = 1); then ⊙ up, before the store in dtype
      up = memory::desc({m, n}, memory::data_type::f32, memory::dims{n, 1});
      dnnl::post_ops ops;
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.0f, 0.0f);
      ops.append_binary(dnnl::algorithm::binary_mul, up);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), attr, engine_);
    return cache_.emplace(key, Entry{src, pd.weights_desc(), dst, up, dnnl::matmul(pd)})
        .first->second;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::string isa_;
  bool bf16_ = false, f32_ = false, amx_ = false;
  std::mutex mu_;  // guards cache_ and the stream
  std::map<std::tuple<int, size_t, size_t, size_t>, Entry> cache_;
  std::vector<uint8_t> unpacked_;       // packed weights in the plain layout, for other row counts
  std::vector<uint8_t> padX_, padOut_;  // executePadded's rows
  std::vector<float> padUp_;
};

}  // namespace

void setOnednnThreads(int n) {
  gThreads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

std::unique_ptr<OnednnMatmul> OnednnMatmul::create() {
  try {
    return std::make_unique<OnednnMatmulImpl>();
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

}  // namespace moe::kernels
