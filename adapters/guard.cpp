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

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Reads "pid (comm) state ppid pgrp ..." from /proc/<pid>/stat. The comm
// field may contain spaces and parentheses, so parse after the last ')'.
bool read_stat(pid_t pid, pid_t& ppid, pid_t& pgrp) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  char* close_paren = std::strrchr(buf, ')');
  if (!close_paren) return false;
  char state = 0;
  int p = 0, g = 0;
  if (std::sscanf(close_paren + 1, " %c %d %d", &state, &p, &g) != 3) return false;
  if (state == 'Z') return false;  // already dead, only waiting to be reaped
  ppid = p;
  pgrp = g;
  return true;
}

// Processes in our group (except us) and processes we adopted.
std::vector<pid_t> leftovers() {
  std::vector<pid_t> out;
  pid_t self = getpid();
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end != '\0' || pid <= 0 || pid == self) continue;
    pid_t ppid = 0, pgrp = 0;
    if (!read_stat(static_cast<pid_t>(pid), ppid, pgrp)) continue;
    if (pgrp == self || ppid == self) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  return out;
}

void reap_all() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

// Ends everything the adapter left behind: SIGTERM, a short grace, SIGKILL,
// and repeat until nothing of ours remains (adopted orphans appear as their
// parents die). Bounded so the guard itself always exits.
void clean_up(bool gentle) {
  if (gentle) {
    auto left = leftovers();
    if (left.empty()) {
      reap_all();
      return;
    }
    for (pid_t p : left) kill(p, SIGTERM);
    for (int i = 0; i < 30 && !left.empty(); ++i) {
      sleep_ms(10);
      reap_all();
      left = leftovers();
    }
  }
  for (int round = 0; round < 200; ++round) {
    reap_all();
    auto left = leftovers();
    if (left.empty()) {
      // Processes that died since the last reap are zombies and not listed;
      // reap them now, or they would pass to init when we exit.
      reap_all();
      return;
    }
    for (pid_t p : left) kill(p, SIGKILL);
    sleep_ms(5);
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
  // argv: <exe> __guard <parent pid> -- <program> [args...]
  if (argc < 5 || std::strcmp(argv[3], "--") != 0) {
    say("usage: harnessd __guard <parent-pid> -- program [args...]");
    _exit(2);
  }
  const pid_t parent = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
  char** program = argv + 4;

  sigset_t watched;
  sigemptyset(&watched);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, kParentDeathSignal}) sigaddset(&watched, s);
  sigset_t previous;
  sigprocmask(SIG_BLOCK, &watched, &previous);
  signal(SIGPIPE, SIG_IGN);

  prctl(PR_SET_PDEATHSIG, kParentDeathSignal);
  if (getppid() != parent) _exit(1);  // harnessd died before we were ready
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  pid_t child = fork();
  if (child < 0) {
    say(std::string("cannot fork: ") + std::strerror(errno));
    _exit(127);
  }
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &previous, nullptr);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv(program[0], program);
    say(std::string("cannot run ") + program[0] + ": " + std::strerror(errno));
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
    } else if (info.si_pid != parent) {
      // harnessd signals the whole group, so the adapter already has it;
      // anyone else who signals the guard means the adapter.
      kill(child, sig);
    }
  }
}

}  // namespace harnessd::adapters
