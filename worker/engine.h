// Engine: the store, the reaper and the agent behind one host connection.
// `harnessd serve` puts it behind stdio; `harnessd run` talks to it
// in-process. Shutting down answers every open prompt, stops every adapter
// and flushes the store, each step bounded.
#pragma once

#include <memory>
#include <string>

#include "acp/connection.h"
#include "acp/flow_gate.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "adapters/reaper.h"
#include "worker/agent.h"
#include "worker/config.h"
#include "worker/runtime.h"
#include "worker/store.h"

namespace harnessd::worker {

struct EngineOptions {
  Config config;
  /// The executable that guards adapter groups; empty disables the guard.
  std::string guard_exe;
  /// The harnessd executable, for the built-in bridges; empty: this one.
  std::string self_exe;
  /// The state directory; empty: the default.
  std::string state_dir;
  StoreOptions store;
  /// This process is a child subreaper (become_child_subreaper) and starts
  /// children only through the engine's loop; see Runtime::sweep_orphans.
  bool sweep_orphans = false;
  /// See Runtime::prestart; it must outlive the Engine.
  adapters::Prestart* prestart = nullptr;
  /// Keep the profiles' warm adapters ([harness.X] warm); a one-prompt
  /// `harnessd run` has no use for them.
  bool warm = true;
};

class Engine {
 public:
  /// Serves `host`, which must outlive the Engine.
  Engine(acp::Loop& loop, acp::Connection& host, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Answers every open prompt "cancelled" (recorded first), stops every
  /// adapter tree and waits for the store to take every write; then runs
  /// `done`. Adapters get kill_grace + 3 s, the store 30 s. Only the first
  /// call does anything. `close_sessions` records every session closed
  /// (`harnessd run` with a session of its own); otherwise they stay
  /// loadable.
  void shutdown(const std::string& why, acp::UniqueFunction<void()> done, bool close_sessions = false);
  bool stopping() const { return stopping_; }

  /// Backpressure (docs/architecture.md): closed while a queue that the
  /// adapters' output feeds (the host's output, the store's lanes) is over
  /// its high-water mark; no adapter's stdout is read meanwhile. The store
  /// holds it itself; whoever owns the host's writer adds its hold.
  acp::FlowGate& adapter_output_gate() { return adapter_output_gate_; }
  /// Closed while an adapter's stdin queue is over its high-water mark; the
  /// owner of the host's reader stops reading the host meanwhile.
  acp::FlowGate& host_input_gate() { return host_input_gate_; }
  /// See Runtime::end_input.
  void set_end_input(std::function<void(const std::string& why)> fn) { rt_->end_input = std::move(fn); }

 private:
  void drain_store();
  /// A WarmPool for each harness with `warm` > 0 (filled after initialize).
  void start_warm_pools();
  /// Counts the budgets' runs and tokens again from the ledger.
  void load_budgets();
  /// Writes the harnesses' breakers to harnesses_file().
  void publish_harnesses();

  EngineOptions options_;
  acp::FlowGate adapter_output_gate_;
  acp::FlowGate host_input_gate_;
  std::unique_ptr<acp::FlowGate::Hold> store_hold_;
  adapters::Reaper reaper_;
  adapters::LiveAdapters live_;
  std::unique_ptr<Store> store_;
  Budgets budgets_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<Agent> agent_;
  acp::Timer deadline_;
  acp::UniqueFunction<void()> done_;
  bool stopping_ = false;
  bool draining_ = false;
  bool answered_ = false;       // every open prompt has its answer
  bool adapters_gone_ = false;  // every adapter exited, or their time ran out
  bool published_ = false;      // harnesses_file() was written
};

/// Where a daemon instance says how its harnesses' start breakers stand:
/// {pid, harnesses: {name: {state, consecutiveFailures, until?, lastError?}}},
/// beside its lock file; removed at exit.
std::string harnesses_file(const std::string& state_dir, const std::string& instance);

}  // namespace harnessd::worker
