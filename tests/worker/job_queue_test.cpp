// The hand-over to a writer thread: a writer that holds its batch for
// company is woken only by a job that ends the hold, and takes the rest at
// the end of its wait.
#include <catch2/catch.hpp>

#include <chrono>
#include <vector>
#include <future>
#include <thread>

#include "worker/job_queue.h"

using namespace harnessd::worker;
using namespace std::chrono_literals;

TEST_CASE("a writer holding its batch is woken by the job that ends the hold, not by each job before it") {
  JobQueue<int> queue;
  std::vector<int> batch{0};
  std::promise<void> waiting;
  // Negative jobs end the hold. A wait of a minute that is not cut short
  // shows as a test that takes a minute, and fails below.
  auto writer = std::async(std::launch::async, [&] {
    const auto start = std::chrono::steady_clock::now();
    waiting.set_value();
    bool more = queue.hold(batch, 60s, [](int job) { return job < 0; }, 100);
    return std::make_pair(more, std::chrono::steady_clock::now() - start);
  });
  waiting.get_future().wait();
  // The writer may not wait yet; a job pushed before it does is looked at
  // when the hold starts, so either way only the last job wakes it.
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(queue.push_deferred(1));
  CHECK_FALSE(queue.push_deferred(2));
  (void)queue.push_deferred(-1);
  queue.wake();
  auto [more, took] = writer.get();
  CHECK(more);
  CHECK(took < 30s);
  CHECK(batch == std::vector<int>{0, 1, 2, -1});
}

TEST_CASE("a held writer is woken once the jobs queued reach the batch's room, and by stop") {
  JobQueue<int> queue;
  std::vector<int> batch;
  auto writer = std::async(std::launch::async, [&] { return queue.hold(batch, 60s, [](int) { return false; }, 3); });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(queue.push_deferred(1));
  CHECK_FALSE(queue.push_deferred(2));
  queue.push(3);  // the third fills the room
  CHECK(writer.get());
  CHECK(batch == std::vector<int>{1, 2, 3});

  batch.clear();
  auto stopped = std::async(std::launch::async, [&] { return queue.hold(batch, 60s, [](int) { return false; }, 3); });
  std::this_thread::sleep_for(50ms);
  queue.stop();
  CHECK_FALSE(stopped.get());
  CHECK(batch.empty());
}

TEST_CASE("jobs already queued when a hold starts are weighed like pushed ones") {
  JobQueue<int> queue;
  queue.push(5);
  queue.push(-5);
  std::vector<int> batch;
  const auto start = std::chrono::steady_clock::now();
  CHECK(queue.hold(batch, 60s, [](int job) { return job < 0; }, 100));
  CHECK(std::chrono::steady_clock::now() - start < 30s);
  CHECK(batch == std::vector<int>{5, -5});
}

TEST_CASE("jobs handed over together keep their order, claim one wake-up, and wake a held writer only for a job that ends the hold") {
  JobQueue<int> queue;
  std::vector<int> batch;
  auto taker = std::async(std::launch::async, [&] { return queue.take(batch); });
  std::this_thread::sleep_for(50ms);
  std::vector<int> jobs{1, 2, 3};
  // The writer waits (unless it is late: then it finds the jobs queued),
  // and this claims its wake-up; the next hand-over cannot claim another.
  const bool claimed = queue.push_all(jobs);
  CHECK(jobs.empty());
  jobs = {4};
  CHECK_FALSE(queue.push_all(jobs));
  if (claimed) queue.wake();
  CHECK(taker.get());
  // Taken in one go or two, in order.
  if (batch.size() < 4) {
    std::vector<int> rest;
    CHECK(queue.take(rest));
    batch.insert(batch.end(), rest.begin(), rest.end());
  }
  CHECK(batch == std::vector<int>{1, 2, 3, 4});

  batch.clear();
  auto holder = std::async(std::launch::async, [&] {
    const auto start = std::chrono::steady_clock::now();
    bool more = queue.hold(batch, 60s, [](int job) { return job < 0; }, 100);
    return std::make_pair(more, std::chrono::steady_clock::now() - start);
  });
  std::this_thread::sleep_for(50ms);
  jobs = {5, 6};
  CHECK_FALSE(queue.push_all(jobs));
  jobs = {7, -1, 8};
  (void)queue.push_all(jobs);  // -1 ends the hold (or keeps a late writer from holding)
  queue.wake();
  auto [more, took] = holder.get();
  CHECK(more);
  CHECK(took < 30s);
  CHECK(batch == std::vector<int>{5, 6, 7, -1, 8});
}
