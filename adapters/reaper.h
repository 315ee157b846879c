// Reaper: keeps adapters that are being stopped until their process trees
// have exited, so nothing is left behind and nothing becomes a zombie.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "acp/loop.h"
#include "adapters/adapter_link.h"

namespace harnessd::adapters {

class Reaper {
 public:
  explicit Reaper(acp::Loop& loop) : loop_(loop) {}
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  /// Takes `link`, fails its pending calls, drops its handlers, and stops it
  /// with the kill ladder (stdin closed, SIGTERM, SIGKILL after kill_grace).
  /// With `eof_grace` > 0 the ladder starts gently: stdin is closed first
  /// and the adapter has that long to read what was already written to it
  /// (an answer, a session/cancel) and exit on its own before SIGTERM.
  void adopt(std::unique_ptr<AdapterLink> link, std::chrono::milliseconds kill_grace,
             std::chrono::milliseconds eof_grace = std::chrono::milliseconds(0));
  /// Number of adapters not yet exited.
  std::size_t size() const { return links_.size(); }
  /// Calls `fn` once no adapter is left (at once if none is).
  void when_empty(std::function<void()> fn);

 private:
  void release(AdapterLink* link);

  acp::Loop& loop_;
  std::vector<std::unique_ptr<AdapterLink>> links_;
  std::map<AdapterLink*, std::unique_ptr<acp::Timer>> gentle_;  // adapters given eof_grace
  std::vector<std::function<void()>> waiters_;
};

}  // namespace harnessd::adapters
