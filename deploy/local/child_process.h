// Starting the launcher's child processes (services, Prometheus) the same way: they die with the
// launcher, start with default signal handling, and log where asked.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace moe::deploy {

struct ChildOptions {
  std::string logPath;  // stdout+stderr appended here; "" = inherit
  bool truncateLog = false;
  std::string workDir;  // "" = inherit
  bool nullStdin = false;
};

// fork + execv(argv[0], argv). Fails only when fork fails; an exec failure exits the child 127.
Result<pid_t> spawnChild(const std::vector<std::string>& argv, const ChildOptions& options);

}  // namespace moe::deploy
