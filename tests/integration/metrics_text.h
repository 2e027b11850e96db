// Reading Prometheus text exposition (/metrics) in tests: sample values, histogram buckets summed
// over matching series, and histogram_quantile() as Prometheus computes it, so a test can check
// what a dashboard would show without running Prometheus.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moe::testing {

using MetricLabels = std::map<std::string, std::string>;

// One cumulative bucket: observations <= le (le = +Inf for the last).
struct Bucket {
  double le;
  double count;
};

// The value of the series `name` whose labels include every pair of `match`, summed over all such
// series; nullopt when there is none.
std::optional<double> sampleSum(const std::string& text, const std::string& name,
                                const MetricLabels& match = {});

// The buckets of histogram `name` (its name_bucket series) summed by le over the series whose
// labels include `match` — sum by (le) (name_bucket{match}); sorted by le.
std::vector<Bucket> histogramBuckets(const std::string& text, const std::string& name,
                                     const MetricLabels& match = {});

// after − before, bucket by bucket (an increase, as rate() sees it); both from the same family.
std::vector<Bucket> bucketIncrease(const std::vector<Bucket>& after,
                                   const std::vector<Bucket>& before);

// Cumulative buckets of `values` over `bounds` (+Inf added): what a histogram with those
// boundaries would have exported for exactly these observations.
std::vector<Bucket> bucketize(const std::vector<double>& values, const std::vector<double>& bounds);

// Prometheus histogram_quantile(q, …) (promql/quantile.go bucketQuantile): the bucket holding
// rank q·total, linear interpolation inside it (lower bound 0 for the first bucket), the
// largest finite bound when the rank falls in +Inf; NaN without observations.
double histogramQuantile(double q, const std::vector<Bucket>& buckets);

// The q-quantile of raw samples, interpolated between order statistics (numpy's default).
double sampleQuantile(double q, std::vector<double> values);

}  // namespace moe::testing
