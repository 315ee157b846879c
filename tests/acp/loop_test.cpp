// The loop's own services: work posted from other threads, repeating
// timers, and timers that do not keep the loop running.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "acp/loop.h"

using namespace harnessd;
using namespace std::chrono_literals;

TEST_CASE("loop: work posted from other threads runs on the loop thread, in each thread's order") {
  acp::Loop loop;
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::vector<int>> seen(kThreads);
  std::atomic<int> wrong_thread{0};
  int ran = 0;
  const auto loop_thread = std::this_thread::get_id();
  // An active timer keeps the loop running until everything has arrived.
  auto guard = std::make_unique<acp::Timer>(loop);
  guard->start(10s, [&] { loop.stop(); });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        loop.post_from_any_thread([&, t, i] {
          if (std::this_thread::get_id() != loop_thread) ++wrong_thread;
          seen[t].push_back(i);
          if (++ran == kThreads * kEach) loop.stop();
        });
      }
    });
  }
  loop.run();
  for (auto& th : threads) th.join();
  CHECK(ran == kThreads * kEach);
  CHECK(wrong_thread == 0);
  for (const auto& s : seen) {
    REQUIRE(s.size() == kEach);
    for (int i = 0; i < kEach; ++i) CHECK(s[i] == i);
  }
  guard.reset();
  CHECK(loop.close());
}

TEST_CASE("loop: work waiting from another thread does not keep the loop running, and is dropped once it is closed") {
  acp::Loop loop;
  bool ran = false;
  loop.post_from_any_thread([&] { ran = true; });
  REQUIRE(loop.close());
  CHECK_FALSE(ran);
  std::thread late([&] { loop.post_from_any_thread([&] { ran = true; }); });
  late.join();
  CHECK_FALSE(ran);
}

TEST_CASE("loop: a repeating timer fires every period, and an unref'd one does not hold the loop") {
  acp::Loop loop;
  int ticks = 0;
  auto every = std::make_unique<acp::Timer>(loop);
  every->start_every(5ms, [&] {
    if (++ticks == 3) every->stop();
  });
  loop.run();  // returns once the timer stops: nothing else is active
  CHECK(ticks == 3);

  auto idle = std::make_unique<acp::Timer>(loop);
  int idle_ticks = 0;
  idle->start_every(1ms, [&] { ++idle_ticks; });
  idle->unref();
  loop.run();  // nothing holds the loop: returns at once, before its first tick
  CHECK(idle_ticks == 0);
  every.reset();
  idle.reset();
  CHECK(loop.close());
}
