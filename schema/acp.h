// ACP v1 wire types that harnessd decodes, and harnessd's `_meta.harnessd`
// extension fields. Field names keep the protocol's camelCase spelling so
// that code reads like the specification.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "schema/expected.h"
#include "schema/rpc_error.h"

namespace harnessd::schema {

inline constexpr int kProtocolVersion = 1;

/// The longest host name for a session (`_meta.harnessd.hostSession`) kept.
inline constexpr std::size_t kMaxHostSession = 512;

/// `_meta.harnessd` on session requests. Unknown keys are ignored so that a
/// newer host can talk to an older daemon.
struct HarnessdMeta {
  std::optional<std::string> harness;  // harness profile name
  std::optional<std::string> name;     // session name
  std::optional<std::string> hostSession;  // session/new: the host's own name for the session
  bool ensure = false;                 // session/new: return the open session of that name
  std::optional<std::string> lane;     // "interactive", "scheduled" or "background"
  std::optional<std::int64_t> timeoutMs;  // run deadline; 0 means none
  std::optional<std::string> templateName;  // "template": packaging template for the prompt(s)
  std::optional<std::string> mode;          // session/new: "persistent" or "oneshot"
  std::optional<std::string> permissions;   // session/new: a permission mode no looser than the profile's
  /// session/new: "sandbox": {mode?, network?}, a sandbox stricter than the
  /// harness's ("none", "read-only" or "workspace-write"; network a boolean).
  std::optional<std::string> sandboxMode;
  std::optional<bool> sandboxNetwork;
  nlohmann::json context;                   // session/prompt: the packaging context (checked), or null
};

struct InitializeRequest {
  std::int64_t protocolVersion = 0;
  nlohmann::json clientCapabilities = nlohmann::json::object();
  nlohmann::json clientInfo;  // null when absent
};

struct NewSessionRequest {
  std::string cwd;
  nlohmann::json mcpServers = nlohmann::json::array();
  HarnessdMeta harnessd;
};

struct PromptRequest {
  std::string sessionId;
  nlohmann::json prompt;  // array of ContentBlock, each checked by decode
  HarnessdMeta harnessd;
};

/// Params of session/cancel and session/close.
struct SessionRef {
  std::string sessionId;
};

/// Params of session/load and session/resume.
struct LoadSessionRequest {
  std::string sessionId;
  std::string cwd;
  std::optional<nlohmann::json> mcpServers;
};

/// Params of `_harnessd/runs/list`.
struct ListRunsRequest {
  std::optional<std::string> sessionId;
  std::optional<std::string> name;
  std::optional<std::string> since;  // ISO 8601; runs queued at or after it
  std::optional<std::string> state;
  std::int64_t limit = 200;
};

/// Params of `$/cancel_request`.
struct CancelRequest {
  nlohmann::json requestId;  // string or integer
};

struct ListSessionsRequest {
  std::optional<std::string> cwd;
  std::optional<std::string> cursor;
};

/// What a prompt may carry besides text and resource links, from the
/// promptCapabilities harnessd advertises.
struct PromptCapabilities {
  bool image = false;
  bool audio = false;
  bool embeddedContext = false;
};

/// Decoders: each returns the typed request or a -32602 naming the field.
Expected<InitializeRequest, RpcError> decode_initialize(const nlohmann::json& params);
Expected<NewSessionRequest, RpcError> decode_new_session(const nlohmann::json& params);
Expected<PromptRequest, RpcError> decode_prompt(const nlohmann::json& params, const PromptCapabilities& caps);
Expected<SessionRef, RpcError> decode_session_ref(const std::string& method, const nlohmann::json& params);
Expected<ListSessionsRequest, RpcError> decode_list_sessions(const nlohmann::json& params);
Expected<CancelRequest, RpcError> decode_cancel_request(const nlohmann::json& params);
/// `method` is "session/load" (mcpServers required) or "session/resume".
Expected<LoadSessionRequest, RpcError> decode_load_session(const std::string& method, const nlohmann::json& params);
Expected<std::string, RpcError> decode_run_get(const nlohmann::json& params);
/// `{runId}` of `method`.
Expected<std::string, RpcError> decode_run_ref(const std::string& method, const nlohmann::json& params);

/// Params of `_harnessd/sessions/watch`: one of sessionId and name.
struct WatchRequest {
  std::optional<std::string> sessionId;
  std::optional<std::string> name;
  std::uint64_t fromSeq = 1;
};
Expected<WatchRequest, RpcError> decode_watch(const nlohmann::json& params);
/// Params of `_harnessd/sessions/unwatch`: the watch's id (any JSON-RPC id).
Expected<nlohmann::json, RpcError> decode_unwatch(const nlohmann::json& params);
/// Params of `_harnessd/runs/wait`.
struct WaitRequest {
  std::string runId;
  std::optional<std::int64_t> timeoutMs;
};
Expected<WaitRequest, RpcError> decode_wait(const nlohmann::json& params);

struct SetConfigOptionRequest {
  std::string sessionId;
  std::string configId;
  nlohmann::json value;  // a value id (string), or a boolean
};
Expected<SetConfigOptionRequest, RpcError> decode_set_config_option(const nlohmann::json& params);

struct SetModeRequest {
  std::string sessionId;
  std::string modeId;
};
Expected<SetModeRequest, RpcError> decode_set_mode(const nlohmann::json& params);

struct SetSummaryRequest {
  std::string sessionId;
  std::string summary;  // empty clears it
};
Expected<SetSummaryRequest, RpcError> decode_set_summary(const nlohmann::json& params);
Expected<ListRunsRequest, RpcError> decode_list_runs(const nlohmann::json& params);

/// Checks a packaging context (see schema/context.schema.json); `prefix`
/// names where it sits in the params (e.g. "_meta.harnessd.context").
Expected<void, RpcError> check_context(const std::string& method, const std::string& prefix,
                                       const nlohmann::json& context);

/// True for a POSIX absolute path (ACP requires absolute paths everywhere)
/// without NUL or other control characters.
bool is_absolute_path(const std::string& path);

}  // namespace harnessd::schema
