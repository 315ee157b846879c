// A Catch2 listener that makes "no process left behind" and "every run
// ends exactly once" part of every test.
// The test process is a child subreaper, so every orphan from a test's
// processes (adapters, their children, even after a harnessd crash) becomes
// our child. After each test case we wait briefly for them to go; any that
// remains is reported, killed, and fails the run.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include "daemon_process.h"

namespace {


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
      left = harnessd::test::children_of(getpid());
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
