// Bubblewrap around an adapter, and the probe that says whether it works
// here. The sandbox goes inside the guard: the guard execs bwrap, which
// runs the adapter, so the guard stays the leader of the process group and
// the subreaper of the tree, and its kill ladder reaches bwrap and all it
// holds; --die-with-parent ties the sandbox to the guard (issue 17).
#include "adapters/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "adapters/process.h"

namespace harnessd::adapters {

namespace {

constexpr const char* kInstall = "apt-get install bubblewrap";

// How strict a mode is: none < workspace-write < read-only.
int strictness(const std::string& mode) {
  if (mode == "read-only") return 2;
  if (mode == "workspace-write") return 1;
  return 0;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.pop_back();
  return text;
}

// Runs `args` with stdin from /dev/null and stdout and stderr on one pipe,
// for at most `limit`; returns the wait status (-1: could not run it, or
// killed at the limit) and appends what it wrote to `output`.
int run_captured(const std::vector<std::string>& args, std::string& output, std::chrono::milliseconds limit) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    output = std::string("cannot create a pipe: ") + std::strerror(errno);
    return -1;
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (err != 0) {
    ::close(fds[0]);
    output = std::string("cannot run ") + args[0] + ": " + std::strerror(err);
    return -1;
  }
  const auto end = std::chrono::steady_clock::now() + limit;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[1024];
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    if (output.size() < 4096) output.append(buf, static_cast<std::size_t>(got));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    output = "it did not finish within " + std::to_string(limit.count()) + " ms";
    return -1;
  }
  return status;
}

bool in_tmp(const std::string& path) { return path.rfind("/tmp/", 0) == 0; }

// The folders of `program` (absolute) under /tmp: where it is named, and
// where it really is once its links are followed.
std::vector<std::string> program_dirs_in_tmp(const std::string& program) {
  namespace fs = std::filesystem;
  std::vector<std::string> dirs;
  if (program.empty() || program.front() != '/') return dirs;
  const std::string named = fs::path(program).lexically_normal().parent_path().string();
  if (in_tmp(named)) dirs.push_back(named);
  std::error_code ec;
  const fs::path real = fs::canonical(program, ec);
  if (!ec) {
    const std::string real_dir = real.parent_path().string();
    if (in_tmp(real_dir) && real_dir != named) dirs.push_back(real_dir);
  }
  return dirs;
}

}  // namespace

bool is_sandbox_mode(std::string_view mode) {
  return mode == "none" || mode == "read-only" || mode == "workspace-write";
}

bool at_least_as_strict(const Sandbox& stricter, const Sandbox& base) {
  if (strictness(stricter.mode) < strictness(base.mode)) return false;
  if (stricter.network && !base.network) return false;
  for (const auto& path : stricter.writable) {
    bool known = false;
    for (const auto& b : base.writable) known = known || b == path;
    if (!known) return false;
  }
  return true;
}

Sandbox tightened(const Sandbox& base, const Sandbox& choice) {
  Sandbox out = base;
  if (strictness(choice.mode) > strictness(base.mode)) out.mode = choice.mode;
  out.network = base.network && choice.network;
  return out;
}

std::vector<std::string> writable_paths(const Sandbox& sandbox, const std::string& cwd, const std::string& home) {
  std::vector<std::string> out;
  if (sandbox.mode != "workspace-write") return out;
  out.push_back(cwd);
  for (const auto& path : sandbox.writable) {
    if (path.rfind("~/", 0) == 0) {
      if (!home.empty() && home.front() == '/') out.push_back(home + path.substr(1));
    } else if (path == "~") {
      if (!home.empty() && home.front() == '/') out.push_back(home);
    } else {
      out.push_back(path);
    }
  }
  return out;
}

nlohmann::json sandbox_json(const Sandbox& sandbox, const std::vector<std::string>& writable) {
  if (!sandbox.enabled()) return {{"mode", "none"}};
  return {{"mode", sandbox.mode}, {"network", sandbox.network}, {"writable", writable}};
}

std::vector<std::string> sandbox_argv(const std::string& bwrap, const Sandbox& sandbox, const std::string& cwd,
                                      const std::vector<std::string>& writable, const std::vector<std::string>& hidden,
                                      const std::vector<std::string>& argv) {
  // Later mounts cover earlier ones: the host read-only first, then a
  // private /tmp, then what is writable (a cwd under /tmp stays visible).
  std::vector<std::string> out = {bwrap, "--die-with-parent", "--new-session"};
  if (!sandbox.network) out.push_back("--unshare-net");
  for (const char* a : {"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"}) {
    out.emplace_back(a);
  }
  // The program stays reachable, read-only, when it lies under /tmp (a
  // build tree there, say), which the sandbox replaces with its own: its
  // folder, and the one it links to.
  if (!argv.empty()) {
    for (const std::string& dir : program_dirs_in_tmp(argv.front())) out.insert(out.end(), {"--ro-bind", dir, dir});
  }
  // A read-only mount does not stop connect(2) on the Unix sockets under
  // it; a directory that must stay out of reach is covered instead.
  for (const auto& path : hidden) out.insert(out.end(), {"--tmpfs", path});
  // Read-only still sees its cwd when that is under /tmp, read-only.
  if (sandbox.mode == "read-only" && (cwd == "/tmp" || cwd.rfind("/tmp/", 0) == 0)) {
    out.insert(out.end(), {"--ro-bind", cwd, cwd});
  }
  for (const auto& path : writable) {
    // The cwd exists (session/new checked it); a configured path that does
    // not exist (yet) is left out rather than failing the start.
    out.insert(out.end(), {path == cwd ? "--bind" : "--bind-try", path, path});
  }
  // The covers were writable while bwrap made mount points in them.
  for (const auto& path : hidden) out.insert(out.end(), {"--remount-ro", path});
  out.insert(out.end(), {"--chdir", cwd, "--"});
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

const SandboxSupport& SandboxSupport::here() {
  static const SandboxSupport support = [] {
    const char* path = std::getenv("PATH");
    return probe(path ? path : "/usr/local/bin:/usr/bin:/bin");
  }();
  return support;
}

SandboxSupport SandboxSupport::probe(const std::string& path) {
  SandboxSupport s;
  auto found = find_executable("bwrap", path);
  if (!found) {
    s.why_not_ = "bubblewrap (bwrap) is not installed: it was not found on PATH";
    s.hint_ = kInstall;
    return s;
  }
  s.bwrap_ = *found;
  // The namespaces and mounts of a real sandbox without network, around
  // `bwrap --version`: one start tells both that it works and its version.
  Sandbox strict;
  strict.mode = "read-only";
  strict.network = false;
  std::string output;
  int status = run_captured(sandbox_argv(s.bwrap_, strict, "/", {}, {}, {s.bwrap_, "--version"}), output,
                            std::chrono::milliseconds(5000));
  output = trimmed(output);
  if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && output.rfind("bubblewrap", 0) == 0) {
    s.version_ = output;
    return s;
  }
  if (output.size() > 300) output = output.substr(0, 300) + "...";
  s.why_not_ = "bubblewrap (" + s.bwrap_ + ") cannot create its namespaces here" +
               (output.empty() ? std::string() : ": " + output);
  s.hint_ =
      "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
      "user.max_user_namespaces > 0, or an AppArmor profile for bwrap), or install bubblewrap setuid; "
      "in a container, run it with user namespaces allowed";
  return s;
}

std::string SandboxSupport::describe() const {
  if (!available()) return "none (" + why_not_ + "); profiles with a sandbox are refused";
  return version_ + " (" + bwrap_ + ")";
}

std::optional<std::string> SandboxSupport::refuse() const {
  if (available()) return std::nullopt;
  return why_not_;
}

}  // namespace harnessd::adapters
