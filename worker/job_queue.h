// The hand-over between the loop and one writer thread. Jobs are queued
// from any thread; the writer takes everything queued as one batch. A push
// wakes the writer only when it waits, and push_deferred() lets the loop
// wake it once for all the jobs of one iteration.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

namespace harnessd::worker {

template <class Job>
class JobQueue {
 public:
  /// Queues `job` and wakes the writer if it waits.
  void push(Job job) {
    if (push_deferred(std::move(job))) wake();
  }
  /// Queues `job` without waking the writer: true when the caller must
  /// call wake() later (the writer waits, and this push claimed the
  /// wake-up, so the pushes after it return false).
  bool push_deferred(Job job) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    bool claimed = idle_;
    idle_ = false;
    return claimed;
  }
  void wake() { cv_.notify_one(); }
  /// The writer takes what is left, then take() says it is done.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
  }

  /// Writer thread: waits until jobs are queued (or `retry` has passed:
  /// then `batch` may be empty) and moves them all into `batch`. False
  /// once stop() was called and nothing is queued.
  bool take(std::deque<Job>& batch, std::optional<std::chrono::milliseconds> retry = std::nullopt) {
    std::unique_lock<std::mutex> lock(mu_);
    if (jobs_.empty() && !stopping_) {
      idle_ = true;
      auto ready = [&] { return stopping_ || !jobs_.empty(); };
      if (retry) {
        cv_.wait_for(lock, *retry, ready);
      } else {
        cv_.wait(lock, ready);
      }
    }
    idle_ = false;
    if (jobs_.empty() && stopping_) return false;
    batch.swap(jobs_);
    return true;
  }

  /// Writer thread: waits up to `wait` for more jobs (a push wakes it) and
  /// appends what is queued to `batch`. False when nothing came.
  bool take_more(std::deque<Job>& batch, std::chrono::microseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    if (jobs_.empty() && !stopping_) {
      idle_ = true;
      cv_.wait_for(lock, wait, [&] { return stopping_ || !jobs_.empty(); });
    }
    idle_ = false;
    if (jobs_.empty()) return false;
    for (Job& job : jobs_) batch.push_back(std::move(job));
    jobs_.clear();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  bool idle_ = false;  // the writer waits: the next push wakes it
};

}  // namespace harnessd::worker
