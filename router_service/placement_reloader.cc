// PlacementReloader: see placement_reloader.h.
#include "router_service/placement_reloader.h"

#include <filesystem>

#include "common/log.h"

namespace moe::router {

PlacementReloader::PlacementReloader(RouterServer& router, std::string configPath,
                                     std::function<void(const ClusterConfig&)> onReloaded)
    : router_(router),
      configPath_(std::move(configPath)),
      // Absolute now: loadClusterConfig resolves the file's relative paths the same way.
      baseDir_(std::filesystem::absolute(configPath_).parent_path().string()),
      onReloaded_(std::move(onReloaded)),
      tasks_(*this) {}

void PlacementReloader::taskFailed(kj::Exception&& exception) {
  logError("placement reload failed: ", exception.getDescription().cStr());
}

kj::Promise<AdminReply> PlacementReloader::reload(Result<ClusterConfig> next) {
  if (!next) {
    logError("placement not reloaded: ", next.error());
    return AdminReply{next.code(), next.error()};
  }
  ClusterConfig config = std::move(next).value();
  return router_.reloadShards(config).then(
      [this, config](Result<std::string> r) mutable -> AdminReply {
        if (!r) {
          logError("placement not reloaded: ", r.error());
          return {r.code(), r.error()};
        }
        if (onReloaded_) onReloaded_(config);
        return {StatusCode::kOk, "placement reloaded: " + r.value()};
      });
}

void PlacementReloader::onHangup() {
  tasks_.add(reload(loadClusterConfig(configPath_)).ignoreResult());
}

void PlacementReloader::serveOn(AdminServer& admin) {
  link_ = std::make_shared<Link>();
  link_->loop = kj::getCurrentThreadExecutor().addRef();
  link_->self = this;
  admin.setAction("/admin/placement", [link = link_](std::string body,
                                                     std::function<void(AdminReply)> done) {
    try {
      link->loop->executeSync([&link, &body, &done]() {
        if (link->self == nullptr) {
          done({StatusCode::kUnavailable, "router is stopping"});
        } else {
          link->self->post(std::move(body), done);
        }
      });
    } catch (const kj::Exception& e) {  // the event loop is gone: the router is stopping
      done({StatusCode::kUnavailable, "router is stopping: " + std::string(e.getDescription())});
    }
  });
}

void PlacementReloader::post(std::string body, std::function<void(AdminReply)> done) {
  auto next = body.empty() ? loadClusterConfig(configPath_)
                           : parseClusterConfig(body, "POST /admin/placement", baseDir_);
  tasks_.add(
      reload(std::move(next)).then([done = std::move(done)](AdminReply r) { done(std::move(r)); }));
}

PlacementReloader::~PlacementReloader() noexcept(false) {
  if (link_) link_->self = nullptr;
}

}  // namespace moe::router
