// OnednnMatmul on oneDNN 2.x (Debian libdnnl-dev); see onednn_matmul.h.
#include "kernels/onednn_matmul.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

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
    bf16_ = (isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx) &&
            probe(DType::kBF16);
    f32_ = probe(DType::kF32);
  }

  bool usable(DType dtype) const override {
    return dtype == DType::kF32 ? f32_ : dtype == DType::kBF16 ? bf16_ : false;
  }
  std::string isa() const override { return isa_; }

  Status run(DType dtype, const void* x, size_t M, size_t K, const void* w, size_t N,
             float* y) override {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      // OpenMP's thread count is per calling thread: set it on the one that computes.
      if (const int n = gThreads.load(std::memory_order_relaxed); n > 0) omp_set_num_threads(n);
      const Entry& e = primitive(dtype, M, K, N);
      memory src(e.src, engine_, const_cast<void*>(x));
      memory wei(e.wei, engine_, const_cast<void*>(w));
      memory dst(e.dst, engine_, y);
      e.prim.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
      stream_.wait();
      return Status::ok();
    } catch (const dnnl::error& err) {
      return Status::error(std::string("onednn matmul ") + std::string(dtypeName(dtype)) + " [" +
                           std::to_string(M) + ", " + std::to_string(K) + "] x [" +
                           std::to_string(N) + ", " + std::to_string(K) + "]ᵀ: " + err.what());
    }
  }

  std::unique_ptr<PackedWeights> pack(DType dtype, const void* w, size_t N, size_t K) override {
    try {
      std::lock_guard<std::mutex> lock(mu_);
      const Entry& e = primitive(dtype, 1, K, N, /*anyWeights=*/true);
      const memory::desc plain = plainWeights(dtype, K, N);
      if (e.wei == plain) return nullptr;
      auto packed = std::make_unique<Packed>(e.wei, engine_);
      memory src(plain, engine_, const_cast<void*>(w));
      dnnl::reorder(src, packed->mem).execute(stream_, src, packed->mem);
      stream_.wait();
      return packed;
    } catch (const dnnl::error&) {
      return nullptr;
    }
  }

  Status run(DType dtype, const void* x, size_t M, size_t K, const PackedWeights& w, size_t N,
             float* y) override {
    const auto& packed = static_cast<const Packed&>(w);
    try {
      std::lock_guard<std::mutex> lock(mu_);
      if (const int n = gThreads.load(std::memory_order_relaxed); n > 0) omp_set_num_threads(n);
      const Entry& e = primitive(dtype, M, K, N, /*anyWeights=*/true);
      memory src(e.src, engine_, const_cast<void*>(x));
      memory dst(e.dst, engine_, y);
      if (e.wei == packed.mem.get_desc()) {
        e.prim.execute(stream_,
                       {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, packed.mem}, {DNNL_ARG_DST, dst}});
      } else {  // this M wants another layout: through the plain one
        const memory::desc plain = plainWeights(dtype, K, N);
        if (unpacked_.size() < plain.get_size()) unpacked_.resize(plain.get_size());
        memory plainMem(plain, engine_, unpacked_.data());
        memory packedMem = packed.mem;  // a handle to the same buffer
        dnnl::reorder(packedMem, plainMem).execute(stream_, packedMem, plainMem);
        const Entry& p = primitive(dtype, M, K, N, /*anyWeights=*/false);
        p.prim.execute(stream_,
                       {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, plainMem}, {DNNL_ARG_DST, dst}});
      }
      stream_.wait();
      return Status::ok();
    } catch (const dnnl::error& err) {
      return Status::error(std::string("onednn matmul (packed) ") + std::string(dtypeName(dtype)) +
                           ": " + err.what());
    }
  }

 private:
  struct Entry {
    memory::desc src, wei, dst;
    dnnl::matmul prim;
  };
  struct Packed final : PackedWeights {
    Packed(const memory::desc& d, const dnnl::engine& eng) : mem(d, eng) {}
    size_t bytes() const override { return mem.get_desc().get_size(); }
    memory mem;  // owns its buffer
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
      return run(dtype, zeros.data(), 4, 16, zeros.data(), 8, y.data()).isOk();
    } catch (...) {
      return false;
    }
  }

  // Caller holds mu_. anyWeights: oneDNN picks the weights' layout (for packed weights).
  const Entry& primitive(DType dtype, size_t M, size_t K, size_t N, bool anyWeights = false) {
    const auto key = std::make_tuple(static_cast<int>(dtype) + (anyWeights ? 16 : 0), M, K, N);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    if (cache_.size() >= kMaxCached) cache_.clear();
    const auto m = static_cast<memory::dim>(M), k = static_cast<memory::dim>(K),
               n = static_cast<memory::dim>(N);
    const memory::data_type dt = dnnlType(dtype);
    memory::desc src({m, k}, dt, memory::dims{k, 1});
    const memory::desc wei =
        anyWeights ? memory::desc({k, n}, dt, memory::format_tag::any) : plainWeights(dtype, K, N);
    memory::desc dst({m, n}, memory::data_type::f32, memory::dims{n, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), engine_);
    return cache_.emplace(key, Entry{src, pd.weights_desc(), dst, dnnl::matmul(pd)}).first->second;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::string isa_;
  bool bf16_ = false, f32_ = false;
  std::mutex mu_;  // guards cache_ and the stream
  std::map<std::tuple<int, size_t, size_t, size_t>, Entry> cache_;
  std::vector<uint8_t> unpacked_;  // packed weights in the plain layout, for other row counts
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
