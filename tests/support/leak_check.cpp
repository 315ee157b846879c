// A Catch2 listener that makes "no process left behind" and "every run
// ends exactly once" part of every test.
// The test process is a child subreaper, so every orphan from a test's
// processes (adapters, their children, even after a harnessd crash) becomes
// our child. After each test case we wait briefly for them to go; any that
// remains is reported, killed, and fails the run.
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "daemon_process.h"

namespace {

std::vector<std::pair<pid_t, std::string>> children() {
  std::vector<std::pair<pid_t, std::string>> out;
  pid_t self = getpid();
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close_paren = line.rfind(')');
    if (close_paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid != self || state == 'Z') continue;
    auto open_paren = line.find('(');
    out.emplace_back(static_cast<pid_t>(pid), line.substr(open_paren + 1, close_paren - open_paren - 1));
  }
  closedir(dir);
  return out;
}

struct LeakCheck : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testRunStarting(Catch::TestRunInfo const&) override { prctl(PR_SET_CHILD_SUBREAPER, 1); }

  void testCaseEnded(Catch::TestCaseStats const& stats) override {
    // Every run of every daemon the test started ended exactly once.
    auto problems = harnessd::test::take_ledger_problems();
    if (!problems.empty()) {
      std::fprintf(stderr, "test case '%s' broke the ledger invariant:\n", stats.testInfo.name.c_str());
      for (const auto& p : problems) std::fprintf(stderr, "  %s\n", p.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
    std::vector<std::pair<pid_t, std::string>> left;
    for (int i = 0; i < 300; ++i) {  // up to 3 s for kill ladders to finish
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      left = children();
      if (left.empty()) return;
      usleep(10000);
    }
    std::fprintf(stderr, "test case '%s' left processes behind:\n", stats.testInfo.name.c_str());
    for (auto& [pid, comm] : left) {
      std::fprintf(stderr, "  pid %d (%s)\n", static_cast<int>(pid), comm.c_str());
      kill(pid, SIGKILL);
    }
    while (waitpid(-1, nullptr, 0) > 0) {
    }
    std::fflush(stderr);
    std::_Exit(1);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(LeakCheck)
