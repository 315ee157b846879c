// The guard process. PR_SET_PDEATHSIG only reaches a direct child, so when
// harnessd is killed with SIGKILL an adapter's own children would survive.
// The guard sits between harnessd and the adapter: it is the leader of the
// adapter's process group (harnessd spawns it detached), a child subreaper
// (orphans of the adapter become its children), and it receives a signal
// when harnessd dies. On that signal, or when the adapter exits, it kills
// every process left in its group and every child it adopted.
#include "adapters/guard.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace harnessd::adapters {
namespace {

// Delivered by the kernel when harnessd (our parent) dies.
constexpr int kParentDeathSignal = SIGUSR2;

void say(const std::string& message) {
  std::string line = "harnessd guard: " + message + "\n";
  ssize_t rc = ::write(2, line.data(), line.size());
  (void)rc;
}

// For the adapter's process between vfork and exec: no allocation.
void say_exec_failed(const char* program, int err) {
  char line[512];
  int n = std::snprintf(line, sizeof line, "harnessd guard: cannot run %s: %s\n", program, std::strerror(err));
  if (n <= 0) return;
  if (static_cast<std::size_t>(n) >= sizeof line) {
    n = static_cast<int>(sizeof line) - 1;
    line[n - 1] = '\n';
  }
  ssize_t rc = ::write(2, line, static_cast<std::size_t>(n));
  (void)rc;
}

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Reads /proc/<pid>/stat and says whether the process is a zombie (dead,
// only waiting to be reaped). The comm field may contain spaces and
// parentheses, so parse after the last ')'.
bool is_zombie(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;  // gone
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  buf[n] = '\0';
  char* close_paren = std::strrchr(buf, ')');
  char state = 0;
  if (!close_paren || std::sscanf(close_paren + 1, " %c", &state) != 1) return true;
  return state == 'Z';
}

// Appends the children of `pid` (from every thread's children list).
bool append_children(pid_t pid, std::vector<pid_t>& out) {
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (!dir) return false;
  bool ok = true;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::string path = tasks + "/" + e->d_name + "/children";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      ok = errno != ENOENT || pid != getpid();  // no children file: kernel without it
      continue;
    }
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    const char* p = text.c_str();
    char* end = nullptr;
    for (long v = std::strtol(p, &end, 10); end != p; v = std::strtol(p, &end, 10)) {
      out.push_back(static_cast<pid_t>(v));
      p = end;
    }
  }
  closedir(dir);
  return ok;
}

// Every live descendant of the guard. As a subreaper the guard adopts the
// orphans of its tree, so its descendants are everything the adapter left,
// in its process group or not. Walking the tree reads a few files; the
// full /proc scan is only the fallback for kernels without children lists.
std::vector<pid_t> leftovers() {
  std::vector<pid_t> out;
  std::vector<pid_t> tree;
  if (!append_children(getpid(), tree)) {
    DIR* dir = opendir("/proc");
    if (!dir) return out;
    pid_t self = getpid();
    while (dirent* e = readdir(dir)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (!end || *end != '\0' || pid <= 0 || pid == self) continue;
      if (getpgid(static_cast<pid_t>(pid)) == self && !is_zombie(static_cast<pid_t>(pid))) {
        out.push_back(static_cast<pid_t>(pid));
      }
    }
    closedir(dir);
    return out;
  }
  for (std::size_t i = 0; i < tree.size(); ++i) append_children(tree[i], tree);
  for (pid_t p : tree) {
    if (!is_zombie(p)) out.push_back(p);
  }
  return out;
}

// Reaps every child that has exited. True when the guard has no child
// left at all, dead or alive (ECHILD): then nothing of the tree remains
// under it, since every descendant hangs below some child of ours.
bool reap_all() {
  for (;;) {
    pid_t pid = waitpid(-1, nullptr, WNOHANG);
    if (pid > 0) continue;
    return pid < 0 && errno == ECHILD;
  }
}

// Nothing is left: wait reports no child, and a fresh scan agrees.
bool all_gone() { return reap_all() && leftovers().empty(); }

// Ends everything the adapter left behind: SIGTERM, a short grace, SIGKILL,
// and repeat until nothing of ours remains (adopted orphans appear as their
// parents die). One empty scan is not enough: the children lists are not
// reliable while processes exit (proc(5)); a parent that exits between
// reading our list and its own hands its children to us unseen. So this
// ends only when wait says we have no child at all (issue 11). Bounded in
// time so the guard itself always exits.
void clean_up(bool gentle) {
  if (all_gone()) return;  // the common case: the adapter left nothing
  if (gentle) {
    auto left = leftovers();
    for (pid_t p : left) kill(p, SIGTERM);
    for (int i = 0; i < 30 && !left.empty(); ++i) {
      sleep_ms(10);
      if (all_gone()) return;
      left = leftovers();
    }
  }
  timespec start{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (all_gone()) return;
    auto left = leftovers();
    for (pid_t p : left) kill(p, SIGKILL);
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= 3) break;
    // Children remain but none was listed alive: they are exiting, or the
    // scan missed them; look again soon.
    sleep_ms(left.empty() ? 1 : 5);
  }
  say("some processes of the adapter could not be stopped");
}

[[noreturn]] void exit_like(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);
    kill(getpid(), sig);
    _exit(128 + sig);
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

}  // namespace

void guard_main(int argc, char** argv) {
  // argv: <exe> __guard <parent pid> [--join FILE]... -- <program> [args...]
  int at = 3;
  while (at + 1 < argc && std::strcmp(argv[at], "--join") == 0) at += 2;
  if (argc < at + 2 || std::strcmp(argv[at], "--") != 0) {
    say("usage: harnessd __guard <parent-pid> [--join CGROUP_PROCS]... -- program [args...]");
    _exit(2);
  }
  const pid_t parent = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
  char** program = argv + at + 1;
  // Into the adapter's cgroups before the adapter exists: all it starts
  // is inside them from its first instruction.
  for (int i = 3; i < at; i += 2) {
    int fd = ::open(argv[i + 1], O_WRONLY | O_CLOEXEC);
    const std::string pid = std::to_string(::getpid());
    if (fd < 0 || ::write(fd, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
      say(std::string("cannot join the cgroup ") + argv[i + 1] + ": " + std::strerror(errno));
      _exit(126);
    }
    ::close(fd);
  }

  sigset_t watched;
  sigemptyset(&watched);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, kParentDeathSignal, kKillTreeSignal}) sigaddset(&watched, s);
  sigset_t previous;
  sigprocmask(SIG_BLOCK, &watched, &previous);
  signal(SIGPIPE, SIG_IGN);

  prctl(PR_SET_PDEATHSIG, kParentDeathSignal);
  if (getppid() != parent) _exit(1);  // harnessd died before we were ready
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  // vfork: the adapter's process borrows ours until its exec instead of
  // getting a copy of it that the exec throws away at once. Until then it
  // only makes system calls and writes nothing of ours (the message below
  // is built on its own stack).
  pid_t child = vfork();
  if (child < 0) {
    say(std::string("cannot fork: ") + std::strerror(errno));
    _exit(127);
  }
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv(program[0], program);
    say_exec_failed(program[0], errno);
    _exit(127);
  }

  // Drop our copies of the adapter's stdin and stdout: the adapter must see
  // EOF when harnessd closes its end, and harnessd must see EOF when the
  // adapter exits. stderr stays for our own messages.
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    ::close(devnull);
  }

  for (;;) {
    siginfo_t info{};
    int sig = sigwaitinfo(&watched, &info);
    if (sig < 0) continue;
    if (sig == SIGCHLD) {
      int status = 0;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == child) {
          clean_up(true);
          exit_like(status);
        }
      }
    } else if (sig == kParentDeathSignal) {
      if (getppid() != parent) {
        kill(child, SIGKILL);
        clean_up(false);
        _exit(137);
      }
    } else if (sig == kKillTreeSignal && info.si_pid == parent) {
      kill(child, SIGKILL);
      clean_up(false);
      kill(getpid(), SIGKILL);
      _exit(137);
    } else if (info.si_pid == parent) {
      // harnessd signals the guard alone and the guard passes it on to the
      // whole group. Had harnessd signalled the group, a signal sent before
      // the fork above would have missed the adapter; this one is taken
      // only now, after it. The guard's own copy comes back to it from
      // its own pid and is dropped below.
      kill(0, sig);
    } else if (info.si_pid != getpid()) {
      // Anyone else who signals the guard means the adapter.
      kill(child, sig);
    }
  }
}

}  // namespace harnessd::adapters
