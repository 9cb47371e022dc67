#include "coordinator/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/error.h"

extern char** environ;

namespace pipellm::coord {

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                           const std::string& output_file) {
  if (argv.empty()) throw Error("child process: empty argument vector");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const auto& x : env) overridden = overridden || x.compare(0, key.size() + 1, key + "=") == 0;
    if (!overridden) env_strings.push_back(kv);
  }
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  if (!output_file.empty()) {
    posix_spawn_file_actions_addopen(&files, 1, output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
  }
  const int rc = ::posix_spawnp(&pid_, args[0], &files, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw Error("cannot start '" + argv[0] + "': " + std::strerror(rc));
}

ChildProcess::~ChildProcess() { terminate(std::chrono::milliseconds(2000)); }

std::string ChildProcess::describe_status(int st) {
  if (WIFEXITED(st)) return "exit status " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const int sig = WTERMSIG(st);
    const char* name = ::sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "wait status " + std::to_string(st);
}

std::optional<std::string> ChildProcess::exited() {
  if (exit_ || pid_ <= 0) return exit_;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exit_ = describe_status(st);
    ::kill(-pid_, SIGKILL);  // stray ranks of the group, if any
  } else if (r < 0) {
    exit_ = std::string("lost track of the process: ") + std::strerror(errno);
  }
  return exit_;
}

void ChildProcess::terminate(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || exited()) return;
  ::kill(-pid_, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  while (!exited() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!exited()) {
    ::kill(-pid_, SIGKILL);
    int st = 0;
    if (::waitpid(pid_, &st, 0) == pid_) exit_ = describe_status(st);
  }
}

}  // namespace pipellm::coord
