// Runtime: what every session needs from the daemon, passed explicitly.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/flow_gate.h"
#include "acp/loop.h"
#include "adapters/live_adapters.h"
#include "adapters/prestart.h"
#include "adapters/reaper.h"
#include "adapters/start_breaker.h"
#include "adapters/warm_pool.h"
#include "worker/budgets.h"
#include "worker/config.h"
#include "worker/store.h"

namespace harnessd::worker {

/// Owned by the daemon; outlives every session.
struct Runtime {
  acp::Loop& loop;
  const Config& config;
  /// The host connection (harnessd is the agent side).
  acp::Connection& host;
  adapters::Reaper& reaper;
  Store& store;
  /// The harnessd executable used as the guard of adapter process groups.
  std::string guard_exe;
  /// The harnessd executable, which runs the built-in bridges.
  std::string self_exe;
  /// harnessd's environment, from which adapters get their variables.
  std::vector<std::string> parent_env;
  /// clientCapabilities the host sent in initialize ({} until then).
  nlohmann::json client_capabilities = nlohmann::json::object();
  /// Per harness profile, the configOptions its adapter last offered a new
  /// session (its defaults). A session lists them from session/new on,
  /// before its own adapter has started. Seeded from the session records.
  std::map<std::string, nlohmann::json> harness_options = {};
  /// Harnesses whose adapter session/new started early to learn those
  /// options, so that a harness that cannot start delays only one answer.
  std::set<std::string> harness_options_sought = {};
  /// harnessd is a child subreaper whose children all come from this loop:
  /// an adapter whose guard dies uncleanly also has its orphans swept.
  bool sweep_orphans = false;
  /// Backpressure gates, owned by the Engine (see Engine): adapters' stdout
  /// is not read while the first is closed, and each adapter's stdin queue
  /// closes the second while it is over the high-water mark.
  acp::FlowGate* adapter_output_gate = nullptr;
  acp::FlowGate* host_input_gate = nullptr;
  /// An adapter started ahead of need, which the first adapter start takes
  /// over when it is the same process (see adapters::Prestart); or null.
  adapters::Prestart* prestart = nullptr;
  /// The cap on live adapters and the idle ones evicted for it (see
  /// adapters::LiveAdapters); null: no cap, nothing evicted.
  adapters::LiveAdapters* live = nullptr;
  /// Per harness with `warm` > 0, its warm adapters (owned by the Engine).
  std::map<std::string, std::unique_ptr<adapters::WarmPool>> warm = {};
  /// Per harness, the breaker on its adapter starts (made when first asked for).
  std::map<std::string, adapters::StartBreaker> breakers = {};

  adapters::StartBreaker& breaker(const std::string& harness) {
    auto it = breakers.find(harness);
    if (it == breakers.end()) {
      adapters::BreakerOptions options{config.daemon.breaker_failures, config.daemon.breaker_cooldown};
      it = breakers.emplace(harness, adapters::StartBreaker(harness, options)).first;
      if (breaker_changed) it->second.on_change(breaker_changed);
    }
    return it->second;
  }
  /// Set by whoever serves the host on stdio: ends the host connection as
  /// if its input had ended (a worker whose front went silent). May be empty.
  std::function<void(const std::string& why)> end_input = {};
  /// Set by the Engine: publishes the breakers for other processes.
  std::function<void()> breaker_changed = {};
  /// The harnesses' budgets (owned by the Engine); null: none kept.
  Budgets* budgets = nullptr;
};

}  // namespace harnessd::worker
