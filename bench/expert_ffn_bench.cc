// moe-expert-ffn-bench: the shard's compute step alone — Backend::expertFfn over one call's
// segments, as an expert service runs it — on a model shape (default: the default cluster's
// Mixtral-shaped model, hidden 1024, intermediate 3584, 8 experts, top-2), per batch size and
// weight dtype, for each expert FFN variant (plain SwiGLU; gpt-oss's clamped SwiGLU with biases;
// Llama 4's routing weight on the input). No sockets, no processes: it measures the kernel path
// only, so a change to it can be compared before/after. Medians of --repeats runs. Not a test.
//
// --device cuda:N runs the same table on the CUDA backend and then issue 12's GPU comparison:
// the grouped expertFfn over E experts with R rows each (every expert takes every row) against
// the same three GEMMs dense over E·R rows ([E·R, H]·w1ᵀ, ·w3ᵀ, [E·R, I]·w2ᵀ), as a ratio of
// times (= grouped rate / dense rate, equal FLOPs) — once through the Backend calls (copies
// included) and once for the device GEMMs alone (CUDA events, bf16).
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/cli.h"
#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/blas_backend.h"
#ifdef MOE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string machine() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, cpu = "unknown CPU";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return cpu + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores, " + u.sysname +
         " " + u.release;
}

// "a,b" → {"a", "b"}.
std::vector<std::string> splitNames(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// "cpu" → BLAS; "cuda:N" → CUDA device N.
bool parseDevice(const std::string& text, moe::kernels::BackendKind* kind, int* index) {
  if (text == "cpu") {
    *kind = moe::kernels::BackendKind::kBlas;
    *index = 0;
    return true;
  }
  if (text.rfind("cuda:", 0) != 0 || text.size() == 5 || text.size() > 8) return false;
  int n = 0;
  for (char c : text.substr(5)) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  *kind = moe::kernels::BackendKind::kCuda;
  *index = n;
  return true;
}

template <typename Body>
double medianSeconds(int repeats, Body&& body) {
  std::vector<double> times;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up
    const auto t0 = Clock::now();
    body();
    if (r > 0) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(times);
}

struct Variant {
  const char* name;
  bool clampedWithBias;
  bool weightOnInput;
};

}  // namespace

int main(int argc, char** argv) {
  uint32_t hidden = 1024, inter = 3584, experts = 8, topK = 2;
  int repeats = 9, threads = 1;
  std::string batchList = "1,8,64,256", dtypeList = "f32,bf16", variantList = "swiglu";
  std::string device = "cpu", rowsPerExpertList = "256,1024";
  CLI::App app{
      "The shard's expertFfn step alone (BLAS or CUDA backend) per batch, weight dtype and expert\n"
      "FFN variant, on the default model's shape; on CUDA also grouped vs dense GEMMs. Not a test.",
      "moe-expert-ffn-bench"};
  moe::cli::setUp(app);
  app.add_option("--hidden", hidden, "Hidden size")->transform(moe::cli::unsignedInteger(1, 65536));
  app.add_option("--intermediate", inter, "Expert intermediate size")
      ->transform(moe::cli::unsignedInteger(1, 65536));
  app.add_option("--experts", experts, "Experts the call's segments use")
      ->transform(moe::cli::unsignedInteger(1, 256));
  app.add_option("--top-k", topK, "Experts per token")
      ->transform(moe::cli::unsignedInteger(1, 256));
  app.add_option("--batches", batchList, "Batch sizes (rows per call)")
      ->transform(moe::cli::unsignedList(1, 1 << 16, /*allowEmpty=*/false));
  app.add_option("--dtypes", dtypeList, "Weight dtypes, comma-separated: f32, bf16, f16");
  app.add_option("--variants", variantList,
                 "FFN variants, comma-separated: swiglu, clamped_bias (gpt-oss), weight_on_input "
                 "(Llama 4)");
  app.add_option("--repeats", repeats, "Runs per measurement (medians are reported)")
      ->transform(moe::cli::integer(1, 1000));
  app.add_option("--threads", threads, "BLAS threads")->transform(moe::cli::integer(1, 256));
  app.add_option("--device", device, "Where expertFfn runs: cpu (BLAS) or cuda:N");
  app.add_option("--rows-per-expert", rowsPerExpertList,
                 "CUDA only: rows each expert takes in the grouped-vs-dense comparison")
      ->transform(moe::cli::unsignedList(1, 1 << 16, /*allowEmpty=*/false));
  if (auto status = moe::cli::parse(app, argc, argv)) return *status;
  if (topK > experts) return moe::cli::usageError(app, "--top-k exceeds --experts");
  std::vector<uint32_t> batches;
  for (uint64_t b : moe::cli::splitUnsignedList(batchList))
    batches.push_back(static_cast<uint32_t>(b));
  std::vector<moe::DType> dtypes;
  for (const std::string& d : splitNames(dtypeList)) {
    if (d == "f32") {
      dtypes.push_back(moe::DType::kF32);
    } else if (d == "bf16") {
      dtypes.push_back(moe::DType::kBF16);
    } else if (d == "f16") {
      dtypes.push_back(moe::DType::kF16);
    } else {
      return moe::cli::usageError(app, "--dtypes: unknown dtype '" + d + "' (f32, bf16, f16)");
    }
  }
  std::vector<Variant> variants;
  for (const std::string& v : splitNames(variantList)) {
    if (v == "swiglu") {
      variants.push_back({"swiglu", false, false});
    } else if (v == "clamped_bias") {
      variants.push_back({"clamped_bias", true, false});
    } else if (v == "weight_on_input") {
      variants.push_back({"weight_on_input", false, true});
    } else {
      return moe::cli::usageError(app, "--variants: unknown variant '" + v + "'");
    }
  }

  moe::kernels::BackendKind kind = moe::kernels::BackendKind::kBlas;
  int deviceIndex = 0;
  if (!parseDevice(device, &kind, &deviceIndex)) {
    return moe::cli::usageError(app, "--device: '" + device + "' is not cpu or cuda:N");
  }
  const bool cuda = kind == moe::kernels::BackendKind::kCuda;
  moe::kernels::setBlasThreads(threads);
  auto created = moe::kernels::createBackend(kind, deviceIndex);
  if (!created.isOk()) {
    std::fprintf(stderr, "%s: %s\n", device.c_str(), created.error().c_str());
    return 1;
  }
  auto backend = std::move(created).value();
  for (moe::DType dtype : dtypes) {
    if (!backend->supports(moe::kernels::Op::kExpertFfn, dtype)) {
      std::fprintf(stderr, "%s does not hold %s weights\n", std::string(backend->name()).c_str(),
                   std::string(moe::dtypeName(dtype)).c_str());
      return 1;
    }
  }
  const size_t H = hidden, I = inter, E = experts;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (float& f : v) f = normal(rng) * scale;
    return v;
  };
  if (cuda) {
    std::printf(
        "machine: %s\nshape: hidden %u, intermediate %u, %u experts, top-%u, device %s, medians "
        "of %d runs\n",
        machine().c_str(), hidden, inter, experts, topK, std::string(backend->name()).c_str(),
        repeats);
    for (moe::DType dtype : dtypes) {
      std::printf("kernel %s: %s\n", std::string(moe::dtypeName(dtype)).c_str(),
                  backend->kernelPath(dtype).c_str());
    }
  } else {
    std::printf(
        "machine: %s\nshape: hidden %u, intermediate %u, %u experts, top-%u, %d BLAS "
        "thread(s), medians of %d runs\n",
        machine().c_str(), hidden, inter, experts, topK, threads, repeats);
  }
  std::printf("%-16s %-5s %6s %12s %10s\n", "variant", "dtype", "batch", "median_us", "GFLOP/s");
  for (moe::DType dtype : dtypes) {
    // The experts' matrices once per dtype (shared by the variants: only the view differs).
    std::vector<std::unique_ptr<moe::kernels::Matrix>> mats;
    std::vector<moe::kernels::ExpertFfnWeights> plain;
    for (size_t e = 0; e < E; ++e) {
      mats.push_back(backend->upload(random(I * H, 0.02f), I, H, dtype).value());
      mats.push_back(backend->upload(random(I * H, 0.02f), I, H, dtype).value());
      mats.push_back(backend->upload(random(H * I, 0.02f), H, I, dtype).value());
      plain.push_back({mats[3 * e].get(), mats[3 * e + 1].get(), mats[3 * e + 2].get()});
    }
    // gpt-oss's variant: the same matrices with f32 biases and the clamped activation.
    std::vector<std::unique_ptr<moe::kernels::Matrix>> biases;
    std::vector<moe::kernels::ExpertFfnWeights> clamped = plain;
    for (auto& w : clamped) {
      for (const moe::kernels::Matrix** b : {&w.b1, &w.b3}) {
        biases.push_back(backend->upload(random(I, 1.0f), I, 1).value());
        *b = biases.back().get();
      }
      biases.push_back(backend->upload(random(H, 0.1f), H, 1).value());
      w.b2 = biases.back().get();
      w.activation = {moe::kernels::FfnActivation::Kind::kClampedSwiglu, 1.702f, 7.0f};
    }
    for (const Variant& variant : variants) {
      const std::vector<moe::kernels::ExpertFfnWeights>& ffn =
          variant.clampedWithBias ? clamped : plain;
      for (uint32_t B : batches) {
        // Each token picks topK distinct experts; segments in expert order, as a shard gets them.
        std::vector<std::vector<uint32_t>> rowsOf(E);
        std::vector<size_t> order(E);
        for (size_t e = 0; e < E; ++e) order[e] = e;
        for (uint32_t t = 0; t < B; ++t) {
          std::shuffle(order.begin(), order.end(), rng);
          for (size_t j = 0; j < topK; ++j) rowsOf[order[j]].push_back(t);
        }
        std::vector<uint32_t> offsets{0}, rows;
        for (const auto& r : rowsOf) {
          rows.insert(rows.end(), r.begin(), r.end());
          offsets.push_back(static_cast<uint32_t>(rows.size()));
        }
        std::vector<float> weights(rows.size(), 0.5f), x = random(size_t{B} * H, 1.0f),
                                                       y(size_t{B} * H);
        moe::kernels::ExpertSegments segments{ffn, offsets, rows, weights, variant.weightOnInput};
        std::vector<double> times;
        for (int r = 0; r < repeats + 1; ++r) {
          const auto t0 = Clock::now();
          if (auto s = backend->expertFfn(segments, x, B, H, y); !s) {
            std::fprintf(stderr, "expertFfn: %s\n", s.message().c_str());
            return 1;
          }
          if (r > 0) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        }
        const double sec = median(times);
        const double flops = 3.0 * 2.0 * double(rows.size()) * double(H) * double(I);
        std::printf("%-16s %-5s %6u %12.1f %10.1f\n", variant.name,
                    std::string(moe::dtypeName(dtype)).c_str(), B, sec * 1e6, flops / sec / 1e9);
      }
    }
  }
  if (!cuda) return 0;

  // Issue 12's GPU criterion: grouped bf16 >= 60 % of dense cuBLAS bf16 at >= 256 rows per
  // expert. ratio = dense time / grouped time for the same FLOPs.
  std::vector<uint32_t> rowsPerExpert;
  for (uint64_t r : moe::cli::splitUnsignedList(rowsPerExpertList)) {
    rowsPerExpert.push_back(static_cast<uint32_t>(r));
  }
  std::printf(
      "\ngrouped vs dense, %u experts x R rows (every expert takes every row), ratio = dense time "
      "/ grouped time\n",
      experts);
  std::printf("%-22s %-5s %6s %12s %12s %10s %8s\n", "measured", "dtype", "R", "grouped_us",
              "dense_us", "GFLOP/s", "ratio");
  for (moe::DType dtype : dtypes) {
    // Expert 0's matrices stand in for the dense layer (same shape).
    std::vector<std::unique_ptr<moe::kernels::Matrix>> mats;
    std::vector<moe::kernels::ExpertFfnWeights> ffn;
    for (size_t e = 0; e < E; ++e) {
      mats.push_back(backend->upload(random(I * H, 0.02f), I, H, dtype).value());
      mats.push_back(backend->upload(random(I * H, 0.02f), I, H, dtype).value());
      mats.push_back(backend->upload(random(H * I, 0.02f), H, I, dtype).value());
      ffn.push_back({mats[3 * e].get(), mats[3 * e + 1].get(), mats[3 * e + 2].get()});
    }
    for (uint32_t R : rowsPerExpert) {
      std::vector<uint32_t> offsets{0}, rows;
      for (size_t e = 0; e < E; ++e) {
        for (uint32_t r = 0; r < R; ++r) rows.push_back(r);
        offsets.push_back(static_cast<uint32_t>(rows.size()));
      }
      std::vector<float> weights(rows.size(), 0.5f), x = random(size_t{R} * H, 1.0f),
                                                     y(size_t{R} * H);
      moe::kernels::ExpertSegments segments{ffn, offsets, rows, weights, false};
      bool failed = false;
      const double grouped = medianSeconds(repeats, [&] {
        if (auto s = backend->expertFfn(segments, x, R, H, y); !s) {
          std::fprintf(stderr, "expertFfn: %s\n", s.message().c_str());
          failed = true;
        }
      });
      const size_t total = E * R;
      const std::vector<float> xDense = random(total * H, 1.0f);
      std::vector<float> h1(total * I), h3(total * I), out(total * H);
      const double dense = medianSeconds(repeats, [&] {
        for (auto [w, in, o] :
             {std::tuple{ffn[0].w1, &xDense, &h1}, std::tuple{ffn[0].w3, &xDense, &h3},
              std::tuple{ffn[0].w2, static_cast<const std::vector<float>*>(&h1), &out}}) {
          if (auto s = backend->linear(*w, *in, total, *o); !s) {
            std::fprintf(stderr, "linear: %s\n", s.message().c_str());
            failed = true;
          }
        }
      });
      if (failed) return 1;
      const double flops = 3.0 * 2.0 * double(total) * double(H) * double(I);
      std::printf("%-22s %-5s %6u %12.1f %12.1f %10.1f %8.2f\n", "backend calls",
                  std::string(moe::dtypeName(dtype)).c_str(), R, grouped * 1e6, dense * 1e6,
                  flops / grouped / 1e9, dense / grouped);
#ifdef MOE_HAVE_CUDA
      if (dtype == moe::DType::kBF16) {
        auto gemms = moe::kernels::compareCudaExpertGemms(deviceIndex, E, R, H, I, repeats);
        if (!gemms.isOk()) {
          std::fprintf(stderr, "device GEMMs: %s\n", gemms.error().c_str());
          return 1;
        }
        const moe::kernels::CudaGemmComparison& g = gemms.value();
        std::printf("%-22s %-5s %6u %12.1f %12.1f %10.1f %8.2f\n", "device GEMMs only", "bf16", R,
                    g.groupedSeconds * 1e6, g.denseSeconds * 1e6, g.flops / g.groupedSeconds / 1e9,
                    g.denseSeconds / g.groupedSeconds);
      }
#endif
    }
  }
  return 0;
}
