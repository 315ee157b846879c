// Session: one host session, its adapter, and the turn it is running.
// Queued prompts wait in the scheduler (queue/); the Agent hands a session
// its next prompt when a slot is free. The turn machinery follows the ACP
// prompt-turn and cancellation rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "adapters/adapter_link.h"
#include "harnesses/profile.h"
#include "queue/lane.h"
#include "queue/turn.h"
#include "worker/runtime.h"

namespace harnessd::worker {

struct SessionInit {
  std::string id;
  std::string cwd;
  harnesses::HarnessProfile profile;
  nlohmann::json mcp_servers = nlohmann::json::array();
  std::optional<std::string> name;
  /// Deadline for this session's runs unless a prompt sets its own (0: none).
  std::chrono::milliseconds run_timeout{0};
  queue::Lane lane = queue::Lane::kInteractive;
};

/// A prompt waiting for, or running as, a turn.
struct QueuedPrompt {
  std::string run_id;
  nlohmann::json blocks;  // ContentBlock array, already checked
  Reply reply;
  std::chrono::milliseconds timeout{0};  // 0: none
};

/// Answers a prompt that never ran (removed from the queue, session
/// closed): stopReason "cancelled" with its runId.
void answer_cancelled(QueuedPrompt& prompt);

/// Lives in the Agent's registry while open. All methods run on the loop
/// thread. Every prompt given to start_turn() is answered exactly once.
class Session {
 public:
  /// `on_idle` runs after each turn has been answered (never from close()),
  /// so the Agent can start the next prompt at once.
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
  std::chrono::system_clock::time_point updated_at() const { return updated_at_; }
  /// The adapter's pid, or 0 when no adapter runs.
  int adapter_pid() const;
  /// "idle" or the state of the running turn.
  const char* state() const;
  /// The request id and run id of the running turn, if any.
  nlohmann::json active_request_id() const;
  std::optional<std::string> active_run_id() const;

  /// Runs `prompt` now. The Agent calls this only when no turn is running.
  void start_turn(QueuedPrompt prompt);
  /// session/cancel: stops the running turn only. While the adapter starts
  /// the cancel is latched; with no turn running it does nothing.
  void cancel();
  /// `$/cancel_request` for the running turn: true if `request_id` is its.
  bool cancel_request(const nlohmann::json& request_id);
  /// session/close and shutdown: the running turn is answered cancelled
  /// now and the adapter is stopped. on_idle is not called.
  void close();

 private:
  struct Turn {
    explicit Turn(std::uint64_t generation) : control(generation) {}
    queue::TurnControl control;
    QueuedPrompt prompt;
    bool partial_output = false;  // an update of this turn reached the host
    std::unique_ptr<Timer> stop_timer;
    std::unique_ptr<Timer> deadline;
  };
  using Ready = UniqueFunction<void(Expected<void, RpcError>)>;

  void ensure_adapter(Ready ready);
  void adapter_started(Expected<void, RpcError> result);
  void abort_start(const RpcError& error);
  void send_prompt();
  void stop_turn(queue::StopReason why);
  void forward_stop();
  void finish_turn(std::uint64_t generation, Connection::CallResult result);
  void on_adapter_exit(adapters::AdapterLink* link, const adapters::ExitStatus& status);
  void retire_adapter();
  void bind_adapter(adapters::AdapterLink& link);
  void relay_update(const nlohmann::json& params);
  void forward_to_host(const std::string& method, const nlohmann::json& params, Reply reply);
  bool host_can_serve(const std::string& method) const;
  nlohmann::json adapter_client_capabilities() const;
  RpcError adapter_failure(const std::string& what) const;

  Runtime& rt_;
  SessionInit init_;
  std::function<void(Session&)> on_idle_;
  std::chrono::system_clock::time_point updated_at_;
  std::unique_ptr<Turn> turn_;
  std::uint64_t next_generation_ = 1;

  std::unique_ptr<adapters::AdapterLink> adapter_;
  std::string adapter_session_id_;
  bool adapter_ready_ = false;
  std::vector<Ready> adapter_waiters_;
  std::unique_ptr<Timer> start_timer_;
  /// True while the adapter has a session/prompt of ours unanswered.
  bool prompt_in_flight_ = false;
};

}  // namespace harnessd::worker
