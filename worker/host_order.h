// HostOrder: what one session sends its host goes out in the order the
// session meant it, although a turn's answer waits for its run's end to be
// on disk while the next turn already runs and streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "acp/flow_gate.h"
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
  /// `bytes`: what `fn` sends, held here meanwhile (see limit()).
  void then(acp::UniqueFunction<void()> fn, std::size_t bytes = 0) {
    if (!waiting()) {
      fn();
      return;
    }
    if (bytes == 0) {
      ready(reserve(), std::move(fn));
      return;
    }
    held_ += bytes;
    check();
    ready(reserve(), [this, bytes, fn = std::move(fn)]() mutable {
      held_ -= bytes;
      check();
      fn();
    });
  }
  /// Bytes held behind a pending answer count like the host writer's queue:
  /// over `high`, `gate` is held closed (the adapters' output is not read)
  /// until they are down to `low`.
  void limit(acp::FlowGate& gate, std::size_t high, std::size_t low) {
    hold_ = std::make_unique<acp::FlowGate::Hold>(gate);
    high_ = high;
    low_ = low;
  }
  std::size_t held_bytes() const { return held_; }

 private:
  void check() {
    if (!hold_) return;
    if (!over_ && held_ > high_) {
      over_ = true;
      hold_->set(true);
    } else if (over_ && held_ <= low_) {
      over_ = false;
      hold_->set(false);
    }
  }

  std::map<std::uint64_t, acp::UniqueFunction<void()>> waiting_;
  std::uint64_t next_ticket_ = 0;
  std::uint64_t next_send_ = 0;
  std::size_t held_ = 0;
  std::size_t high_ = 0, low_ = 0;
  bool over_ = false;
  std::unique_ptr<acp::FlowGate::Hold> hold_;
};

}  // namespace harnessd::worker
