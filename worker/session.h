// Session: one host session, its prompt queue, its adapter, and the turn
// being run. The turn machinery here follows the ACP prompt-turn and
// cancellation rules; the queue and scheduler grow in queue/.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "adapters/adapter_link.h"
#include "harnesses/profile.h"
#include "worker/runtime.h"

namespace harnessd::worker {

struct SessionInit {
  std::string id;
  std::string cwd;
  harnesses::HarnessProfile profile;
  nlohmann::json mcp_servers = nlohmann::json::array();
  std::optional<std::string> name;
};

/// Lives in the Agent's table until closed. All methods run on the loop
/// thread. Every prompt given to prompt() is answered exactly once.
class Session {
 public:
  Session(Runtime& rt, SessionInit init);
  /// Answers what is still open with "cancelled" and hands the adapter to
  /// the reaper.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return init_.id; }
  const std::string& cwd() const { return init_.cwd; }
  const std::optional<std::string>& name() const { return init_.name; }
  const harnesses::HarnessProfile& profile() const { return init_.profile; }
  std::chrono::system_clock::time_point updated_at() const { return updated_at_; }
  /// The adapter's pid, or 0 when no adapter runs.
  int adapter_pid() const;

  /// Queues a prompt (ContentBlock array, already checked); it runs after
  /// the prompts before it.
  void prompt(nlohmann::json blocks, Reply reply);
  /// session/cancel: cancels the active turn only. A cancel while the
  /// adapter starts is latched; a cancel while idle does nothing.
  void cancel();
  /// session/close and shutdown: every open prompt is answered cancelled
  /// now and the adapter is stopped.
  void close();

 private:
  enum class TurnState { kStarting, kActive };
  struct Turn {
    std::uint64_t generation = 0;
    TurnState state = TurnState::kStarting;
    nlohmann::json prompt;
    Reply reply;
    bool cancel_requested = false;
    std::unique_ptr<Timer> cancel_timer;
  };
  struct Queued {
    nlohmann::json prompt;
    Reply reply;
  };
  using Ready = UniqueFunction<void(Expected<void, RpcError>)>;

  void start_next();
  void ensure_adapter(Ready ready);
  void adapter_started(Expected<void, RpcError> result);
  void send_prompt();
  void apply_cancel();
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
  std::chrono::system_clock::time_point updated_at_;
  std::deque<Queued> queue_;
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
