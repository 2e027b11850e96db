// PlacementReloader: what triggers a shard-list reload and where its answer goes. SIGHUP re-reads
// the router's config file; POST /admin/placement on the admin port takes a whole cluster YAML as
// its body (relative paths resolve against the config file's folder), or re-reads the file when
// the body is empty. Both end in RouterServer::reloadShards; the outcome is logged, and a POST
// is answered with it (200 and the summary, or the error's code and message).
#pragma once

#include <kj/async.h>

#include <functional>
#include <memory>
#include <string>

#include "common/admin_server.h"
#include "common/config.h"
#include "router_service/router_server.h"

namespace moe::router {

class PlacementReloader final : private kj::TaskSet::ErrorHandler {
 public:
  // `onReloaded` runs (event loop) after each reload that succeeded, with its config.
  PlacementReloader(RouterServer& router, std::string configPath,
                    std::function<void(const ClusterConfig&)> onReloaded);
  ~PlacementReloader() noexcept(false);

  // SIGHUP (event loop): reload from the config file, in the background.
  void onHangup();
  // Serves POST /admin/placement on `admin`. Call on the event loop thread: the admin thread
  // hands each request to this thread's loop.
  void serveOn(AdminServer& admin);

 private:
  // What the admin thread holds: the loop to hand requests to, and this reloader while it lives
  // (read and cleared on the loop thread only).
  struct Link {
    kj::Own<const kj::Executor> loop;
    PlacementReloader* self = nullptr;
  };
  void post(std::string body, std::function<void(AdminReply)> done);
  kj::Promise<AdminReply> reload(Result<ClusterConfig> next);
  void taskFailed(kj::Exception&& exception) override;

  RouterServer& router_;
  std::string configPath_;
  std::string baseDir_;
  std::function<void(const ClusterConfig&)> onReloaded_;
  std::shared_ptr<Link> link_;
  kj::TaskSet tasks_;
};

}  // namespace moe::router
