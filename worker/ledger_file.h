// ledger.jsonl as the Store writes it: one descriptor shared by the writer
// lanes, one line at a time. Lines that could not be written wait here, in
// order, and go first the next time (issue 11).
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "schema/expected.h"
#include "worker/state_dir.h"
#include "worker/store_writer.h"

namespace harnessd::worker {

/// Used from the writer threads (any of them) and, for retry(), from the
/// Store's destructor; every call is serialised by its own mutex.
class LedgerFile {
 public:
  static constexpr const char* kRel = "ledger.jsonl";
  /// At most this many lines wait for space; then the oldest is dropped.
  static constexpr std::size_t kMaxPending = 100000;

  /// `root`: the state directory; the file is opened on the first write.
  LedgerFile(int root, WriteBudget& budget) : root_(root), budget_(budget) {}

  /// Given why the line could not be written, the line to keep instead.
  using Fallback = std::function<std::string(const std::string& why)>;

  /// Appends `line` after any lines still waiting. On failure the line
  /// waits too (as `fallback(why)` when given) and the error is returned.
  Expected<void> append(std::string line, bool sync, const Fallback& fallback);

  /// Writes the waiting lines, if any (the retry timer's job).
  void retry();

  /// True while lines wait for space.
  bool has_pending() const { return has_pending_.load(); }
  /// Claims the one retry that may be queued at a time: false when one is
  /// queued already. The queued job calls run_queued_retry().
  bool queue_retry() { return !retry_queued_.exchange(true); }
  void run_queued_retry() {
    retry_queued_ = false;
    retry();
  }

 private:
  // Under `mu_`.
  Expected<void> write_pending();

  int root_;
  WriteBudget& budget_;
  std::mutex mu_;
  UniqueFd fd_;
  std::deque<std::string> pending_;
  bool pending_sync_ = false;
  std::atomic<bool> has_pending_{false};
  std::atomic<bool> retry_queued_{false};
};

}  // namespace harnessd::worker
