// An adapter started ahead of need: taken over with everything it did
// meanwhile, in order, or stopped when the start that comes asks for
// another process.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

#include "acp/loop.h"
#include "adapters/prestart.h"
#include "daemon_process.h"

using namespace harnessd;
using namespace harnessd::adapters;
using namespace std::chrono_literals;

namespace {

ProcessSpec shell(const std::string& script) {
  ProcessSpec spec;
  spec.argv = {"sh", "-c", script};
  spec.cwd = "/tmp";
  spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  spec.guard_exe = test::guard_exe();
  return spec;
}

struct Seen {
  std::string out, err, order;  // order: o, e, x as the callbacks ran
  std::optional<ExitStatus> status;
};

Process::Callbacks recording(acp::Loop& loop, Seen& seen, std::unique_ptr<Process>& keep) {
  // The owner keeps the process until its end, then lets it go from a task.
  Process::Callbacks cb;
  cb.on_stdout = [&](std::string_view d) {
    seen.out.append(d);
    seen.order += 'o';
  };
  cb.on_stderr = [&](std::string_view d) {
    seen.err.append(d);
    seen.order += 'e';
  };
  cb.on_exit = [&](const ExitStatus& s) {
    seen.status = s;
    seen.order += 'x';
    loop.post([&] { keep.reset(); });
  };
  return cb;
}

// Calls `then` once the loop has run for `time`; the timer is let go of
// after, so that the loop can run dry.
void after(acp::Loop& loop, std::unique_ptr<acp::Timer>& timer, std::chrono::milliseconds time,
           std::function<void()> then) {
  timer = std::make_unique<acp::Timer>(loop);
  timer->start(time, [&loop, &timer, then = std::move(then)] {
    then();
    loop.post([&timer] { timer.reset(); });
  });
}

bool alive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// Starts `script` ahead of need, takes it over after `delay`, hands it to
// `then`, and runs the loop until it has ended.
Seen taken_after(const std::string& script, std::chrono::milliseconds delay,
                 std::function<void(Process&)> then = nullptr) {
  acp::Loop loop;
  const ProcessSpec spec = shell(script);
  Prestart prestart(loop, spec);
  Seen seen;
  std::unique_ptr<Process> process;
  std::unique_ptr<acp::Timer> timer;
  after(loop, timer, delay, [&] {
    Process::Callbacks cb = recording(loop, seen, process);
    process = prestart.take(spec, cb);
    REQUIRE(process);
    CHECK(seen.order.empty());  // replayed on the next iteration, not inside take()
    if (then) then(*process);
  });
  loop.run();
  CHECK(loop.close());
  return seen;
}

}  // namespace

TEST_CASE("an adapter started ahead of need is taken over with what it wrote meanwhile, then runs on") {
  // Its first words are written long before it is taken.
  Seen seen = taken_after("echo early; echo complaint >&2; read line; echo \"got $line\"; exit 4", 300ms,
                          [](Process& p) { p.write("hello\n"); });
  REQUIRE(seen.status);
  CHECK(seen.status->code == 4);
  CHECK(seen.out == "early\ngot hello\n");
  CHECK(seen.err == "complaint\n");
  CHECK(seen.order.back() == 'x');
}

TEST_CASE("an adapter that ended before it was taken reports its output, then its end") {
  Seen seen = taken_after("echo last words; echo why >&2; exit 3", 500ms);
  REQUIRE(seen.status);
  CHECK(seen.status->code == 3);
  CHECK(seen.out == "last words\n");
  CHECK(seen.err == "why\n");
  CHECK(seen.order.find('x') == seen.order.size() - 1);
}

TEST_CASE("an adapter that writes more than is kept before it is asked for anything is not taken over") {
  acp::Loop loop;
  // 2 MiB on stdout, then it waits.
  const ProcessSpec spec = shell("head -c 2097152 /dev/zero; exec sleep 60");
  Prestart prestart(loop, spec);
  int pid = 0;
  bool taken = true;
  std::unique_ptr<acp::Timer> timer;
  after(loop, timer, 1000ms, [&] {
    pid = prestart.pid();
    Process::Callbacks cb;
    taken = static_cast<bool>(prestart.take(spec, cb));
  });
  loop.run();  // runs dry once the stopped group is reaped
  CHECK(pid > 0);
  CHECK_FALSE(taken);
  CHECK_FALSE(alive(pid));
  CHECK(loop.close());
}

TEST_CASE("an adapter started ahead of need is stopped when the start asks for another, or when nobody takes it") {
  for (bool asked_for_another : {true, false}) {
    acp::Loop loop;
    const ProcessSpec spec = shell("exec sleep 60");
    auto prestart = std::make_unique<Prestart>(loop, spec);
    int pid = 0;
    std::unique_ptr<acp::Timer> timer;
    after(loop, timer, 200ms, [&] {
      pid = prestart->pid();
      if (asked_for_another) {
        ProcessSpec other = spec;
        other.cwd = "/";
        Process::Callbacks cb;
        CHECK_FALSE(prestart->take(other, cb));
        CHECK_FALSE(prestart->take(spec, cb));  // used up
      } else {
        prestart->discard();
      }
    });
    loop.run();  // runs dry once the stopped group is reaped
    CHECK(pid > 0);
    CHECK_FALSE(alive(pid));
    CHECK(loop.close());
  }
}
