// Prometheus text exposition parsing and histogram_quantile for the metrics tests.
#include "tests/integration/metrics_text.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <regex>
#include <sstream>

namespace moe::testing {
namespace {

struct Sample {
  std::string name;
  MetricLabels labels;
  double value = 0;
};

double parseValue(const std::string& s) {
  if (s == "+Inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf") return -std::numeric_limits<double>::infinity();
  return std::strtod(s.c_str(), nullptr);
}

std::vector<Sample> samples(const std::string& text, const std::string& name) {
  static const std::regex line(R"(^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+))");
  static const std::regex label(R"re(([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  std::vector<Sample> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l.empty() || l[0] == '#' || l.compare(0, name.size(), name) != 0) continue;
    std::smatch m;
    if (!std::regex_search(l, m, line) || m[1] != name) continue;
    Sample s{m[1], {}, parseValue(m[4])};
    const std::string labels = m[3];
    for (auto it = std::sregex_iterator(labels.begin(), labels.end(), label);
         it != std::sregex_iterator(); ++it) {
      s.labels[(*it)[1]] = (*it)[2];
    }
    out.push_back(std::move(s));
  }
  return out;
}

bool matches(const MetricLabels& labels, const MetricLabels& match) {
  return std::all_of(match.begin(), match.end(), [&](const auto& kv) {
    auto it = labels.find(kv.first);
    return it != labels.end() && it->second == kv.second;
  });
}

}  // namespace

std::optional<double> sampleSum(const std::string& text, const std::string& name,
                                const MetricLabels& match) {
  std::optional<double> sum;
  for (const auto& s : samples(text, name)) {
    if (matches(s.labels, match)) sum = sum.value_or(0) + s.value;
  }
  return sum;
}

std::vector<Bucket> histogramBuckets(const std::string& text, const std::string& name,
                                     const MetricLabels& match) {
  std::map<double, double> byLe;
  for (const auto& s : samples(text, name + "_bucket")) {
    auto le = s.labels.find("le");
    if (le == s.labels.end() || !matches(s.labels, match)) continue;
    byLe[parseValue(le->second)] += s.value;
  }
  std::vector<Bucket> out;
  for (const auto& [le, count] : byLe) out.push_back({le, count});
  return out;
}

std::vector<Bucket> bucketIncrease(const std::vector<Bucket>& after,
                                   const std::vector<Bucket>& before) {
  std::vector<Bucket> out = after;
  for (auto& b : out) {
    for (const auto& p : before) {
      if (p.le == b.le) b.count -= p.count;
    }
  }
  return out;
}

std::vector<Bucket> bucketize(const std::vector<double>& values,
                              const std::vector<double>& bounds) {
  std::vector<Bucket> out;
  for (double le : bounds) out.push_back({le, 0});
  out.push_back({std::numeric_limits<double>::infinity(), 0});
  for (double v : values) {
    for (auto& b : out) {
      if (v <= b.le) b.count += 1;
    }
  }
  return out;
}

double histogramQuantile(double q, const std::vector<Bucket>& in) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (q < 0) return -std::numeric_limits<double>::infinity();
  if (q > 1) return std::numeric_limits<double>::infinity();
  std::vector<Bucket> b = in;
  std::sort(b.begin(), b.end(), [](const Bucket& x, const Bucket& y) { return x.le < y.le; });
  if (b.size() < 2 || !std::isinf(b.back().le)) return nan;
  for (size_t i = 1; i < b.size(); ++i) b[i].count = std::max(b[i].count, b[i - 1].count);
  const double total = b.back().count;
  if (total == 0) return nan;
  double rank = q * total;
  size_t i = 0;
  while (i < b.size() - 1 && b[i].count < rank) ++i;
  if (i == b.size() - 1) return b[b.size() - 2].le;
  if (i == 0 && b[0].le <= 0) return b[0].le;
  double start = 0, count = b[i].count;
  if (i > 0) {
    start = b[i - 1].le;
    count -= b[i - 1].count;
    rank -= b[i - 1].count;
  }
  return start + (b[i].le - start) * (rank / count);
}

double sampleQuantile(double q, std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace moe::testing
