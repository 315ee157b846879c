// PermissionGate: decides an adapter's session/request_permission by the
// session's permission policy, its remembered approvals, or the host, and
// audits each decision in the running turn's recording. A request the host
// does not answer in time, or whose client is gone, is decided by the
// policy's ask_fallback, so a turn never fails for want of an answer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/unique_function.h"
#include "harnesses/permission_policy.h"
#include "worker/run_recorder.h"
#include "worker/runtime.h"

namespace harnessd::worker {

class PermissionGate {
 public:
  /// What the session's requests are decided by.
  struct Scope {
    harnesses::PermissionPolicy policy;
    std::string cwd;
    std::string harness;
  };
  struct Hooks {
    std::function<RunRecorder*()> recorder;  // the running turn's, or null
    std::function<const Scope&()> scope;
    /// The running turn is being cancelled: requests are answered
    /// "cancelled", as ACP asks of a client.
    std::function<bool()> cancelling;
  };
  using Answered = acp::UniqueFunction<void(acp::Connection::CallResult)>;
  /// Asks the host; `answered` gets its answer (or kPeerGone).
  using AskHost = std::function<void(nlohmann::json params, Answered answered)>;

  PermissionGate(Runtime& rt, std::string session_id, Hooks hooks);
  ~PermissionGate();
  PermissionGate(const PermissionGate&) = delete;
  PermissionGate& operator=(const PermissionGate&) = delete;

  /// A tool_call or tool_call_update of the running turn: what later
  /// requests about the same toolCallId are judged by.
  void note(const nlohmann::json& update);
  /// A turn starts: its summary and tool calls start empty.
  void turn_started();
  /// The turn's {asked, allowed, denied, byRule}, or null when no request
  /// came; resets it.
  nlohmann::json take_summary();
  /// Decides a request, answering `reply` exactly once.
  void request(const nlohmann::json& params, acp::Reply reply, AskHost ask);

 private:
  struct Pending;
  void consult_approvals(std::shared_ptr<Pending> p, AskHost ask);
  void ask_host(std::shared_ptr<Pending> p, AskHost ask);
  void host_answered(const std::shared_ptr<Pending>& p, acp::Connection::CallResult r);
  /// Answers for harnessd: `action` by `by`.
  void conclude(const std::shared_ptr<Pending>& p, harnesses::PolicyAction action, const std::string& by);
  void remember(const Pending& p, const std::string& option_kind);
  /// Counts and audits one decision.
  void audit(const Pending& p, const std::string& decision, const std::string& by, const nlohmann::json& option);

  Runtime& rt_;
  std::string session_id_;
  Hooks hooks_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<std::string, nlohmann::json> calls_;  // this turn's tool calls, by toolCallId
  nlohmann::json summary_;  // null until a request comes
};

}  // namespace harnessd::worker
