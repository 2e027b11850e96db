// PrometheusRunner implementation: config rendering, fork/exec of `prometheus`, readiness over a
// minimal blocking HTTP/1.0 client on loopback, and shutdown.
#include "deploy/local/prometheus_runner.h"

#include "deploy/local/child_process.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace moe::deploy {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A YAML single-quoted scalar.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// "host:port" → the host to connect to: wildcard listen addresses map to loopback.
std::string connectHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0" || host == "*") return "127.0.0.1";
  if (host == "::" || host == "[::]") return "::1";
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

// A scrape target for an admin address (IPv6 hosts bracketed).
std::string scrapeTarget(const std::string& address) {
  auto hp = parseHostPort(address);
  if (!hp) return address;
  std::string host = connectHost(hp.value().first);
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(hp.value().second);
}

// One GET over a fresh connection; returns the status code (0 when unreachable) and the body.
int httpGet(const std::string& host, uint16_t port, const std::string& path, std::string* body) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return 0;
  int status = 0;
  for (addrinfo* ai = res; ai != nullptr && status == 0; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect() too
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
      if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
        std::string reply;
        char buf[4096];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
        // "HTTP/1.x NNN ..."
        if (reply.size() >= 12 && reply.compare(0, 5, "HTTP/") == 0) {
          status = std::atoi(reply.c_str() + reply.find(' ') + 1);
          auto end = reply.find("\r\n\r\n");
          if (body != nullptr && end != std::string::npos) *body = reply.substr(end + 4);
        }
      }
    }
    close(fd);
  }
  freeaddrinfo(res);
  return status;
}

// Whether something already listens on host:port (so Prometheus would fail to bind, and a ready
// check could be answered by that other process).
bool portInUse(const std::string& host, uint16_t port) {
  return httpGet(host, port, "/-/ready", nullptr) != 0;
}

// After /-/ready, Prometheus applies its scrape targets within ~5 s (its discovery updates are
// throttled) and scrapes each within one interval after that. Returns "" once all `expected`
// targets are loaded, else what is missing.
std::string checkTargets(const std::string& host, uint16_t port, size_t expected) {
  std::string body;
  if (httpGet(host, port, "/api/v1/targets?state=active", &body) != 200) return "no target list";
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("data")) return "unreadable target list";
  const auto& targets = j["data"].value("activeTargets", nlohmann::json::array());
  if (targets.size() < expected) {
    return std::to_string(targets.size()) + " of " + std::to_string(expected) + " targets loaded";
  }
  return "";
}

std::string describeExit(int status) {
  return WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                           : "was killed by signal " + std::to_string(WTERMSIG(status));
}

}  // namespace

Result<std::string> PrometheusRunner::findBinary(const std::string& binary) {
  const std::string hint =
      "; install the Debian package prometheus (apt-get install prometheus), which provides "
      "/usr/bin/prometheus, or run without --prometheus";
  if (binary.find('/') != std::string::npos) {
    if (access(binary.c_str(), X_OK) == 0) return binary;
    return makeError(binary + ": not found or not executable" + hint);
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + binary;
    if (access(candidate.c_str(), X_OK) == 0 && !fs::is_directory(candidate)) return candidate;
  }
  return makeError("'" + binary + "' not found on PATH" + hint);
}

namespace {
// With admin.tls the admin planes speak HTTPS: Prometheus verifies them against admin.tls.ca (the
// targets are the YAML's host:port, so the certificate must name that host or IP) and presents
// the admin certificate itself, which client_auth accepts since the same CA signed it.
std::string scrapeTls(const ClusterConfig& config) {
  if (!config.admin.tls) return "";
  const TlsConfig& t = *config.admin.tls;
  return "    scheme: https\n    tls_config:\n      ca_file: " + quote(t.ca) +
         "\n      cert_file: " + quote(t.cert) + "\n      key_file: " + quote(t.key) + "\n";
}
}  // namespace

std::string PrometheusRunner::renderConfig(const ClusterConfig& config,
                                           const std::string& scrapeInterval,
                                           const std::string& rulesPath) {
  std::ostringstream y;
  y << "# Written by moe-cluster for " << config.sourcePath << "\n"
    << "global:\n"
    << "  scrape_interval: " << scrapeInterval << "\n"
    << "  evaluation_interval: " << scrapeInterval << "\n";
  if (!rulesPath.empty()) y << "rule_files:\n  - " << quote(rulesPath) << "\n";
  y << "scrape_configs:\n";
  if (!config.router.admin.empty()) {
    // honor_labels: the router's moe_shard_*{shard=...} series keep their own `shard` label
    // instead of having it renamed to exported_shard by the target label shard="router".
    y << "  - job_name: moe-router\n"
      << scrapeTls(config) << "    honor_labels: true\n"
      << "    static_configs:\n"
      << "      - targets: [" << quote(scrapeTarget(config.router.admin)) << "]\n"
      << "        labels: {shard: 'router'}\n";
  }
  bool expertJob = false;
  for (const auto& s : config.shards) {
    if (s.admin.empty()) continue;
    if (!expertJob) {
      y << "  - job_name: moe-expert\n" << scrapeTls(config) << "    static_configs:\n";
      expertJob = true;
    }
    y << "      - targets: [" << quote(scrapeTarget(s.admin)) << "]\n"
      << "        labels: {shard: " << quote(s.name) << "}\n";
  }
  if (config.router.admin.empty() && !expertJob) y << "  []\n";
  return y.str();
}

Result<std::unique_ptr<PrometheusRunner>> PrometheusRunner::start(
    const ClusterConfig& config, const PrometheusOptions& options) {
  auto binary = findBinary(options.binary);
  if (!binary) return makeError(binary.status());

  std::string unscraped;
  size_t targets = config.router.admin.empty() ? 0 : 1;
  if (config.router.admin.empty()) unscraped += " router";
  for (const auto& s : config.shards) {
    if (s.admin.empty()) {
      unscraped += " " + s.name;
    } else {
      ++targets;
    }
  }
  if (targets == 0) {
    return makeError("prometheus: nothing to scrape: " + config.sourcePath +
                     " sets no admin address; add router.admin and shards[].admin (host:port)");
  }
  if (!unscraped.empty()) logWarn("prometheus: no admin address, not scraped:", unscraped);

  std::string rules;
  if (!options.rulesFile.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(options.rulesFile, ec)) {
      return makeError("prometheus rules file " + options.rulesFile + ": not found");
    }
    rules = fs::absolute(options.rulesFile).lexically_normal().string();
  }

  auto listen = parseHostPort(options.listen);
  if (!listen) return makeError("prometheus listen address: " + listen.error());
  const std::string host = connectHost(listen.value().first);
  const uint16_t port = listen.value().second;
  if (portInUse(host, port)) {
    return makeError("prometheus: " + options.listen +
                     " is already in use (another Prometheus? the Debian package runs one as a "
                     "service on 9090); choose another with --prometheus=HOST:PORT");
  }

  std::unique_ptr<PrometheusRunner> r(new PrometheusRunner());
  r->options_ = options;
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/moe-prometheus-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) {
    return makeError("prometheus: cannot create a temporary directory " + templ + ": " +
                     std::strerror(errno));
  }
  r->dir_ = templ;
  const std::string configPath = r->dir_ + "/prometheus.yml";
  {
    std::ofstream out(configPath);
    out << renderConfig(config, options.scrapeInterval, rules);
    if (!out) return makeError("prometheus: cannot write " + configPath);
  }
  if (options.logDir.empty()) {
    r->logPath_ = r->dir_ + "/prometheus.log";
  } else {
    std::error_code ec;
    fs::create_directories(options.logDir, ec);
    r->logPath_ = options.logDir + "/prometheus.log";
  }

  std::vector<std::string> args = {binary.value(), "--config.file=" + configPath,
                                   "--storage.tsdb.path=" + r->dir_ + "/data",
                                   "--web.listen-address=" + options.listen};
  ChildOptions childOptions;
  childOptions.logPath = r->logPath_;
  childOptions.truncateLog = true;
  childOptions.workDir = r->dir_;
  childOptions.nullStdin = true;
  auto spawned = spawnChild(args, childOptions);
  if (!spawned) return makeError("prometheus: " + spawned.error());
  const pid_t pid = spawned.value();
  r->pid_ = pid;

  // Ready when /-/ready answers 200, the answering server is ours (its TSDB is our dir), and it
  // has loaded every scrape target.
  const auto deadline = Clock::now() + std::chrono::milliseconds(options.readyTimeoutMs);
  bool ours = false;
  std::string waitingFor = "/-/ready";
  while (true) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r->pid_ = -1;
      return makeError("prometheus " + describeExit(status) + " during start-up:\n" + r->logTail());
    }
    if (!ours && httpGet(host, port, "/-/ready", nullptr) == 200) {
      std::string flags;
      ours = httpGet(host, port, "/api/v1/status/flags", &flags) == 200 &&
             flags.find(r->dir_ + "/data") != std::string::npos;
      if (!ours) waitingFor = "its own /-/ready (another server answers on " + options.listen + ")";
    }
    if (ours) {
      waitingFor = checkTargets(host, port, targets);
      if (waitingFor.empty()) break;
    }
    if (Clock::now() > deadline) {
      return makeError("prometheus at " + options.listen + " not ready within " +
                       std::to_string(options.readyTimeoutMs) + " ms (waiting for " + waitingFor +
                       "); its log:\n" + r->logTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  r->options_.listen =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  return r;
}

// Prometheus' error lines when it logged any (the cause comes before a long shutdown sequence),
// else the end of its log; plus where the whole log is when it outlives the temp dir.
std::string PrometheusRunner::logTail() const {
  std::ifstream in(logPath_);
  std::vector<std::string> lines, errors;
  for (std::string line; std::getline(in, line);) {
    if (line.find("level=error") != std::string::npos) {
      errors.push_back(line);
      if (errors.size() > 6) errors.erase(errors.begin());
    }
    lines.push_back(std::move(line));
    if (lines.size() > 6) lines.erase(lines.begin());
  }
  std::string out;
  for (const auto& l : errors.empty() ? lines : errors) out += "  " + l + "\n";
  if (out.empty()) out = "  (its log is empty)\n";
  if (!options_.logDir.empty()) out += "  (whole log: " + logPath_ + ")\n";
  out.pop_back();  // the caller ends the line
  return out;
}

bool PrometheusRunner::reapExited(std::string* why) {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  pid_ = -1;
  if (why != nullptr) {
    *why = "prometheus " + describeExit(status) + ":\n" + logTail();
  }
  return true;
}

void PrometheusRunner::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (true) {
      pid_t r = waitpid(pid_, nullptr, WNOHANG);
      if (r == pid_ || r < 0) break;
      if (Clock::now() > deadline) {
        logWarn("prometheus did not stop within 10 s; killing it");
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    dir_.clear();
  }
}

PrometheusRunner::~PrometheusRunner() {
  stop();
}

}  // namespace moe::deploy
