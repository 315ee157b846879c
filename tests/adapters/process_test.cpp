// Adapter processes: spawn through the guard, exit status, draining, the
// kill ladder, and containment of the whole tree.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
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
void run(acp::Loop& loop, Run& r, const ProcessSpec& spec, std::function<void(Run&)> after_start = nullptr) {
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

// Live processes whose environment holds `marker` (NAME=value). Zombies
// have no readable environment and are not listed.
std::vector<pid_t> marked_processes(const std::string& marker) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    std::string path = "/proc/" + std::to_string(pid) + "/environ";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    if (text.find(std::string(1, '\0') + marker + '\0') != std::string::npos || text.rfind(marker + '\0', 0) == 0) {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  closedir(dir);
  return out;
}

void reap_children() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
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
    acp::Loop loop;
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
  acp::Loop loop;
  Run r;
  run(loop, r, shell("kill -SEGV $$"));
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGSEGV);
  CHECK(r.status->describe().rfind("signal 11", 0) == 0);
  CHECK(loop.close());
}

TEST_CASE("stdin is the adapter's: closing it gives EOF") {
  acp::Loop loop;
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
  acp::Loop loop;
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
  acp::Loop loop;
  Run r;
  auto start = std::chrono::steady_clock::now();
  run(loop, r, shell("sleep 100"), [](Run& run) { run.process->terminate(5s); });
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  REQUIRE(r.status);
  CHECK(r.status->signal == SIGTERM);
  CHECK(loop.close());
}

TEST_CASE("SIGTERM reaches the adapter however soon after the spawn it is sent") {
  // The guard forks the adapter a moment after it starts; a signal sent in
  // between must still reach the adapter, not only the guard. Each round
  // sends it a little later, so some land in that moment.
  for (int delay_ms = 0; delay_ms <= 12; ++delay_ms) {
    CAPTURE(delay_ms);
    acp::Loop loop;
    Run r;
    auto timer = std::make_unique<acp::Timer>(loop);
    auto start = std::chrono::steady_clock::now();
    run(loop, r, shell("sleep 100"), [&](Run& run) {
      timer->start(std::chrono::milliseconds(delay_ms), [&] { run.process->terminate(5s); });
    });
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    REQUIRE(r.status);
    CHECK(r.status->signal == SIGTERM);
    timer.reset();
    CHECK(loop.close());
  }
}

TEST_CASE("children of the adapter die with it, even ones that left its process group") {
  acp::Loop loop;
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
  acp::Loop loop;
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

TEST_CASE("an adapter gets no descriptor but its streams, every signal at its default and none blocked") {
  // harnessd ignores SIGPIPE, a thread of a host may block signals, and a
  // host may leave descriptors open across exec (a pipe of its own that it
  // waits to see closed): none of it reaches the adapter, which also leads
  // a session of its own.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction before {};
  ::sigaction(SIGPIPE, &ignore, &before);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  const int leaked = ::open("/dev/null", O_RDONLY);  // not close-on-exec
  REQUIRE(leaked > 2);
  const std::string fd = std::to_string(leaked);
  for (const std::string& guarded : {std::string(), test::guard_exe()}) {
    acp::Loop loop;
    Run r;
    run(loop, r,
        shell("[ -e /proc/$$/fd/" + fd + " ] && echo inherited " + fd +
                  "; echo sid $(cut -d' ' -f6 /proc/$$/stat) pid $$ group $(cut -d' ' -f5 /proc/$$/stat); "
                  // The shell's own mask, read once it is no shell: one that
                  // waits for a child blocks signals meanwhile.
                  "exec grep -E '^(SigBlk|SigIgn)' /proc/self/status",
              guarded));
    INFO(r.out);
    REQUIRE(r.status);
    CHECK(r.status->code == 0);
    CHECK(r.out.find("SigBlk:\t0000000000000000\n") != std::string::npos);
    // The standard signals (1-31) at their default; glibc's posix_spawn
    // leaves its two internal ones (32, 33) ignored, as for every program
    // it starts.
    const auto ign = r.out.find("SigIgn:\t");
    REQUIRE(ign != std::string::npos);
    CHECK((std::stoull(r.out.substr(ign + 8, 16), nullptr, 16) & 0x7fffffffULL) == 0);
    CHECK(r.out.find("inherited") == std::string::npos);
    std::istringstream in(r.out.substr(r.out.find("sid ")));
    std::string w1, sid, w2, self, w3, group;
    in >> w1 >> sid >> w2 >> self >> w3 >> group;
    // The leader of the adapter's session and group: the guard, or the
    // adapter itself without one.
    CHECK(sid == group);
    if (guarded.empty()) CHECK(sid == self);
    CHECK(loop.close());
  }
  ::close(leaked);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &before, nullptr);
}

TEST_CASE("a parent whose standard streams are closed still gives the adapter working ones") {
  // The pairs harnessd makes for the adapter's streams then get fds 0-2;
  // each must still end up as the stream it is meant for.
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 1;
    {
      // The loop's own descriptors first (libuv refuses to close one below
      // 3), the one it keeps in reserve for its streams included.
      acp::Loop loop;
      uv_pipe_t first_stream;
      uv_pipe_init(loop.get(), &first_stream, 0);
      uv_close(reinterpret_cast<uv_handle_t*>(&first_stream), nullptr);
      ::close(0);
      ::close(1);
      ::close(2);
      std::string out, err;
      std::optional<ExitStatus> status;
      std::unique_ptr<Process> process;
      Process::Callbacks cb;
      cb.on_stdout = [&](std::string_view d) { out.append(d); };
      cb.on_stderr = [&](std::string_view d) { err.append(d); };
      cb.on_exit = [&](const ExitStatus& s) {
        status = s;
        loop.post([&] { process.reset(); });
      };
      auto p = Process::spawn(loop, shell("read line; echo \"out:$line\"; echo err >&2"), std::move(cb));
      if (p) {
        process = std::move(*p);
        process->write("hello\n");
        loop.run();
        if (status && status->code == 0 && out == "out:hello\n" && err == "err\n") code = 0;
      }
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("destroying a running Process kills its tree and reaps it") {
  acp::Loop loop;
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
  acp::Loop loop;
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

TEST_CASE("a launch execs off the loop: finish hands over the process, or why its exec failed") {
  acp::Loop loop;
  std::atomic<int> launched{0};
  auto started = Process::launch(shell("read line; echo \"got:$line\""), [&] { ++launched; });
  REQUIRE(started);
  Run r;
  Process::Callbacks cb;
  cb.on_stdout = [&](std::string_view d) { r.out.append(d); };
  cb.on_exit = [&](const ExitStatus& s) {
    r.status = s;
    loop.post([&] { r.process.reset(); });
  };
  auto p = Process::finish(loop, std::move(*started), std::move(cb));
  REQUIRE(p);
  CHECK(launched == 1);  // finish waited for the exec's thread
  r.process = std::move(*p);
  CHECK(r.process->pid() > 0);
  r.process->write("hello\n");
  loop.run();
  CHECK(r.out == "got:hello\n");
  REQUIRE(r.status);
  CHECK(r.status->code == 0);

  // The command is checked at once; an exec that fails is told by finish.
  ProcessSpec missing = shell("true");
  missing.argv = {"no-such-adapter-xyz"};
  auto a = Process::launch(missing, nullptr);
  REQUIRE_FALSE(a);
  CHECK(a.error().message == "'no-such-adapter-xyz' was not found on PATH");
  auto b = Process::launch(shell("true", "/tmp"), nullptr);  // a directory as the guard
  REQUIRE(b);
  auto c = Process::finish(loop, std::move(*b), {});
  REQUIRE_FALSE(c);
  CHECK(c.error().message == "cannot start 'sh': Permission denied");
  loop.run();
  CHECK(loop.close());
}

TEST_CASE("an adapter the kernel cannot run: the guard says why and exits 127") {
  // Executable, so the spawn's own check passes; not a program, so the
  // guard's exec fails (ENOEXEC), in the adapter's process between vfork
  // and exec.
  char path[] = "/tmp/harnessd-not-a-program-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "\x7f\x01not a program\n", 16) == 16);
  ::fchmod(fd, 0755);
  ::close(fd);
  for (const std::string& guarded : {test::guard_exe(), test::harnessd_exe()}) {
    acp::Loop loop;
    Run r;
    ProcessSpec spec = shell("true", guarded);
    spec.argv = {path};
    run(loop, r, spec);
    REQUIRE(r.status);
    CHECK(r.status->code == 127);
    CHECK(r.err == std::string("harnessd guard: cannot run ") + path + ": Exec format error\n");
    CHECK(loop.close());
  }
  ::unlink(path);
}

TEST_CASE("stress: SIGKILL of the guard's parent leaves no setsid'd grandchild, 200 rounds") {
  // Each round plays harnessd's death in miniature: a shell stands in for
  // harnessd and is the guard's parent; the adapter starts setsid'd,
  // double-forked grandchildren (orphans that the guard adopts), some of
  // which exit with children of their own, one forks 40 more, and one forks
  // without end, so children exit and appear while the guard cleans up. The shell is killed with SIGKILL; once the guard has
  // finished, no process of the round may remain. Every process carries a
  // marker in its environment so the check does not depend on the pids the
  // adapter could report.
  const std::string adapter =
      "for i in 1 2 3; do (setsid sleep 1000 </dev/null >/dev/null 2>&1 &); done; "
      "for i in 1 2 3 4 5 6; do (setsid sh -c 'sleep 1000 & sleep 0.00'$i'; exit 0' </dev/null >/dev/null 2>&1 &); "
      "done; "
      "(setsid sh -c 'i=0; while [ $i -lt 40 ]; do (setsid sleep 1000 &); i=$((i+1)); done; sleep 1000' "
      "</dev/null >/dev/null 2>&1 &); "
      "(setsid sh -c 'while :; do (setsid sh -c \"sleep 1000 & exit 0\" &); done' </dev/null >/dev/null 2>&1 &); "
      "echo ready; exec sleep 1000";
  const std::string guard = test::guard_exe();
  const std::string parent = "\"$0\" __guard $$ -- /bin/sh -c \"$1\" & wait";
  int failures = 0;
  for (int round = 0; round < 200; ++round) {
    const std::string marker = "HARNESSD_STRESS_MARK=" + std::to_string(getpid()) + "-" + std::to_string(round);
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    std::vector<std::string> args = {"/bin/sh", "-c", parent, guard, adapter};
    std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", marker};
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t shell = 0;
    int rc = posix_spawn(&shell, "/bin/sh", &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    REQUIRE(rc == 0);
    std::string seen;
    char buf[64];
    ssize_t n;
    while (seen.find("ready\n") == std::string::npos && (n = ::read(out[0], buf, sizeof buf)) > 0) seen.append(buf, n);
    ::close(out[0]);
    REQUIRE(seen == "ready\n");

    ::kill(shell, SIGKILL);  // harnessd's kill -9: the guard gets its parent-death signal
    ::waitpid(shell, nullptr, 0);
    // The guard is reparented to us (the test is a child subreaper) and
    // exits once it has cleaned up; so do the orphans it missed.
    bool clean = test::eventually(
        [&] {
          reap_children();
          return marked_processes(marker).empty();
        },
        5s);
    if (!clean) {
      ++failures;
      auto left = marked_processes(marker);
      UNSCOPED_INFO("round " << round << ": " << left.size() << " processes survived the guard");
      for (pid_t p : left) ::kill(p, SIGKILL);
      test::eventually(
          [&] {
            reap_children();
            return marked_processes(marker).empty();
          },
          5s);
    }
  }
  CHECK(failures == 0);
}
