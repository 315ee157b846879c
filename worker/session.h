// Session: one host session, its adapter, and the turn it is running.
// Queued prompts wait in the scheduler (queue/); the Agent hands a session
// its next prompt when a slot is free. The turn machinery follows the ACP
// prompt-turn and cancellation rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "adapters/adapter_session.h"
#include "harnesses/profile.h"
#include "harnesses/template.h"
#include "queue/lane.h"
#include "queue/turn.h"
#include "worker/host_order.h"
#include "worker/ledger.h"
#include "worker/queued_prompt.h"
#include "worker/relay.h"
#include "worker/run_recorder.h"
#include "worker/runtime.h"
#include "worker/session_options.h"
#include "worker/session_record.h"

namespace harnessd::worker {

struct SessionInit {
  std::string id;
  std::string cwd;
  harnesses::HarnessProfile profile;
  nlohmann::json mcp_servers = nlohmann::json::array();
  std::optional<std::string> name;
  /// The host's own name for the session (an OpenClaw session key), from
  /// `_meta.harnessd.hostSession` or HARNESSD_HOST_SESSION; only recorded.
  std::optional<std::string> host_session;
  /// Deadline for this session's runs unless a prompt sets its own (0: none).
  std::chrono::milliseconds run_timeout{0};
  queue::Lane lane = queue::Lane::kInteractive;
  std::string created_at;
  /// The adapter's own session id from an earlier lifetime, to resume.
  std::string restore_adapter_session;
  /// "persistent" or "oneshot" (a fresh adapter per prompt; harnessd
  /// carries the memory in `history`).
  std::string mode = "persistent";
  /// The session's packaging template; empty: prompts go as sent.
  std::string template_name;
  /// `_meta.harnessd.sandbox` of its session/new: a sandbox stricter than
  /// the harness's, applied to `profile` (and to any harness chosen later).
  /// The default ({"none", network}) asks for nothing.
  adapters::Sandbox sandbox_choice;
  /// Oneshot sessions: [{task, answer, runId}] of the turns that ended, oldest first.
  nlohmann::json history = nlohmann::json::array();
  /// Set by the host with _harnessd/sessions/set_summary.
  std::string summary;
  /// _meta.harnessd.permissions: a mode stricter than the profile's.
  std::optional<std::string> permissions;
  /// What the session's runs used so far (see SessionRecord::usage).
  nlohmann::json usage;
  /// The adapter's config options the host chose ({configId: value}),
  /// applied again to every new adapter of the session.
  nlohmann::json config_choices = nlohmann::json::object();
  /// The options its adapter offered when the session was made (null: not yet).
  nlohmann::json adapter_defaults;
  /// A session of an earlier lifetime keeps its harness.
  bool harness_fixed = false;
  /// A remote profile's session: the worker host it runs on (an ssh://
  /// address of the profile's); it stays there. Empty: here.
  std::string host;
};

/// Where an adapter runs: its session (for the launcher's placeholders)
/// and, for a remote profile, the worker host.
struct AdapterPlace {
  std::string session;
  std::string host;
};

/// Turns a oneshot session remembers; older ones are forgotten.
inline constexpr std::size_t kHistoryTurns = 50;

/// The adapter process a session of `profile` in `cwd` starts (its
/// command, environment and guard).
adapters::ProcessSpec adapter_process(const harnesses::HarnessProfile& profile, const std::string& cwd,
                                     const std::string& self_exe, const std::vector<std::string>& parent_env,
                                     const std::string& state_dir, const std::string& guard_exe, bool sweep_orphans,
                                     const AdapterPlace& place = {});

/// The sandbox an adapter of `profile` started in `cwd` gets, as reported
/// to hosts ({"mode":"none"}, or {"mode", "network", "writable"}).
nlohmann::json sandbox_report(const harnesses::HarnessProfile& profile, const std::string& cwd,
                              const std::vector<std::string>& parent_env, const std::string& state_dir);

/// The options of an adapter link of `profile` started in `cwd`, labelled
/// `label`: the process, the guard, and the daemon's limits and gates.
adapters::AdapterOptions adapter_link_options(const Runtime& rt, const harnesses::HarnessProfile& profile,
                                              const std::string& cwd, std::string label,
                                              const AdapterPlace& place = {});

/// Lives in the Agent's registry while open. All methods run on the loop
/// thread. Every prompt given to start_turn() is answered exactly once.
class Session final : private adapters::LiveAdapters::Member {
 public:
  /// `on_idle` runs after each turn has ended (never from close()), so the
  /// Agent can start the next prompt at once: it does not wait for the
  /// turn's end to be on disk, only the turn's answer does.
  Session(Runtime& rt, SessionInit init, std::function<void(Session&)> on_idle);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return init_.id; }
  const std::string& cwd() const { return init_.cwd; }
  const std::optional<std::string>& name() const { return init_.name; }
  void forget_name() { init_.name.reset(); }
  const harnesses::HarnessProfile& profile() const { return init_.profile; }
  const SessionInit& init() const { return init_; }
  bool oneshot() const { return init_.mode == "oneshot"; }
  /// The effective sandbox of its adapters, as session/new's answer and
  /// result.json report it ({"mode":"none"} without one).
  nlohmann::json sandbox() const;
  /// _harnessd/sessions/set_summary: goes into later packaged prompts.
  void set_summary(std::string summary);

  /// ACP configOptions: "harness" first, then the adapter's own (known once
  /// it has started).
  nlohmann::json config_options() const;
  /// Changes the harness; only before the first prompt.
  Expected<void, RpcError> set_harness(const harnesses::HarnessProfile& profile);
  /// Any other option goes to the adapter (started if need be); `done` gets
  /// the complete configOptions.
  void set_adapter_option(const std::string& config_id, const nlohmann::json& value,
                          acp::UniqueFunction<void(Expected<nlohmann::json, RpcError>)> done);
  /// session/set_mode: the adapter's option of category "mode" when it has
  /// one (so the choice is kept like any option), else its own set_mode.
  void set_mode(const std::string& mode_id, acp::UniqueFunction<void(Expected<void, RpcError>)> done);
  /// Starts the adapter before the host knows the session, so that its
  /// options can be in session/new's answer; `done` runs once the adapter is
  /// up or has failed (a failure is logged; the first prompt tries again),
  /// or the session closes, with the configOptions to answer. The host is
  /// not told of the list meanwhile: the answer carries it.
  void start_adapter_early(acp::UniqueFunction<void(nlohmann::json)> done);
  /// A remote session's worker host (an ssh:// address); empty: here.
  const std::string& host() const { return init_.host; }
  /// Starts a remote session's worker on the first of `hosts` that can be
  /// reached, for session/new (a host whose ssh cannot connect is passed
  /// over; any other failure ends the search). `done` gets the error that
  /// refuses the session, or success; the session then stays on its host.
  void place(std::vector<std::string> hosts, acp::UniqueFunction<void(Expected<void, RpcError>)> done);
  std::chrono::system_clock::time_point updated_at() const { return updated_at_; }
  /// The adapter's pid, or 0 when no adapter runs.
  int adapter_pid() const;
  /// What the session's adapter is doing: {state: "live", pid} (starting or
  /// in use), {state: "idle", pid, since}, {state: "evicted", since},
  /// {state: "waiting"} (for a place under max_live_adapters) or
  /// {state: "none"}.
  nlohmann::json adapter_status() const;
  /// A tag for the next run's frames in the session's segment, new in this
  /// process (see segment.h).
  std::uint64_t take_run_tag() { return next_run_tag_++; }
  /// "idle" or the state of the running turn.
  const char* state() const;
  /// The request id and run id of the running turn, if any.
  nlohmann::json active_request_id() const;
  std::optional<std::string> active_run_id() const;

  /// Runs `prompt` now. The Agent calls this only when no turn is running.
  void start_turn(QueuedPrompt prompt);
  /// session/cancel: stops the running turn only. While the adapter starts
  /// the cancel is latched; with no turn running, or while the host still
  /// waits for the answer of the turn before (the running one is not yet
  /// the host's), it does nothing.
  void cancel();
  /// `$/cancel_request` for the running turn: true if `request_id` is its.
  bool cancel_request(const nlohmann::json& request_id);
  /// session/close and shutdown: the running turn is answered cancelled
  /// (once recorded) and the adapter is stopped. on_idle is not called.
  /// `forget` (session/close, name taken over) marks the record closed; a
  /// shutdown leaves it open, so a later lifetime can load the session.
  /// `answered` runs once the running turn's answer is sent (at once when
  /// no turn runs), so that queued prompts can be answered after it.
  void close(bool forget = false, acp::UniqueFunction<void()> answered = nullptr);

  /// session/load and session/resume: replays the transcript (if `replay`),
  /// then makes sure the adapter runs, resuming or loading its own earlier
  /// session when it can. `done` gets what happened to the adapter session,
  /// for the answer's _meta.
  void restore(bool replay, acp::UniqueFunction<void(Expected<nlohmann::json, RpcError>)> done);
  bool busy() const { return turn_ != nullptr; }
  /// _harnessd/sessions/watch: the transcript's frames from `from_seq`
  /// (replayed), then each new one (see FrameLog).
  void watch(nlohmann::json watch_id, std::uint64_t from_seq, FrameLog::StartedFn started) {
    relay_.frames().watch(std::move(watch_id), from_seq, std::move(started));
  }
  bool unwatch(const nlohmann::json& watch_id) { return relay_.frames().unwatch(watch_id); }
  /// Runs `fn` once the answers of the turns that ended so far are out.
  void after_answers(acp::UniqueFunction<void()> fn) { host_order_->then(std::move(fn)); }

  /// The session record (sessions/<id>.json) as it stands.
  nlohmann::json record() const { return fields().to_json(); }
  /// Writes the record.
  void save_record();

 private:
  /// After a turn of a session that stays: the record is written unless
  /// only its updatedAt changed and the stored one is under a second old,
  /// so that a busy session does not rewrite its record for every prompt
  /// (other processes see its updatedAt at most that late; close() writes
  /// what is left).
  void save_record_after_turn();
  /// Puts the adapter among the idle ones when nothing uses it.
  void settle();
  void evict(const char* why) override;
  void save(nlohmann::json record);
  struct Turn {
    explicit Turn(std::uint64_t generation) : control(generation) {}
    queue::TurnControl control;
    QueuedPrompt prompt;
    bool partial_output = false;  // an update of this turn reached the host
    std::unique_ptr<acp::Timer> stop_timer;
    std::unique_ptr<acp::Timer> deadline;
    std::unique_ptr<RunRecorder> recorder;
    std::string error;  // why harnessd stopped the run itself (kError)
    std::string started_at;
    nlohmann::json packaged_blocks;  // a packaged prompt's text, which its adapter is given
    std::string task;       // the prompt's text, for the session's history
    std::string answer;     // the agent's message text, for the session's history
    nlohmann::json adapter_start;  // how its adapter was started, if it waited for one
    nlohmann::json usage_update;   // the turn's last usage_update, or null
  };
  using Ready = acp::UniqueFunction<void(Expected<void, RpcError>)>;


  /// A host request answered later, when an adapter call returns: the
  /// returned callback answers it, and closing the session first answers it
  /// with an error, so no request outlives the session unanswered.
  template <class T>
  acp::UniqueFunction<void(Expected<T, RpcError>)> held(acp::UniqueFunction<void(Expected<T, RpcError>)> done);
  void ensure_adapter(Ready ready);
  adapters::AdapterSessionSpec adapter_spec() const;
  /// Takes the adapter's configOptions from an answer, if it has them;
  /// `announce` tells the host of a change (once it knows the session).
  void take_adapter_options(const nlohmann::json& answer, bool announce);
  /// A remote session's `_harnessd/alive` to its worker, every keep-alive interval.
  std::unique_ptr<acp::Timer> front_alive_;
  void send_alive();
  void answer_early();
  struct Placing;
  void try_host(std::shared_ptr<Placing> placing);
  /// What became of a host's try (`this` only if `alive`): the next host,
  /// or the end of the search.
  void host_tried(const std::weak_ptr<bool>& alive, std::shared_ptr<Placing> placing, Expected<void, RpcError> ready);
  std::weak_ptr<Placing> placing_;  // while session/new chooses its host
  /// The session's cwd on its adapter's machine (remote_cwd for a worker).
  std::string remote_cwd() const;
  void turn_recording_ready(std::uint64_t generation, Expected<void> opened);
  void send_prompt();
  void stop_turn(queue::StopReason why);
  void forward_stop();
  void finish_turn(std::uint64_t generation, acp::Connection::CallResult result);
  /// An update of the running turn reaches the host: it has output, and
  /// the agent's text is kept for a oneshot session's history.
  void turn_output(std::string_view kind, std::string_view text);
  /// The adapter reported usage (see Relay::Hooks::usage).
  void usage_reported(const nlohmann::json& update);
  /// The ended turn's usage (usage::of_run), added to the session's sum;
  /// budgets are told.
  nlohmann::json account(const Turn& turn, const nlohmann::json& reported);
  /// Adds an ended turn to a oneshot session's history.
  void remember(const Turn& turn, const std::string& event);

  Runtime& rt_;
  SessionInit init_;
  // Async store callbacks hold a weak_ptr to this: a session may be gone by
  // the time its writes complete.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool closed_ = false;
  bool prompted_ = false;          // a turn has started: the harness is fixed
  SessionOptions options_;
  /// The cumulative cost the adapter process reported last (usage_update),
  /// from which a run's share is counted; null until it reported one.
  nlohmann::json adapter_cost_;
  nlohmann::json adapter_defaults_;  // what the adapter offered its new session; null until one was made
  acp::UniqueFunction<void(nlohmann::json)> early_answer_;  // session/new's, while its adapter starts early
  bool early_unused_ = false;  // the adapter started for session/new and nothing has used it since
  std::function<void(Session&)> on_idle_;
  std::chrono::system_clock::time_point updated_at_;
  std::unique_ptr<Turn> turn_;
  // Answers of ended turns, and what follows them, in order.
  std::shared_ptr<HostOrder> host_order_ = std::make_shared<HostOrder>();
  std::uint64_t next_generation_ = 1;
  std::uint64_t next_run_tag_ = 1;
  /// The record as it stands, its updatedAt now.
  SessionRecord fields() const;
  void save(const SessionRecord& r);

  std::string evicted_at_;  // when the adapter was last evicted, until a new one starts
  std::uint64_t reported_start_ = 0;  // the adapter start a run's result.json told of last
  SessionRecord saved_record_;  // the record last written, without its updatedAt
  std::chrono::steady_clock::time_point saved_at_{};
  bool unsaved_time_ = false;  // a turn ended after the record was last written
  std::map<std::uint64_t, acp::UniqueFunction<void(const RpcError&)>> held_;  // by held()'s order
  std::uint64_t next_held_ = 0;

  PermissionGate::Scope permission_scope_;  // what the relay's gate reads, refreshed at each request

  // Last, so that they go first: their hooks call into the members above.
  Relay relay_;
  adapters::AdapterSession adapter_;
};

}  // namespace harnessd::worker
