// The scheduler in synchronous mode: FIFO per session, the depth and
// concurrency limits, lanes without starvation, removal and dropping.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "queue/scheduler.h"

using namespace harnessd::queue;

namespace {
// Starts everything that can start; returns "session:item" in start order.
std::vector<std::string> drain(Scheduler<std::string>& s) {
  std::vector<std::string> started;
  while (auto n = s.next()) started.push_back(n->session + ":" + n->item);
  return started;
}
}  // namespace

TEST_CASE("one turn per session, FIFO within the session") {
  Scheduler<std::string> s;
  s.enqueue("a", Lane::kInteractive, "1");
  s.enqueue("a", Lane::kInteractive, "2");
  s.enqueue("a", Lane::kInteractive, "3");
  CHECK(drain(s) == std::vector<std::string>{"a:1"});
  CHECK(s.active("a"));
  CHECK(s.queued("a") == 2);
  s.finished("a");
  CHECK(drain(s) == std::vector<std::string>{"a:2"});
  s.finished("a");
  CHECK(drain(s) == std::vector<std::string>{"a:3"});
  s.finished("a");
  CHECK(drain(s).empty());
  CHECK(s.running() == 0);
  CHECK_FALSE(s.active("a"));
}

TEST_CASE("sessions run in parallel up to max_concurrent_runs, in arrival order") {
  Scheduler<std::string> s({2, 16, {4, 2, 1}});
  for (const char* k : {"a", "b", "c", "d"}) s.enqueue(k, Lane::kInteractive, "x");
  CHECK(drain(s) == std::vector<std::string>{"a:x", "b:x"});
  CHECK(s.running() == 2);
  s.finished("b");
  CHECK(drain(s) == std::vector<std::string>{"c:x"});
  s.finished("a");
  s.finished("c");
  CHECK(drain(s) == std::vector<std::string>{"d:x"});
}

TEST_CASE("the queue depth limit counts waiting prompts, not the running one") {
  Scheduler<int> s({8, 2, {4, 2, 1}});
  s.enqueue("a", Lane::kInteractive, 1);
  REQUIRE(s.next());  // 1 runs
  CHECK(s.can_enqueue("a"));
  s.enqueue("a", Lane::kInteractive, 2);
  CHECK(s.can_enqueue("a"));
  s.enqueue("a", Lane::kInteractive, 3);
  CHECK_FALSE(s.can_enqueue("a"));
  CHECK(s.can_enqueue("b"));
  s.finished("a");
  REQUIRE(s.next());
  CHECK(s.can_enqueue("a"));
}

TEST_CASE("higher lanes go first, but no lane starves") {
  Scheduler<std::string> s({1, 100, {4, 2, 1}});
  // Plenty of work in every lane, each item in its own session.
  for (int i = 0; i < 20; ++i) {
    s.enqueue("i" + std::to_string(i), Lane::kInteractive, "I");
    s.enqueue("s" + std::to_string(i), Lane::kScheduled, "S");
    s.enqueue("b" + std::to_string(i), Lane::kBackground, "B");
  }
  std::string order;
  for (int i = 0; i < 14; ++i) {
    auto n = s.next();
    REQUIRE(n);
    order += n->item;
    s.finished(n->session);
  }
  CHECK(order.front() == 'I');
  // Within every 7 starts: 4 interactive, 2 scheduled, 1 background.
  for (int w = 0; w < 2; ++w) {
    std::string window = order.substr(w * 7, 7);
    CHECK(std::count(window.begin(), window.end(), 'I') == 4);
    CHECK(std::count(window.begin(), window.end(), 'S') == 2);
    CHECK(std::count(window.begin(), window.end(), 'B') == 1);
  }
}

TEST_CASE("a lane alone gets every slot, and an idle lane hoards no credit") {
  Scheduler<std::string> s({1, 100, {4, 2, 1}});
  for (int i = 0; i < 5; ++i) s.enqueue("b" + std::to_string(i), Lane::kBackground, "B");
  std::string order;
  for (int i = 0; i < 5; ++i) {
    auto n = s.next();
    REQUIRE(n);
    order += n->item;
    s.finished(n->session);
  }
  CHECK(order == "BBBBB");
  // Interactive work arriving now goes first.
  s.enqueue("b9", Lane::kBackground, "B");
  s.enqueue("i9", Lane::kInteractive, "I");
  auto n = s.next();
  REQUIRE(n);
  CHECK(n->item == "I");
}

TEST_CASE("a session's lane is the lane of its oldest waiting prompt") {
  Scheduler<std::string> s({1, 100, {4, 2, 1}});
  s.enqueue("bg", Lane::kBackground, "first");
  s.enqueue("bg", Lane::kInteractive, "second");
  s.enqueue("fg", Lane::kInteractive, "x");
  auto n = s.next();
  REQUIRE(n);
  CHECK(n->session == "fg");  // bg's head is a background prompt
}

TEST_CASE("remove_if takes a queued prompt out, wherever it is") {
  Scheduler<std::string> s({1, 16, {4, 2, 1}});
  s.enqueue("a", Lane::kInteractive, "a1");
  s.enqueue("a", Lane::kInteractive, "a2");
  s.enqueue("b", Lane::kInteractive, "b1");
  REQUIRE(s.next()->item == "a1");
  auto gone = s.remove_if([](const std::string& v) { return v == "b1"; });
  REQUIRE(gone);
  CHECK(gone->first == "b");
  CHECK_FALSE(s.remove_if([](const std::string& v) { return v == "a1"; }));  // running, not queued
  s.finished("a");
  CHECK(drain(s) == std::vector<std::string>{"a:a2"});
  CHECK(s.total_queued() == 0);
}

TEST_CASE("drop returns the queued prompts in order and frees the slot") {
  Scheduler<std::unique_ptr<int>> s({1, 16, {4, 2, 1}});  // move-only items work
  s.enqueue("a", Lane::kInteractive, std::make_unique<int>(1));
  s.enqueue("a", Lane::kInteractive, std::make_unique<int>(2));
  s.enqueue("a", Lane::kInteractive, std::make_unique<int>(3));
  s.enqueue("b", Lane::kInteractive, std::make_unique<int>(9));
  REQUIRE(*s.next()->item == 1);
  CHECK_FALSE(s.next());  // the one slot is taken
  auto dropped = s.drop("a");
  REQUIRE(dropped.size() == 2);
  CHECK(*dropped[0] == 2);
  CHECK(*dropped[1] == 3);
  CHECK(s.running() == 0);
  s.finished("a");  // a late report from the dropped session is ignored
  CHECK(s.running() == 0);
  auto n = s.next();
  REQUIRE(n);
  CHECK(*n->item == 9);
}

TEST_CASE("many sessions: every prompt starts exactly once, in order per session") {
  Scheduler<int> s({32, 16, {4, 2, 1}});
  std::map<std::string, std::vector<int>> seen;
  for (int round = 0; round < 10; ++round) {
    for (int k = 0; k < 1000; ++k) s.enqueue("s" + std::to_string(k), static_cast<Lane>(k % 3), round);
  }
  std::size_t starts = 0;
  std::vector<std::string> running;
  while (starts < 10000) {
    while (auto n = s.next()) {
      seen[n->session].push_back(n->item);
      running.push_back(n->session);
      ++starts;
    }
    REQUIRE(running.size() <= 32);
    REQUIRE_FALSE(running.empty());
    for (const auto& k : running) s.finished(k);
    running.clear();
  }
  CHECK(s.total_queued() == 0);
  for (const auto& [k, items] : seen) {
    REQUIRE(items.size() == 10);
    for (int i = 0; i < 10; ++i) CHECK(items[i] == i);
  }
}

TEST_CASE("a group's limit makes its sessions wait their turn while other sessions run") {
  Scheduler<std::string> s(SchedulerOptions{8, 16, {4, 2, 1}});
  // Two sessions of harness "h" (limit 1) and one of "other" (no limit).
  s.enqueue("a", Lane::kInteractive, "1", "h", 1);
  s.enqueue("b", Lane::kInteractive, "1", "h", 1);
  s.enqueue("c", Lane::kInteractive, "1", "other", 0);
  CHECK(drain(s) == std::vector<std::string>{"a:1", "c:1"});
  CHECK(s.running("h") == 1);
  CHECK(s.queued("b") == 1);  // waiting, not refused
  s.finished("c");
  CHECK(drain(s).empty());
  s.finished("a");
  CHECK(drain(s) == std::vector<std::string>{"b:1"});
  // Dropping a running session frees its group's place.
  s.enqueue("a", Lane::kInteractive, "2", "h", 1);
  CHECK(drain(s).empty());
  s.drop("b");
  CHECK(s.running("h") == 0);
  CHECK(drain(s) == std::vector<std::string>{"a:2"});
}

TEST_CASE("a lane whose sessions all wait for their group does not hold up another lane") {
  Scheduler<std::string> s(SchedulerOptions{8, 16, {4, 2, 1}});
  s.enqueue("a", Lane::kInteractive, "1", "h", 1);
  CHECK(drain(s) == std::vector<std::string>{"a:1"});
  s.enqueue("b", Lane::kInteractive, "1", "h", 1);
  s.enqueue("c", Lane::kBackground, "1");
  CHECK(drain(s) == std::vector<std::string>{"c:1"});
}
