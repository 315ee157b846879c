// AdapterSession: one ACP session at one adapter process, seen from the
// client side. It starts the adapter (through the guard), runs the
// handshake (initialize, then session/resume, session/load or session/new),
// holds the callers that wait for it to be ready, enforces the start-up
// deadline, applies the host's option choices again to every new adapter
// session, and hands a stopped adapter to the Reaper. It knows nothing of
// turns, hosts or harness profiles: its owner says how to start the process
// and what to do with the adapter's traffic.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "adapters/adapter_link.h"
#include "adapters/live_adapters.h"
#include "adapters/start_breaker.h"
#include "adapters/warm_pool.h"
#include "adapters/reaper.h"

namespace harnessd::adapters {

/// How to start one adapter and open its session; asked for only when an
/// adapter is about to start.
struct AdapterSessionSpec {
  AdapterOptions link;               // argv, env, cwd, the guard, limits
  std::vector<std::string> command;  // named when the adapter cannot start
  std::string install_hint;          // likewise, if not empty
  std::string cwd;                   // of session/new, resume and load
  nlohmann::json mcp_servers = nlohmann::json::array();
  /// Offered in initialize (the host's own, so the adapter never calls a
  /// client method nobody serves).
  nlohmann::json client_capabilities = nlohmann::json::object();
  /// {configId: value}: set again on every new adapter session.
  nlohmann::json config_choices = nlohmann::json::object();
  std::chrono::milliseconds start_timeout{30000};
  /// An environment variable holding an API key: when the adapter offers
  /// an auth method of type "env_var" that reads it, and `link` passes it
  /// on, `authenticate` is called with that method before the session
  /// opens. Empty: harnessd never authenticates on its own.
  std::string auth_env;
  /// The tree's resource limits ([harness.X] limits); none by default.
  ResourceLimits limits;
  /// The worker host the adapter runs on (an ssh:// address), named in
  /// its errors; empty: this machine.
  std::string host;
};

/// The params of the initialize harnessd sends an adapter: the host's
/// `client_capabilities`, protocol version 1, harnessd's clientInfo.
nlohmann::json initialize_params(const nlohmann::json& client_capabilities);

class AdapterSession {
 public:
  using Ready = acp::UniqueFunction<void(Expected<void, RpcError>)>;

  struct Hooks {
    /// The spec of the next adapter.
    std::function<AdapterSessionSpec()> spec;
    /// Every new link, before anything is written to it: install the
    /// handlers of the adapter's own requests and notifications here.
    std::function<void(AdapterLink&)> bind;
    /// An answer carried the adapter's configOptions. `announce`: the list
    /// is final (no earlier choice is still being applied to it).
    std::function<void(const nlohmann::json& options, bool announce)> options;
    /// A new adapter session (not a resumed one) is ready; `offered` is the
    /// configOptions its session/new listed ([] when none).
    std::function<void(const nlohmann::json& offered)> created;
    /// Whether a stopped adapter's session is worth resuming by the next
    /// adapter (false once the owner is closing, or starts afresh each time).
    std::function<bool()> resumable;
    /// The adapter was handed to the Reaper (it exited, failed, was
    /// stopped or evicted); optional.
    std::function<void()> stopped;
    /// The breaker that admits this harness's starts (null: none); optional.
    std::function<StartBreaker*()> breaker;
    /// A warm adapter initialized with these client capabilities, taken
    /// instead of starting one; optional.
    std::function<std::optional<WarmAdapter>(const nlohmann::json& client_capabilities)> warm;
  };

  /// `label` prefixes log lines ("session sess_..."); `harness` is named in errors.
  AdapterSession(acp::Loop& loop, Reaper& reaper, std::chrono::milliseconds kill_grace, std::string label,
                 std::string harness, Hooks hooks);
  /// Retires a running adapter.
  ~AdapterSession();
  AdapterSession(const AdapterSession&) = delete;
  AdapterSession& operator=(const AdapterSession&) = delete;

  /// Calls `ready` at once when the adapter session is ready, else once it
  /// is or has failed to be; starts the adapter if none is starting.
  void ensure(Ready ready);
  /// Forgets the waiters without calling them (their owner is closing).
  void drop_waiters() { waiters_.clear(); }
  /// Fails the waiters with `error` and stops the adapter.
  void abort_start(const RpcError& error);
  /// Hands the adapter to the Reaper; see Reaper::adopt for `eof_grace`.
  /// Its session is kept for the next adapter to resume when resumable.
  void retire(std::chrono::milliseconds eof_grace = std::chrono::milliseconds(0));
  /// Stops an idle adapter to free its place: its session is closed first
  /// where the adapter supports session/close, and kept for the next
  /// adapter to resume like retire().
  void evict(std::chrono::milliseconds eof_grace);
  /// Every adapter start takes a place under `live`'s cap first (null: no cap).
  void set_live_adapters(LiveAdapters* live) { live_ = live; }
  /// Waiting for a place under the cap.
  bool admitting() const { return admitting_; }

  /// session/prompt with `blocks`. An error caused by the adapter's death
  /// or closed output is reported as failure("").
  void prompt(const nlohmann::json& blocks, acp::Connection::CallHandler done);
  /// session/cancel (a notification).
  void cancel();
  /// Sends the running adapter a notification; nothing without one.
  void notify(const std::string& method, nlohmann::json params);
  /// session/set_config_option; the options hook sees the new list first.
  void set_config_option(const std::string& config_id, const nlohmann::json& value, acp::Connection::CallHandler done);
  /// session/set_mode.
  void set_mode(const std::string& mode_id, acp::Connection::CallHandler done);

  /// An adapter process exists (starting, ready, or exited but not retired).
  bool started() const { return link_ != nullptr; }
  /// The adapter runs and its session is ready.
  bool ready() const { return link_ && ready_ && !link_->exited(); }
  /// The adapter process runs.
  bool alive() const { return link_ && !link_->exited(); }
  int pid() const { return alive() ? link_->pid() : 0; }
  /// A session/prompt of ours is unanswered.
  bool prompting() const { return prompting_; }
  /// The adapter is replaying its own history (session/load): its updates
  /// are not the host's business.
  bool replaying() const { return replaying_; }

  /// The adapter's session id while ready, else "".
  const std::string& id() const { return id_; }
  /// The adapter session the next adapter will try to resume ("" if none).
  const std::string& resume_id() const { return resume_id_; }
  void set_resume_id(std::string id) { resume_id_ = std::move(id); }
  /// How the adapter now running was started: {warm: false, startMs} (from
  /// the start to its session being ready), or {warm: true, startMs,
  /// savedMs} (taken warm: startMs is its session/new alone, savedMs what
  /// its own start took ahead of need). Null before the first start.
  const nlohmann::json& start_report() const { return start_report_; }
  /// Adapters started (or taken warm) so far.
  std::uint64_t starts() const { return starts_; }
  /// What became of the last attempt to resume (null: none was made):
  /// {restored, method?, reason?, adapterSessionId?}.
  const nlohmann::json& restore_outcome() const { return restore_outcome_; }
  void set_harness(std::string harness) { harness_ = std::move(harness); }

  /// The error of an adapter that failed at `what`, or that exited or
  /// closed its output (then `what` is not used), with its stderr tail.
  RpcError failure(const std::string& what) const;

 private:
  /// failure() without the worker host.
  RpcError local_failure(const std::string& what) const;
  void start();
  /// Takes over a warm adapter: it has answered initialize already.
  void adopt(WarmAdapter warm);
  /// Watches a new link (its exit, its closed output, the start-up deadline)
  /// and lets the owner bind its handlers.
  void watch(AdapterLink* raw);
  /// Notes whether the spec's environment has spec_.auth_env.
  void note_auth_env();
  void initialized(AdapterLink* raw, const nlohmann::json& answer);
  /// Opens the adapter session: resumes, loads or creates it.
  void open(AdapterLink* raw);
  /// -32000 for a harness that wants a login, from what the adapter said.
  RpcError auth_required(const RpcError& said) const;
  void create(AdapterLink* raw);
  void reapply(AdapterLink* raw);
  void started(Expected<void, RpcError> result);

  acp::Loop& loop_;
  Reaper& reaper_;
  std::chrono::milliseconds kill_grace_;
  std::string label_;
  std::string harness_;
  Hooks hooks_;

  std::unique_ptr<AdapterLink> link_;
  AdapterSessionSpec spec_;  // of the running adapter
  std::string id_;
  bool ready_ = false;
  bool prompting_ = false;
  bool replaying_ = false;
  std::vector<Ready> waiters_;
  std::unique_ptr<acp::Timer> start_timer_;
  std::string resume_id_;
  nlohmann::json restore_outcome_;
  bool can_close_ = false;  // the running adapter advertised session/close
  bool can_resume_ = false;
  bool can_load_ = false;
  nlohmann::json auth_methods_ = nlohmann::json::array();  // it offered
  bool auth_env_set_ = false;  // spec_.auth_env has a value in the adapter's environment
  StartBreaker* admitted_ = nullptr;  // the breaker that let the start under way go ahead
  std::chrono::steady_clock::time_point start_began_{};
  nlohmann::json start_report_;
  std::uint64_t starts_ = 0;
  LiveAdapters* live_ = nullptr;
  LiveAdapters::Wait slot_wait_;
  LiveAdapters::Slot slot_;  // granted, for the start under way
  bool admitting_ = false;
};

}  // namespace harnessd::adapters
