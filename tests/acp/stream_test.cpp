// The loop owner and fd streams: pipes, regular files, posting, timers.
// Every test ends by checking that the loop closed with no handle left.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "acp/loop.h"
#include "acp/stream.h"
#include "daemon_process.h"

using namespace harnessd;

TEST_CASE("posted work runs in order on the next iteration") {
  acp::Loop loop;
  std::string order;
  loop.post([&] {
    order += "a";
    loop.post([&] { order += "c"; });
  });
  loop.post([&] { order += "b"; });
  CHECK(order.empty());
  loop.run();
  CHECK(order == "abc");
  CHECK(loop.close());
}

TEST_CASE("a timer fires once and can be destroyed from its callback") {
  acp::Loop loop;
  int fired = 0;
  auto timer = std::make_unique<acp::Timer>(loop);
  timer->start(std::chrono::milliseconds(5), [&] {
    ++fired;
    timer.reset();
  });
  loop.run();
  CHECK(fired == 1);
  CHECK(loop.close());
}

TEST_CASE("a pipe reader delivers everything, then EOF") {
  acp::Loop loop;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::string payload(300000, 'z');
  std::string got;
  int end_status = 1;
  {
    auto reader = acp::open_fd_reader(loop, fds[0]);
    REQUIRE(reader);
    auto writer = acp::open_fd_writer(loop, fds[1]);
    REQUIRE(writer);
    std::unique_ptr<acp::Reader> r = std::move(*reader);
    std::unique_ptr<acp::Writer> w = std::move(*writer);
    r->start([&](std::string_view d) { got.append(d); },
             [&](int status) {
               end_status = status;
               loop.post([&] { r.reset(); });
             });
    w->write(payload);
    w->flush([&] { loop.post([&] { w.reset(); }); });  // closing the write end gives EOF
    loop.run();
  }
  CHECK(got == payload);
  CHECK(end_status == 0);
  CHECK(loop.close());
}

TEST_CASE("a regular file works as input (harnessd < session.jsonl)") {
  harnessd::test::TempDir dir;
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "{\"line\":" + std::to_string(i) + "}\n";
  std::string path = dir.write("in.jsonl", content);
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  acp::Loop loop;
  std::string got;
  bool ended = false;
  {
    auto reader = acp::open_fd_reader(loop, fd);
    REQUIRE(reader);
    std::unique_ptr<acp::Reader> r = std::move(*reader);
    r->start([&](std::string_view d) { got.append(d); },
             [&](int status) {
               ended = status == 0;
               loop.post([&] { r.reset(); });
             });
    loop.run();
  }
  ::close(fd);
  CHECK(ended);
  CHECK(got == content);
  CHECK(loop.close());
}

TEST_CASE("a regular file works as output") {
  harnessd::test::TempDir dir;
  std::string path = dir.path() + "/out.jsonl";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(fd >= 0);
  acp::Loop loop;
  {
    auto writer = acp::open_fd_writer(loop, fd);
    REQUIRE(writer);
    (*writer)->write("one\n");
    (*writer)->write("two\n");
  }
  ::close(fd);
  CHECK(harnessd::test::read_file(path) == "one\ntwo\n");
  CHECK(loop.close());
}

TEST_CASE("a write to a pipe nobody reads reports EPIPE once") {
  signal(SIGPIPE, SIG_IGN);
  acp::Loop loop;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  ::close(fds[0]);
  int errors = 0;
  {
    auto writer = acp::open_fd_writer(loop, fds[1]);
    REQUIRE(writer);
    (*writer)->on_error([&](int) { ++errors; });
    (*writer)->write("a\n");
    (*writer)->write("b\n");
    loop.run();
  }
  CHECK(errors == 1);
  CHECK(loop.close());
}

TEST_CASE("a pipe writer reports its high-water mark, then its low one, and keeps every line in order") {
  acp::Loop loop;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::string expected;
  std::string got;
  std::vector<bool> transitions;
  std::size_t queued_at_high = 0;
  {
    auto reader = acp::open_fd_reader(loop, fds[0]);
    REQUIRE(reader);
    auto writer = acp::open_fd_writer(loop, fds[1]);
    REQUIRE(writer);
    std::unique_ptr<acp::Reader> r = std::move(*reader);
    std::unique_ptr<acp::Writer> w = std::move(*writer);
    w->set_watermarks(256 * 1024, 64 * 1024, [&](bool over) {
      transitions.push_back(over);
      if (over) queued_at_high = w->queued_bytes();
    });
    // Nobody reads yet: past the pipe's own buffer, lines queue in the writer.
    for (int i = 0; i < 20000; ++i) {
      std::string line = "line " + std::to_string(i) + " " + std::string(40, 'x') + "\n";
      expected += line;
      w->write(line);
    }
    CHECK(w->queued_bytes() > 256 * 1024);
    r->start([&](std::string_view d) { got.append(d); },
             [&](int) { loop.post([&] { r.reset(); }); });
    w->flush([&] { loop.post([&] { w.reset(); }); });
    loop.run();
  }
  CHECK(got == expected);
  REQUIRE(transitions.size() == 2);
  CHECK(transitions[0]);
  CHECK_FALSE(transitions[1]);
  CHECK(queued_at_high > 256 * 1024);
  CHECK(loop.close());
}

TEST_CASE("work posted from a read callback runs in the same iteration, before the loop polls again") {
  acp::Loop loop;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  REQUIRE(::write(fds[1], "x\n", 2) == 2);
  int posted_ran = 0;
  std::string got;
  {
    auto reader = acp::open_fd_reader(loop, fds[0]);
    REQUIRE(reader);
    std::unique_ptr<acp::Reader> r = std::move(*reader);
    r->start(
        [&](std::string_view d) {
          got.append(d);
          loop.post([&] {
            ++posted_ran;
            // Work it posts in turn still runs in this iteration (a few
            // rounds are allowed before the next poll).
            loop.post([&] { ++posted_ran; });
          });
        },
        [](int) {});
    loop.run_once_nowait();
    CHECK(got == "x\n");
    CHECK(posted_ran == 2);
  }
  ::close(fds[1]);
  loop.run();
  CHECK(loop.close());
}

TEST_CASE("lines the pipe takes at once are out, and a flush answered, within one iteration of the loop") {
  acp::Loop loop;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  bool flushed = false;
  {
    auto writer = acp::open_fd_writer(loop, fds[1]);
    REQUIRE(writer);
    (*writer)->write("one\n");
    (*writer)->write("two\n");
    (*writer)->flush([&] { flushed = true; });
    CHECK_FALSE(flushed);
    loop.run_once_nowait();
    CHECK(flushed);
    CHECK((*writer)->queued_bytes() == 0);
  }
  char buf[16] = {};
  CHECK(::read(fds[0], buf, sizeof buf) == 8);
  CHECK(std::string(buf, 8) == "one\ntwo\n");
  ::close(fds[0]);
  CHECK(loop.close());
}
