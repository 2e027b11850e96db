// See kernel_rate.h.
#include "bench/kernel_rate.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/backend.h"
#include "kernels/onednn_matmul.h"

namespace moe::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `repeats` runs of `run` after one warm-up run.
double medianSeconds(int repeats, const std::function<void()>& run) {
  run();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    run();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[(times.size() - 1) / 2];
}

std::vector<float> randomValues(size_t n, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& f : v) f = normal(rng) * scale;
  return v;
}

template <typename T>
T orThrow(Result<T> r) {
  if (!r) throw std::runtime_error(r.error());
  return std::move(r).value();
}

void check(const Status& s) {
  if (!s.isOk()) throw std::runtime_error(s.message());
}

// The dense side in bf16: oneDNN on bf16 rows with the weights packed as the backend packs them.
double denseBf16Seconds(kernels::OnednnMatmul& dnnl, const std::vector<float>& w13,
                        const std::vector<float>& w2, size_t H, size_t I, size_t T, int repeats,
                        std::mt19937_64& rng) {
  auto bf16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    std::transform(v.begin(), v.end(), out.begin(), floatToBf16);
    return out;
  };
  const std::vector<uint16_t> w13h = bf16(w13), w2h = bf16(w2);
  const std::vector<uint16_t> x = bf16(randomValues(T * H, 1.0f, rng));
  const std::vector<uint16_t> h = bf16(randomValues(T * I, 1.0f, rng));
  const auto p13 = dnnl.pack(DType::kBF16, w13h.data(), I, H);
  const auto p2 = dnnl.pack(DType::kBF16, w2h.data(), H, I);
  std::vector<float> yI(T * I), yH(T * H);
  auto call = [](const uint16_t* xs, size_t M, size_t K, size_t N, const uint16_t* w,
                 const kernels::PackedWeights* packed, float* y) {
    kernels::MatmulCall c{.dtype = DType::kBF16, .x = xs, .M = M, .K = K, .N = N, .y = y};
    if (packed != nullptr) {
      c.packed = packed;
    } else {
      c.w = w;
    }
    return c;
  };
  return medianSeconds(repeats, [&] {
    check(dnnl.run(call(x.data(), T, H, I, w13h.data(), p13.get(), yI.data())));  // W1
    check(dnnl.run(call(x.data(), T, H, I, w13h.data(), p13.get(), yI.data())));  // W3
    check(dnnl.run(call(h.data(), T, I, H, w2h.data(), p2.get(), yH.data())));    // W2
  });
}

}  // namespace

KernelRate measureKernelRate(DType dtype, size_t H, size_t I, size_t E, size_t k, size_t rows,
                             int repeats) {
  std::mt19937_64 rng(11);
  auto backend = orThrow(kernels::createBackend(kernels::BackendKind::kBlas));
  const std::vector<float> w13 = randomValues(I * H, 0.02f, rng),
                           w2 = randomValues(H * I, 0.02f, rng);
  // E distinct resident experts (same values, separate memory: the weight reads are real).
  std::vector<std::unique_ptr<kernels::Matrix>> mats;
  std::vector<kernels::ExpertFfnWeights> experts;
  for (size_t e = 0; e < E; ++e) {
    mats.push_back(orThrow(backend->upload(w13, I, H, dtype)));
    mats.push_back(orThrow(backend->upload(w13, I, H, dtype)));
    mats.push_back(orThrow(backend->upload(w2, H, I, dtype)));
    experts.push_back({mats[3 * e].get(), mats[3 * e + 1].get(), mats[3 * e + 2].get()});
  }
  // Token t goes to experts (t·k + j) mod E, j < k: distinct while k <= E, E-balanced.
  std::vector<std::vector<uint32_t>> byExpert(E);
  for (size_t t = 0; t < rows; ++t) {
    for (size_t j = 0; j < k; ++j) byExpert[(t * k + j) % E].push_back(static_cast<uint32_t>(t));
  }
  std::vector<uint32_t> offsets{0}, segRows;
  for (const auto& list : byExpert) {
    segRows.insert(segRows.end(), list.begin(), list.end());
    offsets.push_back(static_cast<uint32_t>(segRows.size()));
  }
  const std::vector<float> weights(segRows.size(), 1.0f / static_cast<float>(k));
  const kernels::ExpertSegments segments{experts, offsets, segRows, weights};
  const std::vector<float> x = randomValues(rows * H, 1.0f, rng);
  // bf16 experts take bf16 rows, as a shard on a bf16 wire hands them over (and as the dense
  // side below reads them).
  std::vector<uint16_t> x16(x.size());
  for (size_t i = 0; i < x.size(); ++i) x16[i] = floatToBf16(x[i]);
  const Activations rowsIn = dtype == DType::kBF16 ? Activations::bf16(x16) : Activations(x);
  std::vector<float> y(rows * H);
  const double ffnSeconds =
      medianSeconds(repeats, [&] { check(backend->expertFfn(segments, rowsIn, rows, H, y)); });

  const size_t T = segRows.size();  // rows·k: the dense problem of the same total shape
  KernelRate rate;
  rate.kernelPath = backend->kernelPath(dtype);
  rate.rowsPerExpert = T / std::max<size_t>(E, 1);
  double denseSeconds = 0;
  auto dnnl = kernels::OnednnMatmul::create();
  if (dtype == DType::kBF16 && dnnl && dnnl->usable(DType::kBF16)) {
    rate.denseWhat = "oneDNN bf16 matmul, bf16 rows, packed weights";
    denseSeconds = denseBf16Seconds(*dnnl, w13, w2, H, I, T, repeats, rng);
  } else {
    rate.denseWhat = "the backend's linear (" + rate.kernelPath + ")";
    const std::vector<float> xt = randomValues(T * H, 1.0f, rng),
                             ht = randomValues(T * I, 1.0f, rng);
    std::vector<float> yI(T * I), yH(T * H);
    denseSeconds = medianSeconds(repeats, [&] {
      check(backend->linear(*mats[0], xt, T, yI));
      check(backend->linear(*mats[1], xt, T, yI));
      check(backend->linear(*mats[2], ht, T, yH));
    });
  }
  const double flops =
      3.0 * 2.0 * static_cast<double>(T) * static_cast<double>(H) * static_cast<double>(I);
  rate.ffnGflops = flops / ffnSeconds / 1e9;
  rate.denseGflops = flops / denseSeconds / 1e9;
  return rate;
}

}  // namespace moe::bench
