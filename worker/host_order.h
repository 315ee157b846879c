// HostOrder: what one session sends its host goes out in the order the
// session meant it, although a turn's answer waits for its run's end to be
// on disk while the next turn already runs and streams.
#pragma once

#include <cstdint>
#include <map>

#include "acp/unique_function.h"

namespace harnessd::worker {

/// Loop thread only. Answers take a ticket when their turn ends and are
/// sent once ready and once everything before them is sent; anything else
/// the session sends meanwhile (the next turn's updates, its requests of the
/// client) waits behind them. Shared with the store's callbacks, so that
/// answers still go out after their session is gone.
class HostOrder {
 public:
  /// A place in the order, for an answer not ready yet.
  std::uint64_t reserve() { return next_ticket_++; }
  /// `send` runs once every earlier place has been sent (maybe at once).
  void ready(std::uint64_t ticket, acp::UniqueFunction<void()> send) {
    waiting_.emplace(ticket, std::move(send));
    // Taken out before it runs: sending may lead to more.
    for (auto it = waiting_.find(next_send_); it != waiting_.end(); it = waiting_.find(next_send_)) {
      acp::UniqueFunction<void()> fn = std::move(it->second);
      waiting_.erase(it);
      ++next_send_;
      if (fn) fn();
    }
  }
  /// True while an answer waits: what is sent now must go behind it.
  bool waiting() const { return next_send_ != next_ticket_; }
  /// Runs `fn` after everything reserved so far (at once when nothing waits).
  void then(acp::UniqueFunction<void()> fn) {
    if (!waiting()) {
      fn();
      return;
    }
    ready(reserve(), std::move(fn));
  }

 private:
  std::map<std::uint64_t, acp::UniqueFunction<void()>> waiting_;
  std::uint64_t next_ticket_ = 0;
  std::uint64_t next_send_ = 0;
};

}  // namespace harnessd::worker
