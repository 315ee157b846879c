// JSON-RPC error objects and the error codes harnessd uses on the wire.
// docs/protocol.md lists every code with its meaning.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace harnessd {

/// Error codes. The first block is JSON-RPC 2.0 and ACP; the second block is
/// harnessd's own, inside the implementation-defined server range.
namespace rpc_code {
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kRequestCancelled = -32800;
inline constexpr int kResourceNotFound = -32002;
/// ACP: the agent needs `authenticate` first (data.reason is "auth_required").
inline constexpr int kAuthRequired = -32000;

/// The harness named for a session cannot run (binary missing, bad profile).
inline constexpr int kHarnessUnavailable = -32010;
/// The adapter process failed: it exited, could not start, or broke the protocol.
inline constexpr int kAdapterFailed = -32011;
/// The peer went away before answering an outgoing request.
inline constexpr int kPeerGone = -32012;
/// The bounded table of outgoing requests is full.
inline constexpr int kTooManyPending = -32013;
/// The session's prompt queue is full; retry later (data.retryable is true).
inline constexpr int kQueueFull = -32014;
/// The run passed its deadline and was stopped (data.reason is "timeout").
inline constexpr int kRunTimeout = -32015;
/// The run could not be recorded (disk full, permissions): it failed.
inline constexpr int kStoreFailed = -32016;
/// Another harnessd process on the state directory serves the session;
/// retry once it lets go (data.retryable is true, data.owner says who).
inline constexpr int kSessionBusy = -32017;
/// A budget of the session's harness is spent (max_runs_per_hour,
/// max_tokens_per_day): the prompt was not queued; data.retryable is true,
/// data.retryAfterMs says when to try again, data.budget which budget.
inline constexpr int kBudgetExceeded = -32018;
/// Every worker host of a remote harness holds its `capacity` of sessions:
/// session/new was refused; data.retryable is true, data.hosts says who.
inline constexpr int kNoCapacity = -32019;
}  // namespace rpc_code

/// A JSON-RPC error object. `data` is omitted from the wire when null.
struct RpcError {
  int code = rpc_code::kInternalError;
  std::string message;
  nlohmann::json data;  // null when absent

  static RpcError parse_error(std::string message) { return {rpc_code::kParseError, std::move(message), {}}; }
  static RpcError invalid_request(std::string message) {
    return {rpc_code::kInvalidRequest, std::move(message), {}};
  }
  static RpcError method_not_found(const std::string& method) {
    return {rpc_code::kMethodNotFound, "Method not found: " + method, {{"method", method}}};
  }
  static RpcError invalid_params(std::string message) {
    return {rpc_code::kInvalidParams, std::move(message), {}};
  }
  static RpcError internal(std::string message) { return {rpc_code::kInternalError, std::move(message), {}}; }
  static RpcError session_not_found(const std::string& session_id) {
    return {rpc_code::kResourceNotFound, "Session not found: " + session_id, {{"sessionId", session_id}}};
  }
};

void to_json(nlohmann::json& j, const RpcError& e);
/// Lenient: a malformed error object becomes an internal error describing it.
void from_json(const nlohmann::json& j, RpcError& e);

}  // namespace harnessd
