// The hand-over between the loop and one writer thread. Jobs are queued
// from any thread; the writer takes everything queued as one batch. A push
// wakes the writer only when it waits, and push_all() lets the loop hand
// over all the jobs of one iteration with one lock and one wake-up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <pthread.h>

namespace harnessd::worker {

/// Names the calling thread as `ps -L`, `top -H` and /proc show it (at
/// most 15 characters); the loop keeps the process's name.
inline void name_this_thread(const char* name) { pthread_setname_np(pthread_self(), name); }

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
    // A writer holding its batch for company takes this job at the end of
    // its wait, unless the job cannot wait.
    if (idle_ && wakes_ && jobs_.size() < wake_at_ && !wakes_(jobs_.back())) return false;
    bool claimed = idle_;
    idle_ = false;
    return claimed;
  }
  /// Queues every job of `jobs` (left empty, its room kept for reuse) under
  /// one lock; true when one of them claimed the wake-up (as push_deferred()
  /// says for one job).
  bool push_all(std::vector<Job>& jobs) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t from = jobs_.size();
    if (jobs_.empty()) {
      jobs_.swap(jobs);
    } else {
      for (Job& job : jobs) jobs_.push_back(std::move(job));
    }
    jobs.clear();
    bool claimed = false;
    for (std::size_t i = from; i < jobs_.size() && idle_; ++i) {
      if (wakes_ && i + 1 < wake_at_ && !wakes_(jobs_[i])) continue;
      claimed = true;
      idle_ = false;
    }
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
  bool take(std::vector<Job>& batch, std::optional<std::chrono::milliseconds> retry = std::nullopt) {
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

  /// Writer thread: waits the whole of `wait` unless stopped, or woken by
  /// a push of a job for which `wakes(job)` is true (called on the pushing
  /// thread under the queue's lock, so it may read what the writer set up
  /// before the wait) or that makes `wake_at` jobs queued; then appends
  /// what is queued to `batch`. A writer that holds a batch for company
  /// takes everything that came at the end of the hold: pushes that cannot
  /// change when it ends do not wake it one by one. False when nothing came.
  template <class Wakes>
  bool hold(std::vector<Job>& batch, std::chrono::microseconds wait, Wakes&& wakes, std::size_t wake_at) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!stopping_) {
      idle_ = true;
      wakes_ = std::forward<Wakes>(wakes);
      wake_at_ = wake_at;
      for (const Job& job : jobs_) {
        if (jobs_.size() >= wake_at_ || wakes_(job)) idle_ = false;
      }
      cv_.wait_for(lock, wait, [&] { return stopping_ || !idle_; });
      wakes_ = nullptr;
    }
    return take_queued(batch);
  }

 private:
  bool take_queued(std::vector<Job>& batch) {
    idle_ = false;
    if (jobs_.empty()) return false;
    for (Job& job : jobs_) batch.push_back(std::move(job));
    jobs_.clear();
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job> jobs_;
  bool stopping_ = false;
  bool idle_ = false;  // the writer waits: the next push wakes it
  /// Set during hold(): which pushes wake the writer.
  std::function<bool(const Job&)> wakes_;
  std::size_t wake_at_ = 0;
};

}  // namespace harnessd::worker
