// Backend-ops test (after llama.cpp's test-backend-ops): every operation case runs on every
// available backend and is compared with the reference backend by normalized mean squared error,
// with NaN/Inf checks, NaN-prefilled outputs (an unwritten element shows up as NaN) and poisoned
// guard elements past the end of every output (an out-of-bounds write shows up as a changed
// guard).  Integer outputs (expert ids) must match exactly.  Analytic cases check the reference
// itself against closed forms.  CUDA cases skip when no GPU is usable.  The typed suite at the end
// adds the dtype axis: every op × backend × weight dtype (f32, bf16, f16) against the fp32
// reference, with NMSE thresholds per dtype; a dtype a backend does not support must be refused
// with an error (and its cases skip).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "kernels/moe_layer.h"
#include "kernels/reference_backend.h"

namespace moe::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

constexpr size_t kGuard = 16;                      // poisoned elements past every output
constexpr uint32_t kFloatGuardBits = 0x7fc0deadu;  // a NaN with a payload no op produces
constexpr uint32_t kIdGuard = 0xdeadbeefu;
constexpr uint32_t kIdUnwritten = 0xffffffffu;  // prefill: never a valid expert id
constexpr double kNmseTol = 1e-10;              // fp32 results vs the double reference

template <typename T>
T must(Result<T> r) {
  if (!r.isOk()) throw std::runtime_error(r.error());
  return std::move(r).value();
}

// An output buffer: n live elements prefilled with `fill`, then kGuard poisoned elements.
template <typename T>
class Guarded {
 public:
  Guarded(size_t n, T fill, T guard) : n_(n), guard_(guard), data_(n + kGuard, fill) {
    std::fill(data_.begin() + static_cast<std::ptrdiff_t>(n), data_.end(), guard);
  }
  std::span<T> span() { return {data_.data(), n_}; }
  std::span<const T> view() const { return {data_.data(), n_}; }
  bool guardIntact() const {
    for (size_t i = n_; i < data_.size(); ++i) {
      if (std::bit_cast<uint32_t>(data_[i]) != std::bit_cast<uint32_t>(guard_)) return false;
    }
    return true;
  }

 private:
  size_t n_;
  T guard_;
  std::vector<T> data_;
};

Guarded<float> floatOutput(size_t n) {
  return Guarded<float>(n, std::numeric_limits<float>::quiet_NaN(),
                        std::bit_cast<float>(kFloatGuardBits));
}
Guarded<uint32_t> idOutput(size_t n) {
  return Guarded<uint32_t>(n, kIdUnwritten, kIdGuard);
}

// All finite, NMSE = Σ(a-b)²/Σb² within `tol`, and max |a-b| small relative to the data.
::testing::AssertionResult closeTo(std::span<const float> got, std::span<const float> want,
                                   double tol = kNmseTol, double maxRel = 1e-4) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  double err = 0.0, ref = 0.0, maxAbs = 0.0, refMax = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      return ::testing::AssertionFailure() << "non-finite output " << got[i] << " at " << i;
    }
    if (!std::isfinite(want[i])) {
      return ::testing::AssertionFailure() << "non-finite reference " << want[i] << " at " << i;
    }
    const double d = double(got[i]) - double(want[i]);
    err += d * d;
    ref += double(want[i]) * double(want[i]);
    maxAbs = std::max(maxAbs, std::abs(d));
    refMax = std::max(refMax, std::abs(double(want[i])));
  }
  const double nmse = ref > 0.0 ? err / ref : err;
  if (nmse > tol) return ::testing::AssertionFailure() << "NMSE " << nmse << " > " << tol;
  if (maxAbs > maxRel * std::max(1.0, refMax)) {
    return ::testing::AssertionFailure()
           << "max |diff| " << maxAbs << " (max |ref| " << refMax << ")";
  }
  return ::testing::AssertionSuccess();
}

std::vector<float> randomVector(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Scaled identity [n, n] (w1 = a·I etc. make FFN(x) elementwise and known by hand).
std::vector<float> scaledIdentity(size_t n, float s) {
  std::vector<float> m(n * n, 0.0f);
  for (size_t i = 0; i < n; ++i) m[i * n + i] = s;
  return m;
}

double silu(double z) {
  return z / (1.0 + std::exp(-z));
}

// Host weights of one expert: w1, w3 [I, H], w2 [H, I]; biases b1, b3 [I], b2 [H] (empty: none)
// and the activation. A non-gated (relu2) expert has no w1 (empty: uploaded as null).
struct HostExpert {
  std::vector<float> w1, w3, w2;
  std::vector<float> b1 = {}, b3 = {}, b2 = {};
  FfnActivation activation = {};
};

std::vector<HostExpert> randomExperts(std::mt19937& rng, size_t E, size_t H, size_t I) {
  std::vector<HostExpert> experts(E);
  const float sh = 1.0f / std::sqrt(float(H)), si = 1.0f / std::sqrt(float(I));
  for (HostExpert& e : experts) {
    e.w1 = randomVector(rng, I * H, -sh, sh);
    e.w3 = randomVector(rng, I * H, -sh, sh);
    e.w2 = randomVector(rng, H * I, -si, si);
  }
  return experts;
}

// Experts uploaded to one backend; `ffn[e]` points into `mats`.
struct ExpertSet {
  std::vector<std::unique_ptr<Matrix>> mats;
  std::vector<ExpertFfnWeights> ffn;  // [E]
};

// Weights in `dtype`; biases (when the host expert has them) always f32 [n, 1] (backend.h).
ExpertSet uploadExperts(Backend& b, const std::vector<HostExpert>& host, size_t H, size_t I,
                        DType dtype = DType::kF32) {
  ExpertSet set;
  auto bias = [&](const std::vector<float>& v) -> const Matrix* {
    if (v.empty()) return nullptr;
    set.mats.push_back(must(b.upload(v, v.size(), 1, DType::kF32)));
    return set.mats.back().get();
  };
  for (const HostExpert& e : host) {
    const Matrix* w1 = nullptr;
    if (!e.w1.empty()) {
      set.mats.push_back(must(b.upload(e.w1, I, H, dtype)));
      w1 = set.mats.back().get();
    }
    set.mats.push_back(must(b.upload(e.w3, I, H, dtype)));
    set.mats.push_back(must(b.upload(e.w2, H, I, dtype)));
    const size_t m = set.mats.size();
    ExpertFfnWeights w{w1, set.mats[m - 2].get(), set.mats[m - 1].get()};
    w.b1 = bias(e.b1);
    w.b3 = bias(e.b3);
    w.b2 = bias(e.b2);
    w.activation = e.activation;
    set.ffn.push_back(w);
  }
  return set;
}

// The expert FFN variants of the families (backend.h): which activation, biases and where the
// routing weight applies.
struct FfnVariant {
  const char* name;
  bool clamped;        // gpt-oss's clamped SwiGLU (alpha 1.702, limit 7)
  bool biases;         // b1, b3, b2
  bool weightOnInput;  // Llama 4
  bool relu2 = false;  // NemotronH: non-gated relu², no w1 (biases: b3, b2 only)
};
constexpr FfnVariant kFfnVariants[] = {
    {"gpt-oss: clamped SwiGLU + biases", true, true, false},
    {"biases, plain SwiGLU", false, true, false},
    {"clamped SwiGLU, no biases", true, false, false},
    {"Llama 4: weight on the input", false, false, true},
    {"clamped + biases + weight on the input", true, true, true},
    {"NemotronH: non-gated relu2", false, false, false, true},
    {"relu2 + biases + weight on the input", false, true, true, true},
};
constexpr float kGptOssAlpha = 1.702f, kGptOssLimit = 7.0f;

// Gives `host` the variant's activation and biases. The biases are wide (±12 around the data's
// ±~1 pre-activations) so that many h1 = w1·x + b1 exceed +limit and many h3 lie beyond ±limit:
// the clamp is hit on both sides (ClampCoverage checks it is).
void applyVariant(std::mt19937& rng, std::vector<HostExpert>& host, const FfnVariant& v, size_t H,
                  size_t I) {
  for (HostExpert& e : host) {
    if (v.clamped) {
      e.activation = {FfnActivation::Kind::kClampedSwiglu, kGptOssAlpha, kGptOssLimit};
    }
    if (v.relu2) {
      e.activation = {FfnActivation::Kind::kRelu2};
      e.w1.clear();
    }
    if (v.biases) {
      if (!v.relu2) e.b1 = randomVector(rng, I, -12.0f, 12.0f);
      e.b3 = randomVector(rng, I, -12.0f, 12.0f);
      e.b2 = randomVector(rng, H, -1.0f, 1.0f);
    }
  }
}

// How many of the pre-activations over rows x [R, H] fall beyond the clamp: h1 > limit, h3 <
// -limit, h3 > limit (computed here in double from the host weights).
struct ClampCoverage {
  size_t gateAbove = 0, upBelow = 0, upAbove = 0;
};
ClampCoverage clampCoverage(const std::vector<HostExpert>& host, std::span<const float> x, size_t R,
                            size_t H, size_t I) {
  ClampCoverage c;
  for (const HostExpert& e : host) {
    if (e.b1.empty()) continue;
    for (size_t r = 0; r < R; ++r) {
      for (size_t i = 0; i < I; ++i) {
        double g = e.b1[i], u = e.b3[i];
        for (size_t h = 0; h < H; ++h) {
          g += double(e.w1[i * H + h]) * x[r * H + h];
          u += double(e.w3[i * H + h]) * x[r * H + h];
        }
        c.gateAbove += g > kGptOssLimit;
        c.upBelow += u < -kGptOssLimit;
        c.upAbove += u > kGptOssLimit;
      }
    }
  }
  return c;
}

// CSR segments like a shard would receive: segment s runs expert expertOf[s].
struct Routing {
  std::vector<size_t> expertOf;   // [S]
  std::vector<uint32_t> offsets;  // [S + 1]
  std::vector<uint32_t> rows;     // [entries]
  std::vector<float> weights;     // [entries]

  // The segments with experts taken from `set` (which must outlive the result).
  std::vector<ExpertFfnWeights> segmentExperts(const ExpertSet& set) const {
    std::vector<ExpertFfnWeights> out;
    for (size_t e : expertOf) out.push_back(set.ffn[e]);
    return out;
  }
};

// Each routed token picks k distinct experts among `allowed`; every third-ish token is left
// unrouted when `skipSome` (its output row must come back 0).  Rows within a segment and the
// segment order are shuffled; experts outside `allowed` get empty segments.
Routing makeRouting(std::mt19937& rng, size_t R, size_t E, size_t k,
                    const std::vector<size_t>& allowed, bool skipSome) {
  std::vector<std::vector<std::pair<uint32_t, float>>> perExpert(E);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  std::vector<size_t> choice = allowed;
  for (size_t t = 0; t < R; ++t) {
    if (skipSome && t % 5 == 3) continue;
    std::shuffle(choice.begin(), choice.end(), rng);
    for (size_t j = 0; j < k; ++j) perExpert[choice[j]].push_back({uint32_t(t), weight(rng)});
  }
  Routing r;
  r.expertOf.resize(E);
  std::iota(r.expertOf.begin(), r.expertOf.end(), size_t{0});
  std::shuffle(r.expertOf.begin(), r.expertOf.end(), rng);
  r.offsets.push_back(0);
  for (size_t e : r.expertOf) {
    auto& list = perExpert[e];
    std::shuffle(list.begin(), list.end(), rng);
    for (auto [row, w] : list) {
      r.rows.push_back(row);
      r.weights.push_back(w);
    }
    r.offsets.push_back(uint32_t(r.rows.size()));
  }
  return r;
}

ExpertSegments segmentsOf(const Routing& r, std::span<const ExpertFfnWeights> experts,
                          bool weightOnInput = false) {
  return ExpertSegments{experts, r.offsets, r.rows, r.weights, weightOnInput};
}

std::string kindName(BackendKind k) {
  switch (k) {
    case BackendKind::kReference:
      return "reference";
    case BackendKind::kBlas:
      return "blas";
    case BackendKind::kCuda:
      return "cuda";
    case BackendKind::kAuto:
      return "auto";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Fixture: the backend under test (GetParam) next to a reference backend for the golden results.

class BackendOpsTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kCuda && cudaDeviceCount() == 0) {
      GTEST_SKIP() << "no usable CUDA device (no GPU, no driver, or a build without CUDA): "
                      "CUDA backend cases skipped";
    }
    auto b = createBackend(GetParam(), 0);
    ASSERT_TRUE(b.isOk()) << b.error();
    test_ = std::move(b).value();
    ref_ = makeReferenceBackend();
  }

  Backend& test() { return *test_; }
  Backend& ref() { return *ref_; }

  // Runs linear on both backends and compares.
  void checkLinear(std::mt19937& rng, size_t T, size_t N, size_t K) {
    SCOPED_TRACE("linear T=" + std::to_string(T) + " N=" + std::to_string(N) +
                 " K=" + std::to_string(K));
    const std::vector<float> w = randomVector(rng, N * K, -1.0f, 1.0f);
    const std::vector<float> x = randomVector(rng, T * K, -1.0f, 1.0f);
    auto wRef = must(ref().upload(w, N, K));
    auto wTest = must(test().upload(w, N, K));
    std::vector<float> want(T * N);
    ASSERT_TRUE(ref().linear(*wRef, x, T, want).isOk());
    Guarded<float> got = floatOutput(T * N);
    const Status s = test().linear(*wTest, x, T, got.span());
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(closeTo(got.view(), want));
    EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
  }

  // Runs softmaxTopk on both backends: exact ids, close weights, plus invariants.
  void checkSoftmaxTopk(std::span<const float> logits, size_t T, size_t E, size_t k,
                        bool renormalize) {
    std::vector<uint32_t> wantIds(T * k);
    std::vector<float> wantW(T * k);
    ASSERT_TRUE(ref().softmaxTopk(logits, T, E, k, renormalize, wantIds, wantW).isOk());
    Guarded<uint32_t> ids = idOutput(T * k);
    Guarded<float> w = floatOutput(T * k);
    const Status s = test().softmaxTopk(logits, T, E, k, renormalize, ids.span(), w.span());
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(ids.guardIntact()) << "write past the end of ids";
    EXPECT_TRUE(w.guardIntact()) << "write past the end of weights";
    EXPECT_TRUE(std::equal(wantIds.begin(), wantIds.end(), ids.view().begin()))
        << "expert ids differ from the reference";
    EXPECT_TRUE(closeTo(w.view(), wantW));
    for (size_t t = 0; t < T; ++t) {
      std::vector<bool> seen(E, false);
      double sum = 0.0;
      for (size_t j = 0; j < k; ++j) {
        const uint32_t id = ids.view()[t * k + j];
        ASSERT_LT(id, E) << "row " << t;
        EXPECT_FALSE(seen[id]) << "row " << t << " repeats expert " << id;
        seen[id] = true;
        if (j > 0) {
          EXPECT_LE(w.view()[t * k + j], w.view()[t * k + j - 1]) << "row " << t;
        }
        sum += w.view()[t * k + j];
      }
      if (renormalize) {
        EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << t;
      }
    }
  }

 private:
  std::unique_ptr<Backend> test_, ref_;
};

// ---------------------------------------------------------------------------------------------
// linear

TEST_P(BackendOpsTest, Linear) {
  std::mt19937 rng(1);
  const std::pair<size_t, size_t> shapes[] = {{1, 1}, {3, 5}, {67, 129}, {33, 1025}};
  for (size_t T : {0, 1, 7, 33, 256}) {
    for (auto [N, K] : shapes) checkLinear(rng, T, N, K);
  }
}

TEST_P(BackendOpsTest, LinearRejectsBadShapes) {
  std::vector<float> w(6, 1.0f), x(3 * 2, 1.0f), y(3 * 3, 0.0f);
  auto m = must(test().upload(w, 3, 2));
  EXPECT_TRUE(test().linear(*m, x, 3, y).isOk());
  EXPECT_FALSE(test().linear(*m, std::span<const float>(x).first(5), 3, y).isOk());
  EXPECT_FALSE(test().linear(*m, x, 3, std::span<float>(y).first(8)).isOk());
  EXPECT_FALSE(test().upload(w, 4, 2).isOk());
}

// A Matrix no backend created: every backend must refuse it with an error, not crash.
class ForeignMatrix final : public Matrix {
 public:
  using Matrix::Matrix;
};

TEST_P(BackendOpsTest, RejectsForeignMatrix) {
  const ForeignMatrix foreign(2, 3);
  std::vector<float> x(3, 1.0f), y(2);
  EXPECT_FALSE(test().linear(foreign, x, 1, y).isOk());
  const std::vector<ExpertFfnWeights> experts = {{&foreign, &foreign, &foreign}};
  const std::vector<uint32_t> offsets = {0, 1}, rows = {0};
  const std::vector<float> one = {1.0f};
  // H = 3 but w2 is [2, 3]: a shape error; with H = 2 the shapes fail too. Either way an error.
  EXPECT_FALSE(
      test().expertFfn({experts, offsets, rows, one}, x, 1, 3, std::span(y).first(0)).isOk());
  const ForeignMatrix square(3, 3);
  const std::vector<ExpertFfnWeights> squareExperts = {{&square, &square, &square}};
  std::vector<float> y3(3);
  EXPECT_FALSE(test().expertFfn({squareExperts, offsets, rows, one}, x, 1, 3, y3).isOk());
}

// ---------------------------------------------------------------------------------------------
// swiglu

TEST_P(BackendOpsTest, Swiglu) {
  std::mt19937 rng(2);
  for (size_t n : {0, 1, 2, 7, 1000, 4099}) {
    SCOPED_TRACE("swiglu n=" + std::to_string(n));
    std::vector<float> gate = randomVector(rng, n, -8.0f, 8.0f);
    const std::vector<float> up = randomVector(rng, n, -3.0f, 3.0f);
    // Saturating inputs (exp(-g) overflows to inf for g < -88 in fp32), mixed into larger cases
    // only: alone, their denormal outputs would make the relative NMSE meaningless.
    const float extremes[] = {-100.0f, -88.5f, -30.0f, 0.0f, 30.0f, 88.5f, 100.0f};
    if (n >= 100) std::copy(std::begin(extremes), std::end(extremes), gate.begin() + 50);
    std::vector<float> want(n);
    ASSERT_TRUE(ref().swiglu(gate, up, want).isOk());
    Guarded<float> got = floatOutput(n);
    const Status s = test().swiglu(gate, up, got.span());
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(closeTo(got.view(), want));
    EXPECT_TRUE(got.guardIntact());
  }
}

TEST_P(BackendOpsTest, SwigluKnownValues) {
  const std::vector<float> gate = {0.0f, 1.0f, -1.0f, 2.0f};
  const std::vector<float> up = {5.0f, 2.0f, 3.0f, -0.5f};
  Guarded<float> got = floatOutput(4);
  ASSERT_TRUE(test().swiglu(gate, up, got.span()).isOk());
  for (size_t i = 0; i < gate.size(); ++i) {
    EXPECT_NEAR(got.view()[i], silu(gate[i]) * up[i], 1e-6) << i;
  }
  EXPECT_TRUE(got.guardIntact());
  std::vector<float> shortOut(3);
  EXPECT_FALSE(test().swiglu(gate, up, shortOut).isOk());
}

// ---------------------------------------------------------------------------------------------
// softmaxTopk

TEST_P(BackendOpsTest, SoftmaxTopk) {
  std::mt19937 rng(3);
  for (size_t T : {0, 1, 7, 257}) {
    for (size_t E : {1, 2, 8, 60}) {
      const std::vector<float> logits = randomVector(rng, T * E, -4.0f, 4.0f);
      for (size_t k : {size_t{1}, size_t{2}, E}) {
        if (k > E) continue;
        for (bool renormalize : {false, true}) {
          SCOPED_TRACE("softmaxTopk T=" + std::to_string(T) + " E=" + std::to_string(E) +
                       " k=" + std::to_string(k) + " renormalize=" + std::to_string(renormalize));
          checkSoftmaxTopk(logits, T, E, k, renormalize);
        }
      }
    }
  }
}

// Runs one row through the backend under test.
struct TopkRow {
  std::vector<uint32_t> ids;
  std::vector<float> weights;
};
TopkRow topkRow(Backend& b, std::vector<float> logits, size_t k, bool renormalize) {
  TopkRow r{std::vector<uint32_t>(k, kIdUnwritten), std::vector<float>(k, NAN)};
  const Status s = b.softmaxTopk(logits, 1, logits.size(), k, renormalize, r.ids, r.weights);
  if (!s.isOk()) throw std::runtime_error(s.message());
  return r;
}

TEST_P(BackendOpsTest, SoftmaxTopkTies) {
  using Ids = std::vector<uint32_t>;
  // All equal: ids 0..k-1, each weight 1/E (1/k renormalized).
  TopkRow r = topkRow(test(), std::vector<float>(8, 0.25f), 3, false);
  EXPECT_EQ(r.ids, (Ids{0, 1, 2}));
  for (float w : r.weights) EXPECT_NEAR(w, 1.0 / 8, 1e-7);
  r = topkRow(test(), std::vector<float>(8, -3.0f), 3, true);
  EXPECT_EQ(r.ids, (Ids{0, 1, 2}));
  for (float w : r.weights) EXPECT_NEAR(w, 1.0 / 3, 1e-7);
  // k = E with all equal: the identity order.
  r = topkRow(test(), std::vector<float>(5, 1.0f), 5, false);
  EXPECT_EQ(r.ids, (Ids{0, 1, 2, 3, 4}));

  // Two equal maxima: lower id first, then the rest by probability.
  r = topkRow(test(), {1.0f, 5.0f, 2.0f, 5.0f}, 2, false);
  EXPECT_EQ(r.ids, (Ids{1, 3}));
  EXPECT_EQ(r.weights[0], r.weights[1]);
  r = topkRow(test(), {1.0f, 5.0f, 2.0f, 5.0f}, 3, false);
  EXPECT_EQ(r.ids, (Ids{1, 3, 2}));
  r = topkRow(test(), {5.0f, 1.0f, 5.0f, 5.0f}, 2, false);
  EXPECT_EQ(r.ids, (Ids{0, 2}));
  // Equal values ranked below a unique maximum.
  r = topkRow(test(), {0.0f, 2.0f, 7.0f, 2.0f, 2.0f}, 3, false);
  EXPECT_EQ(r.ids, (Ids{2, 1, 3}));
}

TEST_P(BackendOpsTest, SoftmaxTopkHandComputed) {
  using Ids = std::vector<uint32_t>;
  // p = {1, 2, 5} / 8.
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(5.0f)};
  TopkRow r = topkRow(test(), logits, 2, false);
  EXPECT_EQ(r.ids, (Ids{2, 1}));
  EXPECT_NEAR(r.weights[0], 5.0 / 8, 1e-6);
  EXPECT_NEAR(r.weights[1], 2.0 / 8, 1e-6);
  r = topkRow(test(), logits, 2, true);
  EXPECT_EQ(r.ids, (Ids{2, 1}));
  EXPECT_NEAR(r.weights[0], 5.0 / 7, 1e-6);
  EXPECT_NEAR(r.weights[1], 2.0 / 7, 1e-6);
  // p = {1/4, 3/4}, k = 1.
  r = topkRow(test(), {0.0f, std::log(3.0f)}, 1, false);
  EXPECT_EQ(r.ids, (Ids{1}));
  EXPECT_NEAR(r.weights[0], 0.75, 1e-6);
  r = topkRow(test(), {0.0f, std::log(3.0f)}, 1, true);
  EXPECT_NEAR(r.weights[0], 1.0, 1e-6);
  // Large logits: only correct if the row max is subtracted before exp (e^1000 overflows).
  r = topkRow(test(), {1000.0f, 999.0f, 1000.0f}, 3, false);
  EXPECT_EQ(r.ids, (Ids{0, 2, 1}));
  const double z = 2.0 + std::exp(-1.0);
  EXPECT_NEAR(r.weights[0], 1.0 / z, 1e-6);
  EXPECT_NEAR(r.weights[2], std::exp(-1.0) / z, 1e-6);
  // E = 1: the only expert with weight 1.
  r = topkRow(test(), {-7.0f}, 1, false);
  EXPECT_EQ(r.ids, (Ids{0}));
  EXPECT_NEAR(r.weights[0], 1.0, 1e-7);
}

TEST_P(BackendOpsTest, SoftmaxTopkNanDoesNotCrash) {
  // Callers reject NaN; the op only has to stay in bounds and return valid, distinct ids.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const std::vector<float>& logits :
       {std::vector<float>{1.0f, nan, 3.0f, 0.5f}, std::vector<float>(4, nan)}) {
    Guarded<uint32_t> ids = idOutput(3);
    Guarded<float> w = floatOutput(3);
    ASSERT_TRUE(test().softmaxTopk(logits, 1, 4, 3, true, ids.span(), w.span()).isOk());
    std::vector<uint32_t> got(ids.view().begin(), ids.view().end());
    for (uint32_t id : got) EXPECT_LT(id, 4u);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(std::adjacent_find(got.begin(), got.end()), got.end()) << "repeated expert id";
    EXPECT_TRUE(ids.guardIntact());
    EXPECT_TRUE(w.guardIntact());
  }
}

TEST_P(BackendOpsTest, SoftmaxTopkRejectsBadK) {
  std::vector<float> logits(2 * 4, 0.0f);
  std::vector<uint32_t> ids(2 * 5);
  std::vector<float> w(2 * 5);
  EXPECT_FALSE(test().softmaxTopk(logits, 2, 4, 0, false, {}, {}).isOk());
  EXPECT_FALSE(test().softmaxTopk(logits, 2, 4, 5, false, ids, w).isOk());
  EXPECT_FALSE(
      test()
          .softmaxTopk(logits, 2, 4, 2, false, std::span(ids).first(3), std::span(w).first(4))
          .isOk());
}

// ---------------------------------------------------------------------------------------------
// expertFfn

TEST_P(BackendOpsTest, ExpertFfn) {
  std::mt19937 rng(4);
  constexpr size_t E = 6, H = 33, I = 20;
  const std::vector<HostExpert> host = randomExperts(rng, E, H, I);
  const ExpertSet onRef = uploadExperts(ref(), host, H, I);
  const ExpertSet onTest = uploadExperts(test(), host, H, I);
  struct Mode {
    const char* name;
    size_t k;
    std::vector<size_t> allowed;
    bool skipSome;
  };
  const Mode modes[] = {
      {"k=2, experts 2 and 5 idle, some rows unrouted", 2, {0, 1, 3, 4}, true},
      {"k=1 over all experts", 1, {0, 1, 2, 3, 4, 5}, false},
      {"k=E, every row in every segment", E, {0, 1, 2, 3, 4, 5}, false},
  };
  for (size_t R : {0, 1, 7, 256}) {
    for (const Mode& mode : modes) {
      SCOPED_TRACE("expertFfn R=" + std::to_string(R) + " " + mode.name);
      const std::vector<float> x = randomVector(rng, R * H, -2.0f, 2.0f);
      const Routing routing = makeRouting(rng, R, E, mode.k, mode.allowed, mode.skipSome);
      const std::vector<ExpertFfnWeights> refExperts = routing.segmentExperts(onRef);
      const std::vector<ExpertFfnWeights> testExperts = routing.segmentExperts(onTest);
      std::vector<float> want(R * H);
      ASSERT_TRUE(ref().expertFfn(segmentsOf(routing, refExperts), x, R, H, want).isOk());
      Guarded<float> got = floatOutput(R * H);
      const Status s = test().expertFfn(segmentsOf(routing, testExperts), x, R, H, got.span());
      ASSERT_TRUE(s.isOk()) << s.message();
      EXPECT_TRUE(closeTo(got.view(), want));
      EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
      if (mode.skipSome) {
        for (size_t r = 3; r < R; r += 5) {
          for (size_t h = 0; h < H; ++h) ASSERT_EQ(got.view()[r * H + h], 0.0f) << "row " << r;
        }
      }
    }
  }
}

// w1 = a·I, w3 = b·I, w2 = c·I  ⇒  FFN(x) = c · silu(a·x) · (b·x) elementwise.
TEST_P(BackendOpsTest, ExpertFfnAnalytic) {
  constexpr size_t H = 5, R = 4;
  const float a[] = {0.5f, 1.5f}, b[] = {2.0f, -1.0f}, c[] = {-1.5f, 0.75f};
  std::vector<HostExpert> host(2);
  for (size_t e = 0; e < 2; ++e) {
    host[e] = {scaledIdentity(H, a[e]), scaledIdentity(H, b[e]), scaledIdentity(H, c[e])};
  }
  const ExpertSet onTest = uploadExperts(test(), host, H, H);
  const std::vector<float> x = {1.0f,  -2.0f, 0.5f,  3.0f,  -0.25f,  // row 0
                                0.0f,  4.0f,  -1.0f, 2.0f,  1.0f,    // row 1
                                9.0f,  9.0f,  9.0f,  9.0f,  9.0f,    // row 2: unrouted
                                -3.0f, 0.1f,  2.5f,  -0.7f, 1.2f};   // row 3
  // Segment 0 = expert 1: rows 1, 0.  Segment 1 = expert 0: rows 0, 3.
  const std::vector<ExpertFfnWeights> experts = {onTest.ffn[1], onTest.ffn[0]};
  const std::vector<uint32_t> offsets = {0, 2, 4}, rows = {1, 0, 0, 3};
  const std::vector<float> weights = {1.0f, 0.3f, 0.7f, 0.25f};
  Guarded<float> got = floatOutput(R * H);
  ASSERT_TRUE(test().expertFfn({experts, offsets, rows, weights}, x, R, H, got.span()).isOk());
  auto ffn = [&](size_t e, double v) { return c[e] * silu(a[e] * v) * (b[e] * v); };
  for (size_t h = 0; h < H; ++h) {
    const double want[R] = {0.3 * ffn(1, x[h]) + 0.7 * ffn(0, x[h]), ffn(1, x[H + h]), 0.0,
                            0.25 * ffn(0, x[3 * H + h])};
    for (size_t r = 0; r < R; ++r) {
      EXPECT_NEAR(got.view()[r * H + h], want[r], 1e-5 * (1.0 + std::abs(want[r])))
          << "row " << r << " h " << h;
    }
  }
  EXPECT_TRUE(got.guardIntact());
}

TEST_P(BackendOpsTest, ExpertFfnWithoutWorkZeroesY) {
  constexpr size_t H = 4, I = 3, R = 3;
  std::mt19937 rng(5);
  const ExpertSet onTest = uploadExperts(test(), randomExperts(rng, 2, H, I), H, I);
  const std::vector<float> x = randomVector(rng, R * H, -1.0f, 1.0f);
  // No segments at all (empty offsets allowed).
  Guarded<float> got = floatOutput(R * H);
  ASSERT_TRUE(test().expertFfn({}, x, R, H, got.span()).isOk());
  for (float v : got.view()) EXPECT_EQ(v, 0.0f);
  // Two segments, both empty.
  const std::vector<uint32_t> offsets = {0, 0, 0};
  Guarded<float> got2 = floatOutput(R * H);
  ASSERT_TRUE(test().expertFfn({onTest.ffn, offsets, {}, {}}, x, R, H, got2.span()).isOk());
  for (float v : got2.view()) EXPECT_EQ(v, 0.0f);
  EXPECT_TRUE(got.guardIntact());
  EXPECT_TRUE(got2.guardIntact());
}

TEST_P(BackendOpsTest, ExpertFfnRejectsBadSegments) {
  constexpr size_t H = 4, I = 3, R = 3;
  std::mt19937 rng(6);
  const ExpertSet onTest = uploadExperts(test(), randomExperts(rng, 2, H, I), H, I);
  const std::vector<float> x = randomVector(rng, R * H, -1.0f, 1.0f);
  std::vector<float> y(R * H);
  const std::vector<float> w2 = {1.0f, 1.0f};
  auto run = [&](std::vector<uint32_t> offsets, std::vector<uint32_t> rows,
                 std::vector<float> weights) {
    return test().expertFfn({onTest.ffn, offsets, rows, weights}, x, R, H, y);
  };
  EXPECT_TRUE(run({0, 1, 2}, {0, 2}, w2).isOk());
  EXPECT_FALSE(run({0, 1, 2}, {0, 3}, w2).isOk()) << "row out of range";
  EXPECT_FALSE(run({0, 2, 2}, {1, 1}, w2).isOk()) << "row twice in one segment";
  EXPECT_FALSE(run({0, 2}, {0, 1}, w2).isOk()) << "offsets too short";
  EXPECT_FALSE(run({1, 1, 2}, {0, 1}, w2).isOk()) << "offsets[0] != 0";
  EXPECT_FALSE(run({0, 2, 1}, {0, 1}, w2).isOk()) << "decreasing offsets";
  EXPECT_FALSE(run({0, 1, 2}, {0, 1}, {1.0f}).isOk()) << "weights too short";
  // A row in two different segments is fine.
  EXPECT_TRUE(run({0, 1, 2}, {1, 1}, w2).isOk());
  // Mismatched hidden size.
  std::vector<float> yBig((R + 1) * H);
  EXPECT_FALSE(test().expertFfn({}, x, R, H, yBig).isOk());
  // A matrix with the wrong shape.
  auto wrong = must(test().upload(std::vector<float>(I * (H + 1), 0.0f), I, H + 1));
  const std::vector<ExpertFfnWeights> bad = {{wrong.get(), onTest.ffn[0].w3, onTest.ffn[0].w2}};
  const std::vector<uint32_t> offsets = {0, 1}, rows = {0};
  const std::vector<float> one = {1.0f};
  EXPECT_FALSE(test().expertFfn({bad, offsets, rows, one}, x, R, H, y).isOk());
}

TEST_P(BackendOpsTest, ExpertFfnIsDeterministic) {
  std::mt19937 rng(7);
  constexpr size_t E = 4, H = 16, I = 24, R = 64;
  const ExpertSet onTest = uploadExperts(test(), randomExperts(rng, E, H, I), H, I);
  const std::vector<float> x = randomVector(rng, R * H, -1.0f, 1.0f);
  const Routing routing = makeRouting(rng, R, E, 2, {0, 1, 2, 3}, false);
  const std::vector<ExpertFfnWeights> experts = routing.segmentExperts(onTest);
  std::vector<float> first(R * H), second(R * H);
  ASSERT_TRUE(test().expertFfn(segmentsOf(routing, experts), x, R, H, first).isOk());
  ASSERT_TRUE(test().expertFfn(segmentsOf(routing, experts), x, R, H, second).isOk());
  EXPECT_EQ(0, std::memcmp(first.data(), second.data(), first.size() * sizeof(float)));
}

// gpt-oss's gate, written here from GptOssExperts._apply_gate (not from the backends' code).
double gptOssGate(double gate, double up) {
  gate = std::min(gate, double(kGptOssLimit));
  up = std::max(-double(kGptOssLimit), std::min(up, double(kGptOssLimit)));
  return (up + 1.0) * gate / (1.0 + std::exp(-double(kGptOssAlpha) * gate));
}

// Identity-shaped experts (w1 = a·I, w3 = b·I, w2 = c·I) with biases: FFN(x)_h =
// c · act(a·x_h + b1_h, b·x_h + b3_h) + b2_h, known by hand; rows chosen so the gate exceeds +limit
// and the up projection passes both -limit and +limit.
TEST_P(BackendOpsTest, ExpertFfnClampedWithBiasesAnalytic) {
  constexpr size_t H = 4, R = 3;
  const float a = 1.5f, b = -2.0f, c = 0.75f;
  HostExpert e{scaledIdentity(H, a), scaledIdentity(H, b), scaledIdentity(H, c)};
  e.b1 = {0.5f, 3.0f, -1.0f, 2.0f};
  e.b3 = {1.0f, -2.0f, 0.5f, 4.0f};
  e.b2 = {0.25f, -0.5f, 1.0f, 0.0f};
  e.activation = {FfnActivation::Kind::kClampedSwiglu, kGptOssAlpha, kGptOssLimit};
  const ExpertSet onTest = uploadExperts(test(), {e}, H, H);
  const std::vector<float> x = {6.0f,  4.0f,  -3.0f, 0.5f,   // g: 9.5 > 7, 9 > 7; u: -11 < -7
                                -5.0f, 1.0f,  2.0f,  -3.0f,  // u: 11 > 7 at h 0, 10 > 7 at h 3
                                0.2f,  -0.4f, 0.1f,  0.3f};  // inside the clamp everywhere
  const std::vector<uint32_t> offsets = {0, 3}, rows = {0, 1, 2};
  const std::vector<float> weights = {1.0f, 0.5f, 0.25f};
  for (bool onInput : {false, true}) {
    SCOPED_TRACE(onInput ? "weight on the input" : "weight on the output");
    Guarded<float> got = floatOutput(R * H);
    ASSERT_TRUE(test()
                    .expertFfn({onTest.ffn, offsets, rows, weights, onInput}, x, R, H, got.span())
                    .isOk());
    for (size_t r = 0; r < R; ++r) {
      for (size_t h = 0; h < H; ++h) {
        const double w = weights[r], in = onInput ? w * x[r * H + h] : x[r * H + h];
        const double ffn = c * gptOssGate(a * in + e.b1[h], b * in + e.b3[h]) + e.b2[h];
        const double want = onInput ? ffn : w * ffn;
        EXPECT_NEAR(got.view()[r * H + h], want, 1e-5 * (1.0 + std::abs(want)))
            << "row " << r << " h " << h;
      }
    }
    EXPECT_TRUE(got.guardIntact());
  }
}

// Llama 4: y = FFN(w·x), not w·FFN(x): with identity experts, c·silu(a·w·x)·(b·w·x).
TEST_P(BackendOpsTest, ExpertFfnWeightOnInputAnalytic) {
  constexpr size_t H = 3, R = 2;
  const float a = 2.0f, b = 1.5f, c = -1.0f;
  const ExpertSet onTest = uploadExperts(
      test(), {{scaledIdentity(H, a), scaledIdentity(H, b), scaledIdentity(H, c)}}, H, H);
  const std::vector<float> x = {1.0f, -2.0f, 3.0f, 0.5f, 4.0f, -1.0f};
  const std::vector<uint32_t> offsets = {0, 2}, rows = {1, 0};
  const std::vector<float> weights = {0.3f, 0.8f};  // row 1: 0.3, row 0: 0.8
  Guarded<float> got = floatOutput(R * H);
  ASSERT_TRUE(
      test().expertFfn({onTest.ffn, offsets, rows, weights, true}, x, R, H, got.span()).isOk());
  const double w[R] = {0.8, 0.3};
  for (size_t r = 0; r < R; ++r) {
    for (size_t h = 0; h < H; ++h) {
      const double in = w[r] * x[r * H + h];
      const double want = c * silu(a * in) * (b * in);
      const double onOutput = w[r] * c * silu(a * x[r * H + h]) * (b * x[r * H + h]);
      EXPECT_NEAR(got.view()[r * H + h], want, 1e-5 * (1.0 + std::abs(want)));
      // The two placements differ here (silu is not linear), so the flag is really honoured.
      EXPECT_GT(std::abs(want - onOutput), 1e-3) << "row " << r << " h " << h;
    }
  }
  EXPECT_TRUE(got.guardIntact());
}

// NemotronH: FFN(x) = w2·relu(w3·x + b3)² + b2 with no gate; identity-shaped experts (w3 = b·I,
// w2 = c·I) make it c·relu(b·x_h + b3_h)² + b2_h, known by hand, with rows on both sides of 0.
TEST_P(BackendOpsTest, ExpertFfnRelu2Analytic) {
  constexpr size_t H = 4, R = 2;
  const float b = 1.5f, c = -0.5f;
  HostExpert e{{}, scaledIdentity(H, b), scaledIdentity(H, c)};
  e.b3 = {0.5f, -1.0f, 0.0f, 2.0f};
  e.b2 = {0.25f, 0.0f, -1.0f, 0.5f};
  e.activation = {FfnActivation::Kind::kRelu2};
  const ExpertSet onTest = uploadExperts(test(), {e}, H, H);
  const std::vector<float> x = {1.0f, 2.0f, -3.0f, -0.5f, -1.0f, 0.25f, 2.0f, -4.0f};
  const std::vector<uint32_t> offsets = {0, 2}, rows = {0, 1};
  const std::vector<float> weights = {0.5f, 2.0f};
  Guarded<float> got = floatOutput(R * H);
  ASSERT_TRUE(test().expertFfn({onTest.ffn, offsets, rows, weights}, x, R, H, got.span()).isOk());
  size_t negative = 0;
  for (size_t r = 0; r < R; ++r) {
    for (size_t h = 0; h < H; ++h) {
      const double u = b * x[r * H + h] + e.b3[h];
      negative += u < 0;
      const double want = weights[r] * (c * std::max(u, 0.0) * std::max(u, 0.0) + e.b2[h]);
      EXPECT_NEAR(got.view()[r * H + h], want, 1e-5 * (1.0 + std::abs(want)))
          << "row " << r << " h " << h;
    }
  }
  EXPECT_GT(negative, 0u) << "no up pre-activation below 0: relu untested";
  EXPECT_TRUE(got.guardIntact());
}

TEST_P(BackendOpsTest, ExpertFfnRejectsBadBiasesAndActivation) {
  constexpr size_t H = 4, I = 3, R = 2;
  std::mt19937 rng(21);
  const ExpertSet onTest = uploadExperts(test(), randomExperts(rng, 1, H, I), H, I);
  const std::vector<float> x = randomVector(rng, R * H, -1.0f, 1.0f);
  std::vector<float> y(R * H);
  const std::vector<uint32_t> offsets = {0, 1}, rows = {0};
  const std::vector<float> one = {1.0f};
  auto run = [&](ExpertFfnWeights w) {
    const std::vector<ExpertFfnWeights> experts = {w};
    return test().expertFfn({experts, offsets, rows, one}, x, R, H, y);
  };
  auto ok = must(test().upload(std::vector<float>(I, 0.5f), I, 1));
  auto row = must(test().upload(std::vector<float>(I, 0.5f), 1, I));  // [1, I]: not a column
  auto wide = must(test().upload(std::vector<float>(H, 0.5f), H, 1));
  ExpertFfnWeights w = onTest.ffn[0];
  w.b1 = ok.get();
  w.b2 = wide.get();
  EXPECT_TRUE(run(w).isOk());
  w.b1 = row.get();
  const Status s = run(w);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("b1"), std::string::npos) << s.message();
  w = onTest.ffn[0];
  w.b2 = ok.get();  // [I, 1] where [H, 1] belongs
  EXPECT_FALSE(run(w).isOk());
  w = onTest.ffn[0];
  w.b3 = wide.get();
  EXPECT_FALSE(run(w).isOk());
  if (test().supports(Op::kExpertFfn, DType::kBF16)) {
    auto half = must(test().upload(std::vector<float>(I, 0.5f), I, 1, DType::kBF16));
    w = onTest.ffn[0];
    w.b1 = half.get();
    const Status h = run(w);
    EXPECT_FALSE(h.isOk()) << "a bf16 bias must be refused: biases are f32";
  }
  w = onTest.ffn[0];
  w.activation = {FfnActivation::Kind::kClampedSwiglu, kGptOssAlpha,
                  std::numeric_limits<float>::quiet_NaN()};
  EXPECT_FALSE(run(w).isOk());
  w.activation = {FfnActivation::Kind::kClampedSwiglu, kGptOssAlpha, -1.0f};
  EXPECT_FALSE(run(w).isOk());
  w.activation = {FfnActivation::Kind::kClampedSwiglu, kGptOssAlpha, kGptOssLimit};
  EXPECT_TRUE(run(w).isOk());
  // relu2 has no gate: a w1 (or b1) given with it is refused, as is a gated FFN without w1.
  w = onTest.ffn[0];
  w.activation = {FfnActivation::Kind::kRelu2};
  EXPECT_FALSE(run(w).isOk());
  w.w1 = nullptr;
  EXPECT_TRUE(run(w).isOk());
  w.b1 = ok.get();
  EXPECT_FALSE(run(w).isOk());
  w = onTest.ffn[0];
  w.w1 = nullptr;
  EXPECT_FALSE(run(w).isOk());
}

// ---------------------------------------------------------------------------------------------
// moeLayerInProcess

// A random Mixtral-like layer uploaded to one backend.
struct Layer {
  std::unique_ptr<Matrix> gate;
  ExpertSet experts;
};
Layer uploadLayer(Backend& b, const std::vector<float>& gate, const std::vector<HostExpert>& host,
                  size_t E, size_t H, size_t I) {
  return Layer{must(b.upload(gate, E, H)), uploadExperts(b, host, H, I)};
}

TEST_P(BackendOpsTest, MoeLayerMatchesReference) {
  std::mt19937 rng(8);
  constexpr size_t E = 8, H = 24, I = 40, k = 2;
  const std::vector<float> gate = randomVector(rng, E * H, -1.0f, 1.0f);
  const std::vector<HostExpert> host = randomExperts(rng, E, H, I);
  const Layer onRef = uploadLayer(ref(), gate, host, E, H, I);
  const Layer onTest = uploadLayer(test(), gate, host, E, H, I);
  for (size_t T : {0, 1, 33}) {
    for (bool renormalize : {false, true}) {
      SCOPED_TRACE("moeLayer T=" + std::to_string(T) +
                   " renormalize=" + std::to_string(renormalize));
      const std::vector<float> x = randomVector(rng, T * H, -1.0f, 1.0f);
      std::vector<float> want(T * H);
      ASSERT_TRUE(
          moeLayerInProcess(ref(), *onRef.gate, onRef.experts.ffn, x, T, H, k, renormalize, want)
              .isOk());
      Guarded<float> got = floatOutput(T * H);
      const Status s = moeLayerInProcess(test(), *onTest.gate, onTest.experts.ffn, x, T, H, k,
                                         renormalize, got.span());
      ASSERT_TRUE(s.isOk()) << s.message();
      EXPECT_TRUE(closeTo(got.view(), want));
      EXPECT_TRUE(got.guardIntact());
    }
  }
}

// The serving path (softmaxTopk → CSR segments → expertFfn) must agree with the layer.
TEST_P(BackendOpsTest, MoeLayerMatchesExpertFfnPath) {
  std::mt19937 rng(9);
  constexpr size_t E = 8, H = 24, I = 40, k = 2, T = 50;
  const std::vector<float> gate = randomVector(rng, E * H, -1.0f, 1.0f);
  const Layer layer = uploadLayer(test(), gate, randomExperts(rng, E, H, I), E, H, I);
  const std::vector<float> x = randomVector(rng, T * H, -1.0f, 1.0f);
  std::vector<float> viaLayer(T * H);
  ASSERT_TRUE(
      moeLayerInProcess(test(), *layer.gate, layer.experts.ffn, x, T, H, k, true, viaLayer).isOk());

  std::vector<float> logits(T * E), weights(T * k);
  std::vector<uint32_t> ids(T * k);
  ASSERT_TRUE(test().linear(*layer.gate, x, T, logits).isOk());
  ASSERT_TRUE(test().softmaxTopk(logits, T, E, k, true, ids, weights).isOk());
  Routing r;
  r.offsets.push_back(0);
  for (size_t e = 0; e < E; ++e) {
    for (size_t i = 0; i < T * k; ++i) {
      if (ids[i] != e) continue;
      r.rows.push_back(uint32_t(i / k));
      r.weights.push_back(weights[i]);
    }
    r.expertOf.push_back(e);
    r.offsets.push_back(uint32_t(r.rows.size()));
  }
  const std::vector<ExpertFfnWeights> experts = r.segmentExperts(layer.experts);
  std::vector<float> viaSegments(T * H);
  ASSERT_TRUE(test().expertFfn(segmentsOf(r, experts), x, T, H, viaSegments).isOk());
  EXPECT_TRUE(closeTo(viaSegments, viaLayer));
}

// E = 2, k = 1, gate = identity so the router logits are x itself; experts are scaled
// identities so the whole layer is known by hand.
TEST_P(BackendOpsTest, MoeLayerTinyHandChecked) {
  constexpr size_t E = 2, H = 2, T = 2;
  const float a[] = {1.0f, 0.5f}, b[] = {1.0f, 2.0f}, c[] = {1.0f, -1.0f};
  std::vector<HostExpert> host(E);
  for (size_t e = 0; e < E; ++e) {
    host[e] = {scaledIdentity(H, a[e]), scaledIdentity(H, b[e]), scaledIdentity(H, c[e])};
  }
  const Layer layer = uploadLayer(test(), scaledIdentity(E, 1.0f), host, E, H, H);
  // Token 0 → expert 0 (logits 2 > 1), p = 1/(1+e^-1); token 1 → expert 1 (3 > 0), p = 1/(1+e^-3).
  const std::vector<float> x = {2.0f, 1.0f, 0.0f, 3.0f};
  const size_t chosen[T] = {0, 1};
  const double p[T] = {1.0 / (1.0 + std::exp(-1.0)), 1.0 / (1.0 + std::exp(-3.0))};
  for (bool renormalize : {false, true}) {
    Guarded<float> y = floatOutput(T * H);
    ASSERT_TRUE(
        moeLayerInProcess(test(), *layer.gate, layer.experts.ffn, x, T, H, 1, renormalize, y.span())
            .isOk());
    for (size_t t = 0; t < T; ++t) {
      const size_t e = chosen[t];
      const double weight = renormalize ? 1.0 : p[t];
      for (size_t h = 0; h < H; ++h) {
        const double v = x[t * H + h];
        const double want = weight * c[e] * silu(a[e] * v) * (b[e] * v);
        EXPECT_NEAR(y.view()[t * H + h], want, 1e-5) << "t " << t << " h " << h;
      }
    }
    EXPECT_TRUE(y.guardIntact());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOpsTest,
                         ::testing::Values(BackendKind::kReference, BackendKind::kBlas,
                                           BackendKind::kCuda),
                         [](const ::testing::TestParamInfo<BackendKind>& info) {
                           return kindName(info.param);
                         });

// ---------------------------------------------------------------------------------------------
// Factory

TEST(BackendFactoryTest, NamedBackends) {
  EXPECT_EQ(must(createBackend(BackendKind::kReference))->name(), "reference");
  EXPECT_EQ(must(createBackend(BackendKind::kBlas))->name(), "blas");
}

TEST(BackendFactoryTest, CudaAndAutoFollowDeviceCount) {
  const int devices = cudaDeviceCount();
  ASSERT_GE(devices, 0);
  auto cuda = createBackend(BackendKind::kCuda, 0);
  auto autoBackend = must(createBackend(BackendKind::kAuto, 0));
  if (devices == 0) {
    ASSERT_FALSE(cuda.isOk());
    EXPECT_NE(cuda.error().find("CUDA"), std::string::npos) << cuda.error();
    EXPECT_EQ(autoBackend->name(), "blas");
  } else {
    ASSERT_TRUE(cuda.isOk()) << cuda.error();
    EXPECT_EQ(cuda.value()->name(), "cuda:0");
    EXPECT_EQ(autoBackend->name(), "cuda:0");
  }
  // A device that does not exist is an error, never a crash.
  EXPECT_FALSE(createBackend(BackendKind::kCuda, devices + 7).isOk());
  EXPECT_FALSE(createBackend(BackendKind::kCuda, -1).isOk());
}

// ---------------------------------------------------------------------------------------------
// The dtype axis: each backend with weights resident in f32, bf16 and f16, against the reference
// computing in double on the unrounded fp32 weights. Thresholds per dtype (NMSE, and max |diff|
// relative to max |ref|): bf16 keeps 8 significant bits (rounding error ~2^-9 relative per element
// of both weights and the activations the backend rounds), f16 11.

struct DtypeTolerance {
  DType dtype;
  double nmse;
  double maxRel;
};
constexpr DtypeTolerance kDtypeTolerances[] = {
    {DType::kF32, kNmseTol, 1e-4},
    {DType::kBF16, 1e-4, 3e-2},
    {DType::kF16, 2e-6, 4e-3},
};
DtypeTolerance toleranceFor(DType d) {
  for (const auto& t : kDtypeTolerances) {
    if (t.dtype == d) return t;
  }
  return kDtypeTolerances[0];
}

using TypedParam = std::tuple<BackendKind, DType>;

class BackendOpsDtypeTest : public ::testing::TestWithParam<TypedParam> {
 protected:
  void SetUp() override {
    const BackendKind kind = std::get<0>(GetParam());
    if (kind == BackendKind::kCuda && cudaDeviceCount() == 0) {
      GTEST_SKIP() << "no usable CUDA device: CUDA dtype cases skipped";
    }
    auto b = createBackend(kind, 0);
    ASSERT_TRUE(b.isOk()) << b.error();
    test_ = std::move(b).value();
    ref_ = makeReferenceBackend();
  }
  DType dtype() const { return std::get<1>(GetParam()); }
  Backend& test() { return *test_; }
  Backend& ref() { return *ref_; }
  // Skips (after checking the refusal is an error, not a crash) when the backend lacks `op`.
  bool skipUnsupported(Op op) {
    if (test().supports(op, dtype())) return false;
    EXPECT_FALSE(test().upload(std::vector<float>(6, 1.0f), 2, 3, dtype()).isOk())
        << test().name() << " says it does not support " << dtypeName(dtype()) << " but uploads it";
    return true;
  }
  ExpertSet uploadTyped(Backend& b, const std::vector<HostExpert>& host, size_t H, size_t I,
                        DType d) {
    return uploadExperts(b, host, H, I, d);
  }

 private:
  std::unique_ptr<Backend> test_, ref_;
};

TEST_P(BackendOpsDtypeTest, Linear) {
  if (skipUnsupported(Op::kLinear)) GTEST_SKIP() << dtypeName(dtype()) << " linear unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  std::mt19937 rng(11);
  const std::pair<size_t, size_t> shapes[] = {{1, 1}, {3, 5}, {67, 129}, {33, 1025}};
  for (size_t T : {0, 1, 7, 33, 256}) {
    for (auto [N, K] : shapes) {
      SCOPED_TRACE("linear " + std::string(dtypeName(dtype())) + " T=" + std::to_string(T) +
                   " N=" + std::to_string(N) + " K=" + std::to_string(K));
      const std::vector<float> w = randomVector(rng, N * K, -1.0f, 1.0f);
      const std::vector<float> x = randomVector(rng, T * K, -1.0f, 1.0f);
      auto wRef = must(ref().upload(w, N, K));
      auto wTest = must(test().upload(w, N, K, dtype()));
      EXPECT_EQ(wTest->dtype(), dtype());
      std::vector<float> want(T * N);
      ASSERT_TRUE(ref().linear(*wRef, x, T, want).isOk());
      Guarded<float> got = floatOutput(T * N);
      const Status s = test().linear(*wTest, x, T, got.span());
      ASSERT_TRUE(s.isOk()) << s.message();
      EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel));
      EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
    }
  }
}

TEST_P(BackendOpsDtypeTest, ExpertFfn) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  std::mt19937 rng(12);
  constexpr size_t E = 6, H = 64, I = 40;
  const std::vector<HostExpert> host = randomExperts(rng, E, H, I);
  const ExpertSet onRef = uploadTyped(ref(), host, H, I, DType::kF32);
  const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
  // R = 600 crosses the CPU backend's oneDNN/OpenBLAS f32 switch (512 rows per segment).
  for (size_t R : {0, 1, 7, 256, 600}) {
    for (size_t k : {1, 2, 6}) {
      SCOPED_TRACE("expertFfn " + std::string(dtypeName(dtype())) + " R=" + std::to_string(R) +
                   " k=" + std::to_string(k));
      const std::vector<float> x = randomVector(rng, R * H, -2.0f, 2.0f);
      const Routing routing = makeRouting(rng, R, E, k, {0, 1, 2, 3, 4, 5}, k == 2);
      const std::vector<ExpertFfnWeights> refExperts = routing.segmentExperts(onRef);
      const std::vector<ExpertFfnWeights> testExperts = routing.segmentExperts(onTest);
      std::vector<float> want(R * H);
      ASSERT_TRUE(ref().expertFfn(segmentsOf(routing, refExperts), x, R, H, want).isOk());
      Guarded<float> got = floatOutput(R * H);
      const Status s = test().expertFfn(segmentsOf(routing, testExperts), x, R, H, got.span());
      ASSERT_TRUE(s.isOk()) << s.message();
      EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel));
      EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
    }
  }
}

// The layer with bf16/f16 experts and an fp32 gate: the experts chosen never depend on the
// experts' dtype (gate scores are fp32), the output is within the dtype's tolerance.
TEST_P(BackendOpsDtypeTest, MoeLayer) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  std::mt19937 rng(13);
  constexpr size_t E = 8, H = 48, I = 32, k = 2;
  const std::vector<float> gate = randomVector(rng, E * H, -1.0f, 1.0f);
  const std::vector<HostExpert> host = randomExperts(rng, E, H, I);
  auto gRef = must(ref().upload(gate, E, H));
  auto gTest = must(test().upload(gate, E, H));  // the gate stays fp32 whatever the experts' dtype
  const ExpertSet onRef = uploadTyped(ref(), host, H, I, DType::kF32);
  const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
  for (size_t T : {1, 33}) {
    const std::vector<float> x = randomVector(rng, T * H, -1.0f, 1.0f);
    std::vector<float> want(T * H);
    ASSERT_TRUE(
        moeLayerInProcess(ref(), *gRef, onRef.ffn, x, T, H, k, /*renormalize=*/true, want).isOk());
    Guarded<float> got = floatOutput(T * H);
    const Status s = moeLayerInProcess(test(), *gTest, onTest.ffn, x, T, H, k, true, got.span());
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel)) << "T=" << T;
  }
}

// The family variants of the expert FFN (gpt-oss's clamped SwiGLU with biases, Llama 4's weight
// on the input, and their mixes) on every backend × weight dtype against the fp32 reference, at
// the dtype's thresholds; inputs hit the clamp on both sides (checked, so the case cannot pass
// without exercising it). Biases stay f32 whatever the weights' dtype.
TEST_P(BackendOpsDtypeTest, ExpertFfnVariants) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  constexpr size_t E = 5, H = 48, I = 40;
  for (const FfnVariant& variant : kFfnVariants) {
    std::mt19937 rng(31);
    std::vector<HostExpert> host = randomExperts(rng, E, H, I);
    applyVariant(rng, host, variant, H, I);
    const ExpertSet onRef = uploadTyped(ref(), host, H, I, DType::kF32);
    const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
    for (size_t R : {0, 1, 7, 256, 600}) {
      for (size_t k : {1, 2, 5}) {
        SCOPED_TRACE(std::string(variant.name) + " " + std::string(dtypeName(dtype())) +
                     " R=" + std::to_string(R) + " k=" + std::to_string(k));
        const std::vector<float> x = randomVector(rng, R * H, -2.0f, 2.0f);
        if (variant.biases && variant.clamped && R == 7) {
          const ClampCoverage c = clampCoverage(host, x, R, H, I);
          EXPECT_GT(c.gateAbove, 0u) << "no gate pre-activation above +limit";
          EXPECT_GT(c.upBelow, 0u) << "no up pre-activation below -limit";
          EXPECT_GT(c.upAbove, 0u) << "no up pre-activation above +limit";
        }
        const Routing routing = makeRouting(rng, R, E, k, {0, 1, 2, 3, 4}, k == 2);
        const std::vector<ExpertFfnWeights> refExperts = routing.segmentExperts(onRef);
        const std::vector<ExpertFfnWeights> testExperts = routing.segmentExperts(onTest);
        std::vector<float> want(R * H);
        ASSERT_TRUE(
            ref()
                .expertFfn(segmentsOf(routing, refExperts, variant.weightOnInput), x, R, H, want)
                .isOk());
        Guarded<float> got = floatOutput(R * H);
        const Status s = test().expertFfn(segmentsOf(routing, testExperts, variant.weightOnInput),
                                          x, R, H, got.span());
        ASSERT_TRUE(s.isOk()) << s.message();
        EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel));
        EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
      }
    }
  }
}

// Typed activations: bf16 rows (as a bf16 wire carries them) give exactly the y that f32 rows
// holding the same values give, on every backend × weight dtype × FFN variant (the plain SwiGLU
// is the CPU's fused bf16 path, the others its stepwise one). Bit for bit, not within a
// tolerance: a backend either takes the bf16 rows as they are or widens them exactly.
TEST_P(BackendOpsDtypeTest, ExpertFfnBf16ActivationsEqualTheirF32Values) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  constexpr size_t E = 5, H = 48, I = 40;
  constexpr FfnVariant kPlain = {"plain SwiGLU", false, false, false};
  std::vector<FfnVariant> variants = {kPlain};
  variants.insert(variants.end(), std::begin(kFfnVariants), std::end(kFfnVariants));
  for (const FfnVariant& variant : variants) {
    std::mt19937 rng(37);
    std::vector<HostExpert> host = randomExperts(rng, E, H, I);
    applyVariant(rng, host, variant, H, I);
    const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
    for (size_t R : {1, 7, 70}) {
      SCOPED_TRACE(std::string(variant.name) + " " + std::string(dtypeName(dtype())) +
                   " R=" + std::to_string(R));
      std::vector<float> x = randomVector(rng, R * H, -2.0f, 2.0f);
      std::vector<uint16_t> x16(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        x16[i] = floatToBf16(x[i]);
        x[i] = bf16ToFloat(x16[i]);
      }
      const Routing routing = makeRouting(rng, R, E, 2, {0, 1, 2, 3, 4}, true);
      const std::vector<ExpertFfnWeights> experts = routing.segmentExperts(onTest);
      const ExpertSegments segments = segmentsOf(routing, experts, variant.weightOnInput);
      std::vector<float> fromF32(R * H);
      ASSERT_TRUE(test().expertFfn(segments, x, R, H, fromF32).isOk());
      Guarded<float> fromBf16 = floatOutput(R * H);
      const Status s = test().expertFfn(segments, Activations::bf16(x16), R, H, fromBf16.span());
      ASSERT_TRUE(s.isOk()) << s.message();
      const std::span<const float> got = fromBf16.view();
      ASSERT_TRUE(std::equal(got.begin(), got.end(), fromF32.begin(), fromF32.end(),
                             [](float a, float b) {
                               return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
                             }))
          << "bf16 rows gave a different y than their f32 values";
      EXPECT_TRUE(fromBf16.guardIntact()) << "write past the end of y";
    }
  }
}

// The in-process path (moeExpertsInProcess: linear, bias, activation, linear, bias in plain code,
// expert by expert) agrees with the reference backend's grouped op for every variant: the two
// yardsticks the cluster is checked against cannot drift apart.
TEST_P(BackendOpsDtypeTest, MoeExpertsInProcessVariants) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  constexpr size_t E = 4, H = 32, I = 24, k = 2, T = 40;
  for (const FfnVariant& variant : kFfnVariants) {
    SCOPED_TRACE(std::string(variant.name) + " " + std::string(dtypeName(dtype())));
    std::mt19937 rng(41);
    std::vector<HostExpert> host = randomExperts(rng, E, H, I);
    applyVariant(rng, host, variant, H, I);
    const ExpertSet onRef = uploadTyped(ref(), host, H, I, DType::kF32);
    const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
    const std::vector<float> x = randomVector(rng, T * H, -2.0f, 2.0f);
    std::vector<uint32_t> ids(T * k);
    std::vector<float> weights = randomVector(rng, T * k, 0.05f, 1.0f);
    for (size_t t = 0; t < T; ++t) {
      ids[t * k] = uint32_t(t % E);
      ids[t * k + 1] = uint32_t((t + 1 + t / E) % E == t % E ? (t + 2) % E : (t + 1 + t / E) % E);
    }
    Routing r;  // the same assignments as CSR segments, expert by expert
    r.offsets.push_back(0);
    for (size_t e = 0; e < E; ++e) {
      for (size_t i = 0; i < T * k; ++i) {
        if (ids[i] != e) continue;
        r.rows.push_back(uint32_t(i / k));
        r.weights.push_back(weights[i]);
      }
      r.expertOf.push_back(e);
      r.offsets.push_back(uint32_t(r.rows.size()));
    }
    const std::vector<ExpertFfnWeights> refExperts = r.segmentExperts(onRef);
    std::vector<float> want(T * H);
    ASSERT_TRUE(
        ref().expertFfn(segmentsOf(r, refExperts, variant.weightOnInput), x, T, H, want).isOk());
    Guarded<float> got = floatOutput(T * H);
    const Status s = moeExpertsInProcess(test(), onTest.ffn, x, T, H, k, ids, weights, got.span(),
                                         variant.weightOnInput);
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel));
    EXPECT_TRUE(got.guardIntact());
  }
}

// One call whose segments name experts of different widths and activations — routed experts,
// a wider shared expert naming every row (weight 1, clamped SwiGLU with biases), a narrower
// relu² expert, an empty segment — as a shard serving a shared expert sees it: a grouped
// backend must size every group by its own expert.
TEST_P(BackendOpsDtypeTest, ExpertFfnMixedWidthsInOneCall) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  constexpr size_t H = 48, I = 40, IShared = 72, IRelu = 24;
  std::mt19937 rng(51);
  std::vector<HostExpert> routed = randomExperts(rng, 3, H, I);
  std::vector<HostExpert> shared = randomExperts(rng, 1, H, IShared);
  applyVariant(rng, shared, kFfnVariants[0], H, IShared);  // gpt-oss: clamped + biases
  std::vector<HostExpert> relu = randomExperts(rng, 1, H, IRelu);
  applyVariant(rng, relu, kFfnVariants[6], H, IRelu);  // relu² + biases
  struct Sets {
    ExpertSet routed, shared, relu;
  };
  auto upload = [&](Backend& b, DType d) {
    return Sets{uploadExperts(b, routed, H, I, d), uploadExperts(b, shared, H, IShared, d),
                uploadExperts(b, relu, H, IRelu, d)};
  };
  const Sets onRef = upload(ref(), DType::kF32);
  const Sets onTest = upload(test(), dtype());
  for (bool weightOnInput : {false, true}) {
    for (size_t R : {1, 9, 300}) {
      SCOPED_TRACE(std::string(dtypeName(dtype())) + " R=" + std::to_string(R) +
                   (weightOnInput ? " weight on input" : ""));
      const std::vector<float> x = randomVector(rng, R * H, -2.0f, 2.0f);
      // Segments: routed 0 (even rows), shared (every row), routed 1 (empty), relu (rows % 3),
      // routed 2 (odd rows).
      std::vector<uint32_t> offsets{0}, rows;
      std::vector<float> weights;
      auto segment = [&](auto pick, bool unit) {
        for (uint32_t r = 0; r < R; ++r) {
          if (!pick(r)) continue;
          rows.push_back(r);
          weights.push_back(unit ? 1.0f : 0.25f + 0.5f * float(r % 4) / 3.0f);
        }
        offsets.push_back(uint32_t(rows.size()));
      };
      segment([](uint32_t r) { return r % 2 == 0; }, false);
      segment([](uint32_t) { return true; }, true);
      segment([](uint32_t) { return false; }, false);
      segment([](uint32_t r) { return r % 3 == 1; }, false);
      segment([](uint32_t r) { return r % 2 == 1; }, false);
      auto experts = [](const Sets& s) {
        return std::vector<ExpertFfnWeights>{s.routed.ffn[0], s.shared.ffn[0], s.routed.ffn[1],
                                             s.relu.ffn[0], s.routed.ffn[2]};
      };
      const std::vector<ExpertFfnWeights> refExperts = experts(onRef),
                                          testExperts = experts(onTest);
      const ExpertSegments refSegments{refExperts, offsets, rows, weights, weightOnInput};
      const ExpertSegments testSegments{testExperts, offsets, rows, weights, weightOnInput};
      std::vector<float> want(R * H);
      ASSERT_TRUE(ref().expertFfn(refSegments, x, R, H, want).isOk());
      Guarded<float> got = floatOutput(R * H);
      const Status st = test().expertFfn(testSegments, x, R, H, got.span());
      ASSERT_TRUE(st.isOk()) << st.message();
      EXPECT_TRUE(closeTo(got.view(), want, tol.nmse, tol.maxRel));
      EXPECT_TRUE(got.guardIntact()) << "write past the end of y";
    }
  }
}

// Calls from many threads at once on one backend (more than a GPU backend's pool of call
// contexts, so some wait for one) each get their own right answer: no call sees another's
// staging, scratch or stream.
TEST_P(BackendOpsDtypeTest, ConcurrentCallsEachGetTheirOwnResult) {
  if (skipUnsupported(Op::kExpertFfn)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  const DtypeTolerance tol = toleranceFor(dtype());
  constexpr size_t E = 4, H = 32, I = 24, k = 2, kThreads = 9, kCallsPerThread = 3;
  std::mt19937 rng(61);
  const std::vector<HostExpert> host = randomExperts(rng, E, H, I);
  const ExpertSet onRef = uploadTyped(ref(), host, H, I, DType::kF32);
  const ExpertSet onTest = uploadTyped(test(), host, H, I, dtype());
  struct Job {
    size_t R;
    std::vector<float> x, want, linearWant;
    Routing routing;
    std::vector<ExpertFfnWeights> testExperts;
    Status status = Status::ok();
    std::vector<float> got, linearGot;
  };
  std::vector<Job> jobs(kThreads);
  for (size_t t = 0; t < kThreads; ++t) {
    Job& j = jobs[t];
    j.R = 5 + 37 * t;  // different shapes, so a reused scratch of the wrong size would show
    j.x = randomVector(rng, j.R * H, -2.0f, 2.0f);
    j.routing = makeRouting(rng, j.R, E, k, {0, 1, 2, 3}, t % 2 == 1);
    j.testExperts = j.routing.segmentExperts(onTest);
    const std::vector<ExpertFfnWeights> refExperts = j.routing.segmentExperts(onRef);
    j.want.resize(j.R * H);
    ASSERT_TRUE(ref().expertFfn(segmentsOf(j.routing, refExperts), j.x, j.R, H, j.want).isOk());
    j.linearWant.resize(j.R * I);
    ASSERT_TRUE(ref().linear(*onRef.ffn[t % E].w3, j.x, j.R, j.linearWant).isOk());
  }
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Job& j = jobs[t];
      for (size_t c = 0; c < kCallsPerThread && j.status.isOk(); ++c) {
        j.got.assign(j.R * H, std::numeric_limits<float>::quiet_NaN());
        j.status = test().expertFfn(segmentsOf(j.routing, j.testExperts), j.x, j.R, H, j.got);
        if (!j.status.isOk()) break;
        j.linearGot.assign(j.R * I, std::numeric_limits<float>::quiet_NaN());
        j.status = test().linear(*onTest.ffn[t % E].w3, j.x, j.R, j.linearGot);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (size_t t = 0; t < kThreads; ++t) {
    SCOPED_TRACE("thread " + std::to_string(t));
    const Job& j = jobs[t];
    ASSERT_TRUE(j.status.isOk()) << j.status.message();
    EXPECT_TRUE(closeTo(j.got, j.want, tol.nmse, tol.maxRel));
    EXPECT_TRUE(closeTo(j.linearGot, j.linearWant, tol.nmse, tol.maxRel));
  }
}

// Resident bytes are measured from the allocation: 2 bytes per element for bf16/f16, 4 for f32 —
// exactly for block-aligned shapes; a layout padded to its blocks (the CPU backend's packed bf16
// weights) holds more for odd ones, and says so.
TEST_P(BackendOpsDtypeTest, ResidentBytesFollowDtype) {
  if (skipUnsupported(Op::kLinear)) GTEST_SKIP() << dtypeName(dtype()) << " unsupported";
  auto m = must(test().upload(std::vector<float>(256 * 128, 0.5f), 256, 128, dtype()));
  EXPECT_EQ(m->residentBytes(), size_t{256} * 128 * dtypeSize(dtype()));
  auto odd = must(test().upload(std::vector<float>(30 * 7, 0.5f), 30, 7, dtype()));
  EXPECT_GE(odd->residentBytes(), size_t{30} * 7 * dtypeSize(dtype()));
  EXPECT_FALSE(test().kernelPath(dtype()).empty());
}

std::string typedName(const ::testing::TestParamInfo<TypedParam>& info) {
  return kindName(std::get<0>(info.param)) + "_" + std::string(dtypeName(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(
    Dtypes, BackendOpsDtypeTest,
    ::testing::Combine(::testing::Values(BackendKind::kReference, BackendKind::kBlas,
                                         BackendKind::kCuda),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16)),
    typedName);

}  // namespace
}  // namespace moe::kernels
