// Reaper: keeps adapters that are being stopped until their process trees
// have exited, so nothing is left behind and nothing becomes a zombie.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "acp/loop.h"
#include "adapters/adapter_link.h"

namespace harnessd::adapters {

class Reaper {
 public:
  explicit Reaper(Loop& loop) : loop_(loop) {}
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  /// Takes `link`, fails its pending calls, drops its handlers, and stops it
  /// with the kill ladder (stdin closed, SIGTERM, SIGKILL after kill_grace).
  void adopt(std::unique_ptr<AdapterLink> link, std::chrono::milliseconds kill_grace);
  /// Number of adapters not yet exited.
  std::size_t size() const { return links_.size(); }
  /// Calls `fn` once no adapter is left (at once if none is).
  void when_empty(std::function<void()> fn);

 private:
  void release(AdapterLink* link);

  Loop& loop_;
  std::vector<std::unique_ptr<AdapterLink>> links_;
  std::vector<std::function<void()>> waiters_;
};

}  // namespace harnessd::adapters
