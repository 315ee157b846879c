// A probe starts no adapter: at most `<program> --version`, which is killed
// once its output ends or after 10 s.
#include "worker/harness_probe.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "adapters/process.h"

namespace harnessd::worker {

namespace {

// The first line `<program> --version` prints, within a few seconds.
std::string program_version(const std::string& program, const std::vector<std::string>& env) {
  int fds[2];
  if (::pipe(fds) != 0) return "";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<std::string> env_copy = env;
    std::vector<char*> envp;
    for (auto& e : env_copy) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string p = program;
    char version[] = "--version";
    char* argv[] = {p.data(), version, nullptr};
    ::execve(argv[0], argv, envp.data());
    _exit(127);
  }
  ::close(fds[1]);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto nl = out.find('\n');
  return out.substr(0, nl);
}

}  // namespace

HarnessProbe probe_harness(const harnesses::HarnessProfile& profile, const std::vector<std::string>& parent,
                           bool check) {
  std::vector<std::string> env = harnesses::adapter_environment(profile, parent);
  std::string path;
  for (const auto& e : env) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  // A remote profile's command runs on its worker; here it needs ssh.
  const std::string program = profile.remote.enabled() ? "ssh" : profile.command.empty() ? "" : profile.command[0];
  auto found = adapters::find_executable(program, path);
  std::string version = check && found && !profile.remote.enabled() ? program_version(*found, env) : "";
  return HarnessProbe{std::move(found), std::move(version)};
}

}  // namespace harnessd::worker
