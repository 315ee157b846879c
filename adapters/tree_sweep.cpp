// Sweeping an adapter tree whose guard died (issue 11). The guard is the
// tree's subreaper and cleans up after the adapter; but a process of the
// same uid can SIGKILL it, and then nothing inside the tree is left to do
// that. harnessd, the guard's parent, sees the death and finishes the job
// with what it can still find: the guard's process group and session (the
// guard called setsid, so both carry its pid, which the kernel does not
// reuse while either has a member) and, as a child subreaper itself, the
// orphans that the guard's death handed to it. A process that left both the
// group and the session and whose parent is still alive outside our reach
// is not found; docs/architecture.md names that residual risk.
#include "adapters/tree_sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace harnessd::adapters {
namespace {

struct ProcStat {
  pid_t pid = 0;
  char state = 0;
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
};

// Fields 3-6 of /proc/<pid>/stat, parsed after the last ')' because the
// command name may contain spaces and parentheses.
bool read_stat(pid_t pid, ProcStat& out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* close_paren = std::strrchr(buf, ')');
  int ppid = 0, pgrp = 0, session = 0;
  if (!close_paren || std::sscanf(close_paren + 1, " %c %d %d %d", &out.state, &ppid, &pgrp, &session) != 4) {
    return false;
  }
  out.pid = pid;
  out.ppid = ppid;
  out.pgrp = pgrp;
  out.session = session;
  return true;
}

// The children spawned by a Process and not yet reaped, of every loop.
std::mutex owned_mutex;
std::vector<pid_t>& owned_pids() {
  static std::vector<pid_t> pids;
  return pids;
}

std::vector<pid_t> owned_children() {
  std::lock_guard lock(owned_mutex);
  return owned_pids();
}

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace

bool become_child_subreaper() { return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }

void own_child(pid_t pid) {
  std::lock_guard lock(owned_mutex);
  owned_pids().push_back(pid);
}

void disown_child(pid_t pid) {
  std::lock_guard lock(owned_mutex);
  auto& pids = owned_pids();
  pids.erase(std::remove(pids.begin(), pids.end(), pid), pids.end());
}

int sweep_tree(pid_t leader, bool orphans) {
  if (leader <= 0) return 0;
  const pid_t self = getpid();
  std::vector<pid_t> killed;
  ::kill(-leader, SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  // Each round kills what it finds; the parents it kills hand their
  // children to us, and the next round finds those. A round that finds
  // nothing, alive or dead, ends it: every remaining process of the tree
  // would have a parent that is one of ours or in the group or session.
  for (;;) {
    const std::vector<pid_t> owned = orphans ? owned_children() : std::vector<pid_t>();
    bool found = false;
    DIR* dir = opendir("/proc");
    if (!dir) break;
    while (dirent* e = readdir(dir)) {
      char* end = nullptr;
      long value = std::strtol(e->d_name, &end, 10);
      if (!end || *end != '\0' || value <= 0 || value == self) continue;
      ProcStat st;
      if (!read_stat(static_cast<pid_t>(value), st)) continue;
      const bool orphan = orphans && st.ppid == self && std::find(owned.begin(), owned.end(), st.pid) == owned.end();
      if (!orphan && st.pgrp != leader && st.session != leader) continue;
      found = true;
      if (st.state != 'Z') {
        ::kill(st.pid, SIGKILL);
        if (std::find(killed.begin(), killed.end(), st.pid) == killed.end()) killed.push_back(st.pid);
      }
      if (orphan) ::waitpid(st.pid, nullptr, WNOHANG);
    }
    closedir(dir);
    if (!found || std::chrono::steady_clock::now() >= deadline) break;
    sleep_ms(2);
  }
  return static_cast<int>(killed.size());
}

}  // namespace harnessd::adapters
