// LocalCluster implementation: fork/exec children, poll their info RPC from a private event loop
// thread (so callers may have their own KJ loop), signal and reap them.
#include "deploy/local/local_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kj/async-io.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "common/log.h"
#include "common/proto/moe.capnp.h"
#include "common/rpc_endpoint.h"
#include "deploy/local/child_process.h"

namespace moe::deploy {
namespace {

using Clock = std::chrono::steady_clock;

// One info probe over a fresh connection. Empty string: ready; else why not.
std::string probe(const std::string& address, bool router, const RpcClientTls& tls) {
  std::string outcome;
  std::thread t([&]() {
    try {
      auto io = kj::setupAsyncIo();
      auto& timer = io.provider->getTimer();
      auto conn = connectRpc(*io.provider, timer, address, 1000, tls).wait(io.waitScope);
      if (router) {
        auto req = conn->bootstrap<proto::Router>().infoRequest();
        auto reply =
            withDeadline(timer, 5000,
                         kj::Promise<capnp::Response<proto::Router::InfoResults>>(req.send()),
                         "info timed out")
                .wait(io.waitScope);
        auto info = reply.getInfo();
        if (!info.getReady()) {
          outcome = "router up, not every expert reachable yet";
          for (auto s : info.getShards()) {
            if (!s.getReachable())
              outcome += std::string("; ") + s.getName().cStr() + ": " + s.getError().cStr();
          }
        }
      } else {
        auto req = conn->bootstrap<proto::ExpertShard>().infoRequest();
        withDeadline(timer, 5000,
                     kj::Promise<capnp::Response<proto::ExpertShard::InfoResults>>(req.send()),
                     "info timed out")
            .wait(io.waitScope);
      }
    } catch (const kj::Exception& e) {
      outcome = e.getDescription().cStr();
    }
  });
  t.join();
  return outcome;
}

}  // namespace

std::string selfDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

Result<std::unique_ptr<LocalCluster>> LocalCluster::start(const LocalClusterOptions& options) {
  auto config = loadClusterConfig(options.configPath);
  if (!config) return makeError(config.status());
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  c->options_ = options;
  if (c->options_.binDir.empty()) c->options_.binDir = selfDir();
  c->config_ = std::move(config).value();
  if (c->config_.tls) {
    auto tls = RpcTls::load(*c->config_.tls);
    if (!tls) return makeError(tls.status());
    c->tls_ = std::move(tls).value();
  }
  if (!c->options_.logDir.empty()) std::filesystem::create_directories(c->options_.logDir);
  const std::string expert = c->options_.binDir + "/moe-expert";
  const std::string router = c->options_.binDir + "/moe-router";
  for (const auto* bin : {&expert, &router}) {
    if (access(bin->c_str(), X_OK) != 0) return makeError(*bin + ": not found or not executable");
  }
  for (const auto& s : c->config_.shards) {
    c->children_.push_back(
        {s.name, {expert, "--config", options.configPath, "--shard", s.name}, -1});
  }
  c->children_.push_back({"router", {router, "--config", options.configPath}, -1});
  // Shards start in parallel (weight loading dominates); the router starts once they are ready.
  for (size_t i = 0; i + 1 < c->children_.size(); ++i) {
    if (auto s = c->spawn(c->children_[i]); !s) return makeError(s);
  }
  for (size_t i = 0; i + 1 < c->children_.size(); ++i) {
    if (auto s = c->waitReady(c->children_[i], false); !s) return makeError(s);
  }
  if (auto s = c->spawn(c->children_.back()); !s) return makeError(s);
  if (auto s = c->waitReady(c->children_.back(), true); !s) return makeError(s);
  return c;
}

Status LocalCluster::spawn(Child& child) {
  ChildOptions o;
  if (!options_.logDir.empty()) o.logPath = options_.logDir + "/" + child.name + ".log";
  auto pid = spawnChild(child.argv, o);
  if (!pid) return pid.status();
  child.pid = pid.value();
  return Status::ok();
}

Status LocalCluster::waitReady(Child& child, bool router) {
  const std::string address =
      router ? config_.router.listen : config_.findShard(child.name)->listen;
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.readyTimeoutMs);
  // A restarted process reads the certificate files as they are now (they may have rotated).
  if (tls_) (void)tls_->reload();
  std::string last;
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      std::string how = WIFEXITED(status)
                            ? "exited with status " + std::to_string(WEXITSTATUS(status))
                            : "was killed by signal " + std::to_string(WTERMSIG(status));
      child.pid = -1;
      return Status::error(child.name + " " + how + " during start-up" +
                           (options_.logDir.empty()
                                ? " (see its log above)"
                                : " (see " + options_.logDir + "/" + child.name + ".log)"));
    }
    last = probe(address, router, clientTls());
    if (last.empty()) return Status::ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::error(child.name + " at " + address + " not ready within " +
                       std::to_string(options_.readyTimeoutMs) + " ms: " + last);
}

pid_t LocalCluster::pidOf(const std::string& name) const {
  for (const auto& c : children_) {
    if (c.name == name) return c.pid;
  }
  return -1;
}

Status LocalCluster::restartShard(const std::string& name) {
  for (auto& c : children_) {
    if (c.name != name || c.name == "router") continue;
    if (c.pid > 0) {
      kill(c.pid, SIGTERM);
      waitpid(c.pid, nullptr, 0);
    }
    if (auto s = spawn(c); !s) return s;
    return waitReady(c, false);
  }
  return Status::error("no shard named " + name);
}

Status LocalCluster::restartRouter() {
  for (auto& c : children_) {
    if (c.name != "router") continue;
    if (c.pid > 0) {
      kill(c.pid, SIGTERM);
      waitpid(c.pid, nullptr, 0);
    }
    if (auto s = spawn(c); !s) return s;
    return waitReady(c, true);
  }
  return Status::error("no router");
}

std::string LocalCluster::reapExited() {
  for (auto& c : children_) {
    if (c.pid <= 0) continue;
    int status = 0;
    if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
      c.pid = -1;
      return c.name;
    }
  }
  return "";
}

void LocalCluster::stop() {
  // The router first, and wait for it: no request is then mid-way to a shard that is already
  // gone. Then every shard at once. Each gets its drain time plus a grace period before SIGKILL.
  const auto grace = std::chrono::milliseconds(config_.timeouts.drainMs) + std::chrono::seconds(10);
  auto stopAll = [&](bool router) {
    for (auto& c : children_) {
      if ((c.name == "router") == router && c.pid > 0) kill(c.pid, SIGTERM);
    }
    const auto deadline = Clock::now() + grace;
    for (auto& c : children_) {
      while ((c.name == "router") == router && c.pid > 0) {
        int status = 0;
        pid_t r = waitpid(c.pid, &status, WNOHANG);
        if (r == c.pid || r < 0) {
          c.pid = -1;
        } else if (Clock::now() > deadline) {
          logWarn(c.name, " did not stop in time; killing it");
          kill(c.pid, SIGKILL);
          waitpid(c.pid, nullptr, 0);
          c.pid = -1;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    }
  };
  stopAll(true);
  stopAll(false);
}

LocalCluster::~LocalCluster() {
  stop();
}

}  // namespace moe::deploy
