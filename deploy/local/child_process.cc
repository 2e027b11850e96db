// spawnChild implementation.
#include "deploy/local/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moe::deploy {

Result<pid_t> spawnChild(const std::vector<std::string>& args, const ChildOptions& options) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return makeError("fork failed for " + args[0] + ": " + std::strerror(errno));
  if (pid > 0) return pid;
  // Child: die with the launcher (even if it is killed), default signal mask, redirect.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (options.nullStdin) {
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0) dup2(in, 0);
  }
  if (!options.logPath.empty()) {
    const int flags = O_WRONLY | O_CREAT | (options.truncateLog ? O_TRUNC : O_APPEND);
    int fd = open(options.logPath.c_str(), flags, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
  }
  if (!options.workDir.empty() && chdir(options.workDir.c_str()) != 0) _exit(126);
  execv(argv[0], argv.data());
  _exit(127);
}

}  // namespace moe::deploy
