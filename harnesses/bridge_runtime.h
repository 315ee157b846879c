// The runtime a built-in bridge runs inside: `harnessd adapter <bridge>` is
// an ACP agent on stdio that drives one harness CLI. The runtime speaks
// ACP (initialize, sessions, one turn at a time per session, cancel,
// permissions); a Bridge only turns its harness's events into updates.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "schema/expected.h"
#include "schema/rpc_error.h"

namespace harnessd::harnesses {

/// One prompt turn of a bridge session. Everything runs on the loop thread.
/// After finish() or fail(), updates are dropped and a second end is
/// ignored, so a bridge cannot break "all updates, then one answer".
class BridgeTurn {
 public:
  BridgeTurn(acp::Connection& client, std::string session_id, acp::Reply reply);
  ~BridgeTurn();
  BridgeTurn(const BridgeTurn&) = delete;
  BridgeTurn& operator=(const BridgeTurn&) = delete;

  /// Sends one session/update (the `update` object, e.g. an
  /// agent_message_chunk).
  void update(nlohmann::json update);
  /// Asks the client: session/request_permission. `done` gets the chosen
  /// option id, or nothing when the client cancelled or could not answer.
  void ask_permission(nlohmann::json tool_call, nlohmann::json options,
                      acp::UniqueFunction<void(std::optional<std::string>)> done);
  /// Ends the turn with a stop reason. After cancel() it is always
  /// "cancelled", whatever the bridge says.
  void finish(const std::string& stop_reason, nlohmann::json meta = nullptr);
  void fail(const RpcError& error);

  bool cancel_requested() const { return cancel_requested_; }
  bool ended() const { return ended_; }
  /// Called by the runtime on session/cancel; the bridge's own cancel hook
  /// runs after.
  void mark_cancelled() { cancel_requested_ = true; }
  const std::string& session_id() const { return session_id_; }

  /// Called once when the turn ends (the runtime starts the next prompt).
  std::function<void()> on_end;

 private:
  void end();

  acp::Connection& client_;
  std::string session_id_;
  acp::Reply reply_;
  bool cancel_requested_ = false;
  bool ended_ = false;
};

/// One ACP session of a bridge.
class BridgeSession {
 public:
  virtual ~BridgeSession() = default;
  /// Runs one prompt (ContentBlock array). The runtime never runs two turns
  /// of one session at once. The turn must end (finish or fail) eventually.
  virtual void prompt(const nlohmann::json& blocks, std::shared_ptr<BridgeTurn> turn) = 0;
  /// session/cancel while a turn runs: stop the harness's work; the turn
  /// then ends (finish with any reason reads as cancelled).
  virtual void cancel() = 0;
  /// The session goes away (session/close, end of input): stop everything.
  /// `done` runs when the harness's processes are gone.
  virtual void close(std::function<void()> done) = 0;

  /// The session's configuration options (ACP SessionConfigOption objects,
  /// `select` only), sent with session/new and session/resume and after
  /// every change. Empty: the harness has none.
  virtual nlohmann::json config_options() const { return nlohmann::json::array(); }
  using OptionDone = acp::UniqueFunction<void(Expected<void, RpcError>)>;
  /// session/set_config_option with an option id and value the runtime has
  /// checked against config_options(). `done` once the harness took it.
  virtual void set_config_option(const std::string& id, const std::string& value, OptionDone done);
};

struct BridgeSessionSpec {
  std::string id;  // the ACP session id (a UUID)
  std::string cwd;
  nlohmann::json mcp_servers = nlohmann::json::array();
  bool resume = false;  // session/resume of an id from an earlier process
};

/// A harness bridge: its name, whether it resumes, and how it makes
/// sessions. Each bridge is one of these, filled in by its make function.
struct Bridge {
  using Open = std::function<Expected<std::unique_ptr<BridgeSession>, RpcError>(const BridgeSessionSpec&)>;
  /// "claude-code", "opencode", "openspace", "exec".
  std::string name;
  /// Whether session/resume works (the harness keeps its own sessions).
  bool can_resume = false;
  /// Makes a session. For a resume, the bridge checks that it can continue
  /// the harness's session and answers -32002 when it cannot.
  Open open_session;
};

/// A Bridge whose sessions share `options`: `open(options, spec)` makes
/// each one (sessions may keep a reference to the options).
template <class Options, class Open>
Bridge make_bridge(std::string name, bool can_resume, Options options, Open open) {
  auto shared = std::make_shared<const Options>(std::move(options));
  return {std::move(name), can_resume,
          [shared, open = std::move(open)](const BridgeSessionSpec& spec)
              -> Expected<std::unique_ptr<BridgeSession>, RpcError> { return open(*shared, spec); }};
}

struct BridgeRunOptions {
  int in_fd = 0;
  int out_fd = 1;
};

/// Serves ACP on stdio with `bridge` until the input ends, then closes every
/// session and returns the exit code (0).
int run_bridge(acp::Loop& loop, Bridge& bridge, const BridgeRunOptions& options);

/// A random RFC 4122 version 4 UUID (Claude Code wants UUID session ids).
std::string make_uuid();

/// The text of a prompt: its text blocks, joined by blank lines; resource
/// links and embedded resources are listed by URI after them.
std::string prompt_text(const nlohmann::json& blocks);

}  // namespace harnessd::harnesses
