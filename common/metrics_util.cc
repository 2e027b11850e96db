// Metrics helpers: bucket layouts, build info, and the process collector over /proc/self.
#include "common/metrics_util.h"

#include <dirent.h>
#include <prometheus/gauge.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/service_runtime.h"

namespace moe {

prometheus::Histogram::BucketBoundaries latencyBuckets() {
  // Bounds parsed from decimal text, so /metrics shows le="0.00025", not a product's rounding.
  static const char* const kMantissas[] = {"1", "1.25", "1.5", "2", "2.5", "3", "4", "5", "6", "8"};
  prometheus::Histogram::BucketBoundaries b;
  for (int exp = -5; exp <= 1; ++exp) {
    for (const char* m : kMantissas) {
      const double v = std::strtod((std::string(m) + "e" + std::to_string(exp)).c_str(), nullptr);
      if (v >= 20e-6 && v <= 60) b.push_back(v);
    }
  }
  return b;
}

prometheus::Histogram::BucketBoundaries sizeBuckets(std::span<const uint32_t> configured) {
  std::vector<double> exact;
  for (uint32_t n = 1; n <= 8192; n *= 2) exact.push_back(n);
  for (uint32_t n : configured) {
    if (n > 0) exact.push_back(n);
  }
  prometheus::Histogram::BucketBoundaries b;
  for (double n : exact) {
    b.push_back(n);
    b.push_back(n - std::min(1.0, n / 128));
  }
  for (uint32_t n = 3; n <= 6144; n *= 2) b.push_back(n);
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return b;
}

void registerBuildInfo(prometheus::Registry& registry, std::string_view role,
                       std::string_view backend) {
  prometheus::BuildGauge()
      .Name("moe_build_info")
      .Help("Build and runtime facts of this process; always 1")
      .Register(registry)
      .Add({{"version", kMoeVersion},
            {"role", std::string(role)},
            {"backend", std::string(backend)}})
      .Set(1);
}

namespace {

prometheus::MetricFamily single(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

// Seconds since the epoch at which the machine booted (/proc/stat btime), or 0.
double bootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

double count(const char* dir) {
  DIR* d = opendir(dir);
  if (d == nullptr) return 0;
  double n = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') n += 1;
  }
  closedir(d);
  return n - 1;  // the descriptor opendir itself holds
}

}  // namespace

std::vector<prometheus::MetricFamily> collectProcessMetrics() {
  std::ifstream in("/proc/self/stat");
  std::string stat;
  if (!std::getline(in, stat)) return {};
  // Fields after the command name, which is in parentheses and may hold spaces: field 3 (state)
  // is the first; utime and stime are fields 14 and 15, num_threads 20, starttime 22, vsize 23,
  // rss 24 (proc(5)).
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::vector<std::string> f;
  for (std::string s; rest >> s;) f.push_back(s);
  if (f.size() < 22) return {};
  auto field = [&](int n) { return std::strtod(f[n - 3].c_str(), nullptr); };
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  rlimit fds{};
  getrlimit(RLIMIT_NOFILE, &fds);
  using prometheus::MetricType;
  return {
      single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             MetricType::Counter, (field(14) + field(15)) / tick),
      single("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
             field(24) * page),
      single("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
             field(23)),
      single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
             count("/proc/self/fd")),
      single("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
             static_cast<double>(fds.rlim_cur)),
      single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
             MetricType::Gauge, bootTime() + field(22) / tick),
      single("process_threads", "Number of OS threads in the process.", MetricType::Gauge,
             field(20)),
  };
}

prometheus::Family<prometheus::Counter>& registerTlsHandshakeFailures(
    prometheus::Registry& registry) {
  return prometheus::BuildCounter()
      .Name("moe_tls_handshake_failures_total")
      .Help(
          "TLS handshakes on the RPC ports that failed (plaintext peer, certificate not signed "
          "by the CA, wrong host name, no client certificate), by the side that saw them")
      .Register(registry);
}

std::function<void()> adminTlsFailureCounter(prometheus::Registry& registry) {
  auto& counter = registerTlsHandshakeFailures(registry).Add({{"side", "server"}, {"shard", ""}});
  return [&counter]() { counter.Increment(); };
}

}  // namespace moe
