// WarmPool: adapters of one harness started and initialized ahead of need
// ([harness.X] warm = N), so that a new session pays only for its
// session/new. A session's AdapterSession takes one instead of starting an
// adapter; the pool then starts a replacement.
//
// Warm adapters take places under max_live_adapters like any other, but
// only free ones (they never make a session's adapter go), and they are the
// first evicted when a start needs a place. They are not counted as idle
// for adapter_idle_ttl. Their starts go through the harness's breaker.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "acp/loop.h"
#include "adapters/adapter_link.h"
#include "adapters/live_adapters.h"
#include "adapters/reaper.h"
#include "adapters/start_breaker.h"

namespace harnessd::adapters {

/// An adapter that has answered initialize and opened no session yet.
struct WarmAdapter {
  std::unique_ptr<AdapterLink> link;
  nlohmann::json initialized;  // its answer to initialize
  /// From its spawn to that answer: what the session that takes it is spared.
  std::chrono::milliseconds start_time{0};
};

class WarmPool {
 public:
  struct Options {
    std::string harness;
    std::size_t size = 0;
    std::chrono::milliseconds kill_grace{1500};
    std::chrono::milliseconds start_timeout{60000};
    /// The link options of a new warm adapter (its process runs in the
    /// daemon's working directory: the session's cwd goes in session/new).
    std::function<AdapterOptions()> link;
    ResourceLimits limits;
    /// What initialize offers; a warm adapter is taken only by a session
    /// whose adapter would offer the same.
    std::function<nlohmann::json()> client_capabilities;
  };

  WarmPool(acp::Loop& loop, Reaper& reaper, LiveAdapters* live, StartBreaker* breaker, Options options);
  /// Stops every warm adapter.
  ~WarmPool();
  WarmPool(const WarmPool&) = delete;
  WarmPool& operator=(const WarmPool&) = delete;

  /// Starts adapters until `size` are warm or starting, while places are
  /// free and the breaker lets starts through.
  void fill();
  /// A warm adapter initialized with `client_capabilities`, if one is
  /// ready; a replacement starts from a fresh stack.
  std::optional<WarmAdapter> take(const nlohmann::json& client_capabilities);
  /// Stops every warm adapter and starts no more.
  void stop();

  std::size_t ready() const;
  std::size_t starting() const { return entries_.size() - ready(); }
  /// {size, ready, starting} for the status outputs.
  nlohmann::json status() const;

 private:
  struct Entry;
  void started(Entry* entry, Expected<nlohmann::json, RpcError> answer);
  /// Stops `entry`'s adapter; `failure`: its start failed (the breaker
  /// hears of it, and no warm start is tried for a second).
  void drop(Entry* entry, std::optional<RpcError> failure);
  void retry_after(std::chrono::milliseconds delay);

  acp::Loop& loop_;
  Reaper& reaper_;
  LiveAdapters* live_;
  StartBreaker* breaker_;
  Options options_;
  std::list<std::unique_ptr<Entry>> entries_;
  nlohmann::json offered_;  // the client capabilities the entries were initialized with
  std::unique_ptr<acp::Timer> retry_;
  std::chrono::steady_clock::time_point quiet_until_{};  // after a failed start
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace harnessd::adapters
