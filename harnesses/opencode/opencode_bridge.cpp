// OpenCode's `run --format json`: step_start, text, reasoning, tool_use,
// step_finish and error events, each emitted when its part is finished.
// The process's exit ends the turn (0: done; else the error event says
// why). `run` ignores SIGINT, so a cancel stops the process group. The
// OpenCode session id (ses_...) arrives in every event and is kept in the
// bridge's state, so a restarted bridge continues the same session.
#include "harnesses/opencode/opencode_bridge.h"

#include "acp/log.h"
#include "harnesses/bridge_state.h"
#include "harnesses/harness_process.h"
#include "schema/json_parse.h"

namespace harnessd::harnesses {

using nlohmann::json;

namespace {

std::string tool_kind(const std::string& tool) {
  if (tool == "bash") return "execute";
  if (tool == "read") return "read";
  if (tool == "edit" || tool == "write" || tool == "patch") return "edit";
  if (tool == "glob" || tool == "grep" || tool == "list") return "search";
  if (tool == "webfetch") return "fetch";
  if (tool == "task") return "think";
  return "other";
}

class OpencodeSession final : public BridgeSession {
 public:
  OpencodeSession(acp::Loop& loop, const OpencodeOptions& options, const BridgeSessionSpec& spec,
                  std::string opencode_session)
      : loop_(loop), options_(options), spec_(spec), opencode_session_(std::move(opencode_session)) {}

  void prompt(const json& blocks, std::shared_ptr<BridgeTurn> turn) override {
    turn_ = std::move(turn);
    error_.reset();
    tokens_ = nullptr;
    std::vector<std::string> argv = options_.command;
    // --title spares OpenCode a model call that names the session.
    argv.insert(argv.end(), {"run", "--format", "json", "--title", "harnessd " + spec_.id.substr(0, 8)});
    if (!opencode_session_.empty()) argv.insert(argv.end(), {"-s", opencode_session_});
    if (!options_.model.empty()) argv.insert(argv.end(), {"-m", options_.model});
    if (!options_.agent.empty()) argv.insert(argv.end(), {"--agent", options_.agent});
    adapters::ProcessSpec spec;
    spec.argv = argv;
    spec.cwd = spec_.cwd;
    spec.env = environment_with({"OPENCODE_DISABLE_AUTOUPDATE=1"});
    spec.guard_exe = adapters::default_guard_exe();
    HarnessProcess::Callbacks cb;
    cb.on_line = [this](std::string_view line) { on_line(line); };
    cb.on_exit = [this](const adapters::ExitStatus& status) { on_exit(status); };
    auto process = HarnessProcess::start(loop_, spec, std::move(cb));
    if (!process) {
      turn_->fail(RpcError{rpc_code::kHarnessUnavailable, "cannot start opencode: " + process.error().message,
                           {{"command", options_.command}}});
      turn_.reset();
      return;
    }
    process_.hold(std::move(*process));
    // The prompt goes on stdin: arguments with spaces reach the model quoted.
    process_->write(prompt_text(blocks));
    process_->close_stdin();
  }

  void cancel() override { process_.terminate(options_.kill_grace); }

  void close(std::function<void()> done) override { process_.close(options_.kill_grace, std::move(done)); }

 private:
  void on_line(std::string_view line) {
    json e = schema::parse_or_discard(line);
    if (e.is_discarded() || !e.is_object()) return;
    if (e.contains("sessionID") && e["sessionID"].is_string()) remember_session(e["sessionID"]);
    if (!turn_) return;
    std::string type = e.value("type", "");
    const json part = e.value("part", json::object());
    if (type == "text" || type == "reasoning") {
      json update = {{"sessionUpdate", type == "text" ? "agent_message_chunk" : "agent_thought_chunk"},
                     {"content", {{"type", "text"}, {"text", part.value("text", "")}}}};
      if (part.contains("messageID")) update["messageId"] = part["messageID"];
      turn_->update(update);
    } else if (type == "tool_use") {
      // Emitted when the tool has finished: the call and its end at once.
      const json state = part.value("state", json::object());
      std::string tool = part.value("tool", "tool");
      std::string id = part.value("callID", part.value("id", ""));
      std::string title = state.contains("title") && state["title"].is_string() ? state["title"].get<std::string>() : tool;
      turn_->update({{"sessionUpdate", "tool_call"},
                     {"toolCallId", id},
                     {"title", title},
                     {"kind", tool_kind(tool)},
                     {"status", "in_progress"},
                     {"rawInput", state.value("input", json::object())}});
      bool failed = state.value("status", "") == "error";
      std::string output = state.contains("output") && state["output"].is_string() ? state["output"].get<std::string>()
                           : state.contains("error") && state["error"].is_string() ? state["error"].get<std::string>()
                                                                                    : "";
      turn_->update({{"sessionUpdate", "tool_call_update"},
                     {"toolCallId", id},
                     {"status", failed ? "failed" : "completed"},
                     {"content", json::array({{{"type", "content"}, {"content", {{"type", "text"}, {"text", output}}}}})},
                     {"rawOutput", {{"output", output}, {"metadata", state.value("metadata", json::object())}}}});
    } else if (type == "step_finish") {
      tokens_ = part.value("tokens", json());
    } else if (type == "error") {
      const json error = e.value("error", json::object());
      std::string message;
      if (error.contains("data") && error["data"].is_object() && error["data"].contains("message")) {
        message = error["data"]["message"].is_string() ? error["data"]["message"].get<std::string>() : "";
      }
      error_ = error.value("name", "Error") + (message.empty() ? "" : ": " + message);
    }
  }

  void remember_session(const std::string& id) {
    if (id == opencode_session_) return;
    opencode_session_ = id;
    if (!save_bridge_state("opencode", spec_.id, {{"opencodeSession", id}, {"cwd", spec_.cwd}})) {
      acp::log::warn("opencode bridge: cannot save the session state in " + bridge_state_dir("opencode"));
    }
  }

  void on_exit(const adapters::ExitStatus& status) {
    if (turn_) {
      auto turn = std::move(turn_);
      json meta = {{"opencode", {{"sessionId", opencode_session_}, {"tokens", tokens_}}}};
      if (status.signal == 0 && status.code == 0 && !error_) {
        turn->finish("end_turn", meta);
      } else {
        std::string why = error_ ? *error_ : "opencode exited (" + status.describe() + ")";
        turn->fail(RpcError{rpc_code::kAdapterFailed, "opencode failed: " + why,
                            exit_error_data(status, process_->stderr_tail())});
      }
    }
    process_.release();
  }

  acp::Loop& loop_;
  const OpencodeOptions& options_;
  BridgeSessionSpec spec_;
  std::string opencode_session_;
  ProcessSlot process_{loop_};
  std::shared_ptr<BridgeTurn> turn_;
  std::optional<std::string> error_;
  json tokens_;
};

}  // namespace

Bridge make_opencode_bridge(acp::Loop& loop, OpencodeOptions given) {
  return make_bridge("opencode", true, std::move(given),
                     [&loop](const OpencodeOptions& options, const BridgeSessionSpec& spec)
                         -> Expected<std::unique_ptr<BridgeSession>, RpcError> {
                       std::string opencode_session;
                       if (spec.resume) {
                         auto state = load_bridge_state("opencode", spec.id);
                         if (!state || !state->contains("opencodeSession")) {
                           RpcError e = RpcError::session_not_found(spec.id);
                           e.message = "no OpenCode session is known for " + spec.id;
                           return e;
                         }
                         opencode_session = (*state)["opencodeSession"].get<std::string>();
                       }
                       return std::unique_ptr<BridgeSession>(new OpencodeSession(loop, options, spec, opencode_session));
                     });
}

}  // namespace harnessd::harnesses
