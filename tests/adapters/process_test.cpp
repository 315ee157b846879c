// Adapter processes: spawn through the guard, exit status, draining, the
// kill ladder, and containment of the whole tree.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <sstream>
#include <string>

#include "acp/loop.h"
#include "adapters/process.h"
#include "daemon_process.h"

using namespace harnessd;
using namespace harnessd::adapters;
using namespace std::chrono_literals;

namespace {

ProcessSpec shell(const std::string& script, std::string guard = test::guard_exe()) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", script};
  spec.cwd = "/tmp";
  spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  spec.guard_exe = std::move(guard);
  return spec;
}

struct Run {
  std::string out, err;
  std::optional<ExitStatus> status;
  std::unique_ptr<Process> process;
};

// Spawns, runs the loop until the process has exited and drained.
void run(Loop& loop, Run& r, const ProcessSpec& spec, std::function<void(Run&)> after_start = nullptr) {
  Process::Callbacks cb;
  cb.on_stdout = [&](std::string_view d) { r.out.append(d); };
  cb.on_stderr = [&](std::string_view d) { r.err.append(d); };
  cb.on_exit = [&](const ExitStatus& s) {
    r.status = s;
    loop.post([&] { r.process.reset(); });
  };
  auto p = Process::spawn(loop, spec, std::move(cb));
  REQUIRE(p);
  r.process = std::move(*p);
  if (after_start) after_start(r);
  loop.run();
}

}  // namespace

TEST_CASE("find_executable searches PATH like execvp") {
  auto sh = find_executable("sh", "/nonexistent:/usr/bin:/bin");
  REQUIRE(sh);
  CHECK(sh->front() == '/');
  auto missing = find_executable("no-such-program-xyz", "/usr/bin:/bin");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message == "'no-such-program-xyz' was not found on PATH");
  test::TempDir dir;
  std::string plain = dir.write("plain", "data");  // exists, but not executable
  CHECK(find_executable(plain, "").error().message == "'" + plain + "' is not an executable file");
}

TEST_CASE("output is drained before the exit is reported, with the exit code") {
  // The guard program, harnessd's own guard mode, and no guard at all.
  for (const std::string& guarded : {test::guard_exe(), test::harnessd_exe(), std::string()}) {
    Loop loop;
    Run r;
    run(loop, r, shell("i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; echo oops >&2; exit 3", guarded));
    REQUIRE(r.status);
    CHECK(r.status->code == 3);
    CHECK(r.status->signal == 0);
    CHECK(r.out.size() > 2000 * 5);
    CHECK(r.out.find("line1999\n") != std::string::npos);
    CHECK(r.err == "oops\n");
    CHECK(loop.close());
  }
}

TEST_CASE("death by signal is reported as the signal, through the guard too") {
  Loop loop;
  Run r;
  run(loop, r, shell("kill -SEGV $$"));
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGSEGV);
  CHECK(r.status->describe().rfind("signal 11", 0) == 0);
  CHECK(loop.close());
}

TEST_CASE("stdin is the adapter's: closing it gives EOF") {
  Loop loop;
  Run r;
  run(loop, r, shell("cat; echo done"), [](Run& run) {
    run.process->write("hello\n");
    run.process->close_stdin();
  });
  REQUIRE(r.status);
  CHECK(r.status->code == 0);
  CHECK(r.out == "hello\ndone\n");
  CHECK(loop.close());
}

TEST_CASE("terminate: SIGTERM first, SIGKILL after the grace period") {
  Loop loop;
  Run r;
  auto start = std::chrono::steady_clock::now();
  // Terminate only once the trap is set, or the shell would die of SIGTERM.
  Process::Callbacks cb;
  cb.on_stdout = [&](std::string_view d) {
    r.out.append(d);
    if (r.out == "ready\n") r.process->terminate(300ms);
  };
  cb.on_exit = [&](const ExitStatus& s) {
    r.status = s;
    loop.post([&] { r.process.reset(); });
  };
  auto p = Process::spawn(loop, shell("trap '' TERM; echo ready; sleep 100"), std::move(cb));
  REQUIRE(p);
  r.process = std::move(*p);
  loop.run();
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGKILL);
  CHECK(took >= 300ms);
  CHECK(took < 3s);
  CHECK(loop.close());
}

TEST_CASE("a process that honours SIGTERM ends at once") {
  Loop loop;
  Run r;
  auto start = std::chrono::steady_clock::now();
  run(loop, r, shell("sleep 100"), [](Run& run) { run.process->terminate(5s); });
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGTERM);
  CHECK(loop.close());
}

TEST_CASE("children of the adapter die with it, even ones that left its process group") {
  Loop loop;
  Run r;
  // Two grandchildren: one in the group, one in its own session; the
  // adapter exits normally and leaves both behind.
  run(loop, r, shell("sleep 1000 & echo $!; setsid sleep 1000 & echo $!; exit 0"));
  REQUIRE(r.status);
  CHECK(r.status->code == 0);
  std::istringstream pids(r.out);
  pid_t a = 0, b = 0;
  pids >> a >> b;
  REQUIRE(a > 0);
  REQUIRE(b > 0);
  CHECK(test::eventually([&] { return !test::process_alive(a) && !test::process_alive(b); }, 2s));
  CHECK(loop.close());
}

TEST_CASE("the kill ladder's last step leaves nothing: the guard kills the tree before it dies") {
  // An adapter that ignores SIGTERM, with a grandchild in a session of its
  // own (as a bridge's harness is). A SIGKILL to the adapter's group would
  // orphan the grandchild; the guard kills it, so once the exit is seen it
  // is gone already.
  Loop loop;
  Run r;
  Process::Callbacks cb;
  cb.on_stdout = [&](std::string_view d) {
    r.out.append(d);
    if (r.out.find("ready\n") != std::string::npos && !r.process->exited()) r.process->terminate(200ms);
  };
  cb.on_exit = [&](const ExitStatus& s) {
    r.status = s;
    loop.post([&] { r.process.reset(); });
  };
  auto p = Process::spawn(loop, shell("trap '' TERM; setsid sh -c 'trap \"\" TERM; sleep 1000' & echo $!; echo ready; "
                                      "while :; do sleep 1; done"),
                          std::move(cb));
  REQUIRE(p);
  r.process = std::move(*p);
  loop.run();
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGKILL);
  pid_t grandchild = 0;
  std::istringstream(r.out) >> grandchild;
  REQUIRE(grandchild > 0);
  CHECK_FALSE(test::process_alive(grandchild));
  if (test::process_alive(grandchild)) ::kill(-grandchild, SIGKILL);  // its session leads its group
  CHECK(loop.close());
}

TEST_CASE("destroying a running Process kills its tree and reaps it") {
  Loop loop;
  pid_t pid = 0;
  {
    Process::Callbacks cb;
    auto p = Process::spawn(loop, shell("sleep 1000"), std::move(cb));
    REQUIRE(p);
    pid = (*p)->pid();
  }
  // The exit callback closes the handle once the child is reaped.
  loop.run();
  CHECK_FALSE(test::process_alive(pid));
  CHECK(loop.close());
}

TEST_CASE("spawn errors name what is wrong") {
  Loop loop;
  Process::Callbacks cb;
  ProcessSpec missing = shell("true");
  missing.argv = {"no-such-adapter-xyz"};
  auto a = Process::spawn(loop, missing, cb);
  REQUIRE_FALSE(a);
  CHECK(a.error().message == "'no-such-adapter-xyz' was not found on PATH");

  ProcessSpec bad_cwd = shell("true");
  bad_cwd.cwd = "/no/such/dir";
  auto b = Process::spawn(loop, bad_cwd, cb);
  REQUIRE_FALSE(b);
  CHECK(b.error().message == "the working directory '/no/such/dir' does not exist");
  loop.run();
  CHECK(loop.close());
}
