// Claude Code headless: `claude -p --input-format stream-json
// --output-format stream-json --verbose --permission-prompt-tool stdio`.
// A user line starts a turn and a `result` line ends it; `is_error` means
// failure whatever the subtype; can_use_tool control requests become
// session/request_permission; cancel writes the interrupt control request
// and the process stays up for the next turn. The ACP session id is the
// claude session id (a UUID), so a restarted bridge resumes with --resume.
#include "harnesses/claude_code/claude_bridge.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <set>

#include "acp/log.h"
#include "harnesses/harness_process.h"
#include "schema/json_parse.h"

namespace harnessd::harnesses {

using nlohmann::json;

namespace {

constexpr std::chrono::milliseconds kCloseGrace{2000};

json text_update(const char* kind, const std::string& text, const json& message_id) {
  json u = {{"sessionUpdate", kind}, {"content", {{"type", "text"}, {"text", text}}}};
  if (message_id.is_string()) u["messageId"] = message_id;
  return u;
}

// ACP tool kinds for Claude's tool names.
std::string tool_kind(const std::string& name) {
  static const std::map<std::string, std::string> kKinds = {
      {"Bash", "execute"},  {"BashOutput", "execute"}, {"KillShell", "execute"}, {"Read", "read"},
      {"Write", "edit"},    {"Edit", "edit"},          {"MultiEdit", "edit"},    {"NotebookEdit", "edit"},
      {"Glob", "search"},   {"Grep", "search"},        {"LS", "search"},         {"WebFetch", "fetch"},
      {"WebSearch", "fetch"}, {"Task", "think"},       {"Agent", "think"},       {"ExitPlanMode", "switch_mode"}};
  auto it = kKinds.find(name);
  return it == kKinds.end() ? "other" : it->second;
}

std::string tool_title(const std::string& name, const json& input) {
  if (!input.is_object()) return name;
  if (input.contains("command") && input["command"].is_string()) return input["command"].get<std::string>();
  if (input.contains("file_path") && input["file_path"].is_string()) {
    return name + " " + input["file_path"].get<std::string>();
  }
  if (input.contains("pattern") && input["pattern"].is_string()) return name + " " + input["pattern"].get<std::string>();
  if (input.contains("url") && input["url"].is_string()) return name + " " + input["url"].get<std::string>();
  if (input.contains("description") && input["description"].is_string()) {
    return name + ": " + input["description"].get<std::string>();
  }
  return name;
}

json tool_locations(const json& input) {
  json out = json::array();
  if (input.is_object() && input.contains("file_path") && input["file_path"].is_string()) {
    out.push_back({{"path", input["file_path"]}});
  }
  return out;
}

// The text of a tool_result's content (a string or a list of blocks).
std::string result_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const auto& b : content) {
      if (b.is_object() && b.value("type", "") == "text") out += b.value("text", "");
    }
  }
  return out;
}

// ACP prompt blocks as Claude message content.
json claude_content(const json& blocks) {
  json out = json::array();
  for (const auto& b : blocks) {
    std::string type = b.value("type", "");
    if (type == "text") {
      out.push_back({{"type", "text"}, {"text", b.value("text", "")}});
    } else if (type == "resource_link") {
      out.push_back({{"type", "text"}, {"text", "Reference: " + b.value("name", "") + " <" + b.value("uri", "") + ">"}});
    } else if (type == "resource" && b.contains("resource")) {
      const json& r = b["resource"];
      if (r.contains("text")) {
        out.push_back({{"type", "text"}, {"text", "<context ref=\"" + r.value("uri", "") + "\">\n" +
                                                      r.value("text", "") + "\n</context>"}});
      } else {
        out.push_back({{"type", "text"}, {"text", "Reference: <" + r.value("uri", "") + ">"}});
      }
    }
  }
  return out;
}

// ACP stdio MCP servers as Claude's --mcp-config JSON.
std::string mcp_config(const json& servers) {
  json config = {{"mcpServers", json::object()}};
  for (const auto& s : servers) {
    if (!s.is_object() || !s.contains("command") || s.contains("type")) continue;  // stdio only
    json env = json::object();
    const json env_list = s.value("env", json::array());
    for (const auto& e : env_list) {
      if (e.is_object()) env[e.value("name", "")] = e.value("value", "");
    }
    config["mcpServers"][s.value("name", "server")] = {
        {"command", s["command"]}, {"args", s.value("args", json::array())}, {"env", env}};
  }
  return config.dump();
}

std::string plan_status(const std::string& s) {
  if (s == "completed") return "completed";
  if (s == "in_progress") return "in_progress";
  return "pending";
}

// Where claude keeps a session's conversation: any project folder of its
// config directory (it names them after the cwd).
bool conversation_exists(const std::string& id) {
  const char* dir = std::getenv("CLAUDE_CONFIG_DIR");
  const char* home = std::getenv("HOME");
  std::string projects = std::string(dir && *dir ? dir : std::string(home ? home : "") + "/.claude") + "/projects";
  DIR* d = ::opendir(projects.c_str());
  if (!d) return false;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    struct stat st {};
    if (::stat((projects + "/" + e->d_name + "/" + id + ".jsonl").c_str(), &st) == 0) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

// The model and permission-mode choices a session offers. Claude takes
// these aliases (and full model names) for --model; "default" leaves the
// choice to claude. A model set in the profile is offered as well.
json select_option(const std::string& id, const std::string& name, const std::string& category,
                   const std::string& current, std::vector<std::pair<std::string, std::string>> choices) {
  bool listed = false;
  for (const auto& [value, label] : choices) listed = listed || value == current;
  if (!listed) choices.emplace_back(current, current);
  json options = json::array();
  for (const auto& [value, label] : choices) options.push_back({{"value", value}, {"name", label}});
  return {{"id", id}, {"name", name}, {"category", category}, {"type", "select"}, {"currentValue", current},
          {"options", options}};
}

class ClaudeSession final : public BridgeSession {
 public:
  ClaudeSession(acp::Loop& loop, const ClaudeOptions& options, const BridgeSessionSpec& spec)
      : loop_(loop),
        options_(options),
        spec_(spec),
        resume_(spec.resume),
        interrupt_timer_(loop),
        model_(options.model.empty() ? "default" : options.model),
        mode_(options.permission_mode.empty() ? "default" : options.permission_mode) {}

  json config_options() const override { return claude_config_options(model_, mode_); }

  void set_config_option(const std::string& id, const std::string& value, OptionDone done) override {
    std::string& slot = id == "model" ? model_ : mode_;
    if (slot == value) return done({});
    if (!process_) {
      // Applied as a flag when the process starts (also after a resume).
      slot = value;
      return done({});
    }
    // A running claude changes in place, the way Claude's own SDK does it.
    std::string request_id = "harnessd-option-" + std::to_string(++controls_);
    json request = id == "model" ? json{{"subtype", "set_model"}} : json{{"subtype", "set_permission_mode"}, {"mode", value}};
    if (id == "model" && value != "default") request["model"] = value;
    pending_options_.emplace(request_id, PendingOption{&slot, value, std::move(done)});
    process_->write(json{{"type", "control_request"}, {"request_id", request_id}, {"request", request}}.dump() + "\n");
  }

  void prompt(const json& blocks, std::shared_ptr<BridgeTurn> turn) override {
    turn_ = std::move(turn);
    tool_names_.clear();
    streamed_.clear();
    if (!process_) {
      if (auto started = start(); !started) {
        turn_->fail(started.error());
        turn_.reset();
        return;
      }
    }
    json line = {{"type", "user"},
                 {"message", {{"role", "user"}, {"content", claude_content(blocks)}}},
                 {"parent_tool_use_id", nullptr},
                 {"session_id", ""}};
    process_->write(line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  }

  void cancel() override {
    if (!process_ || !turn_) return;
    // Claude ends the turn with a result line and keeps the process; if it
    // does not, the process goes (the next prompt resumes the session).
    json interrupt = {{"type", "control_request"},
                      {"request_id", "harnessd-interrupt-" + std::to_string(++interrupts_)},
                      {"request", {{"subtype", "interrupt"}}}};
    process_->write(interrupt.dump() + "\n");
    interrupt_timer_.start(options_.interrupt_grace, [this] {
      if (turn_ && process_) {
        acp::log::warn("claude-code bridge: claude did not end the interrupted turn; stopping it");
        process_->terminate(kCloseGrace);
      }
    });
  }

  void close(std::function<void()> done) override { process_.close(kCloseGrace, std::move(done)); }

 private:
  Expected<void, RpcError> start() {
    std::vector<std::string> argv = options_.command;
    // Partial messages give token-by-token text; the full assistant message
    // that follows then only adds what was not streamed (tool calls).
    for (const char* a : {"-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
                          "--include-partial-messages", "--permission-prompt-tool", "stdio"}) {
      argv.emplace_back(a);
    }
    // The first process of a session fixes claude's session id; every
    // later one (after a crash, a restart) resumes it.
    argv.emplace_back(resume_ ? "--resume" : "--session-id");
    argv.push_back(spec_.id);
    if (model_ != "default") argv.insert(argv.end(), {"--model", model_});
    if (mode_ != "default") argv.insert(argv.end(), {"--permission-mode", mode_});
    if (spec_.mcp_servers.is_array() && !spec_.mcp_servers.empty()) {
      argv.insert(argv.end(), {"--mcp-config", mcp_config(spec_.mcp_servers)});
    }
    adapters::ProcessSpec spec;
    spec.argv = argv;
    spec.cwd = spec_.cwd;
    std::vector<std::string> defaults;
    // No telemetry or update checks, and a bounded retry loop (claude's own
    // default retries for minutes).
    if (!std::getenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")) {
      defaults.push_back("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1");
    }
    if (!std::getenv("CLAUDE_CODE_MAX_RETRIES")) defaults.push_back("CLAUDE_CODE_MAX_RETRIES=2");
    spec.env = environment_with(defaults);
    spec.guard_exe = adapters::default_guard_exe();
    HarnessProcess::Callbacks cb;
    cb.on_line = [this](std::string_view line) { on_line(line); };
    cb.on_exit = [this](const adapters::ExitStatus& status) { on_exit(status); };
    auto process = HarnessProcess::start(loop_, spec, std::move(cb));
    if (!process) {
      return RpcError{rpc_code::kHarnessUnavailable, "cannot start claude: " + process.error().message,
                      {{"command", options_.command}}};
    }
    process_.hold(std::move(*process));
    resume_ = true;
    return {};
  }

  void on_line(std::string_view line) {
    json e = schema::parse_or_discard(line);
    if (e.is_discarded() || !e.is_object()) {
      acp::log::debug("claude-code bridge: not JSON from claude: " + std::string(line.substr(0, 200)));
      return;
    }
    std::string type = e.value("type", "");
    if (type == "stream_event") {
      on_stream_event(e);
    } else if (type == "assistant") {
      on_assistant(e);
    } else if (type == "user") {
      on_user(e);
    } else if (type == "control_request") {
      on_control_request(e);
    } else if (type == "control_response") {
      on_control_response(e);
    } else if (type == "result") {
      on_result(e);
    } else if (type == "system" && e.value("subtype", "") == "api_retry") {
      acp::log::warn("claude-code bridge: API error " + e.value("error_status", json()).dump() +
                     ", retrying (attempt " + e.value("attempt", json()).dump() + ")");
    }
  }

  void on_stream_event(const json& e) {
    if (!turn_ || !e.contains("event")) return;
    const json& event = e["event"];
    std::string type = event.value("type", "");
    if (type == "message_start" && event.contains("message")) {
      streaming_id_ = event["message"].value("id", json());
    } else if (type == "content_block_delta" && event.contains("delta")) {
      const json& delta = event["delta"];
      std::string kind = delta.value("type", "");
      if (kind == "text_delta") {
        turn_->update(text_update("agent_message_chunk", delta.value("text", ""), streaming_id_));
        streamed_.insert(streaming_id_.is_string() ? streaming_id_.get<std::string>() : "");
      } else if (kind == "thinking_delta") {
        turn_->update(text_update("agent_thought_chunk", delta.value("thinking", ""), streaming_id_));
        streamed_.insert(streaming_id_.is_string() ? streaming_id_.get<std::string>() : "");
      }
    }
  }

  void on_assistant(const json& e) {
    if (!turn_) return;
    const json& message = e.contains("message") ? e["message"] : json::object();
    json id = message.value("id", json());
    // Text already streamed as deltas is not sent twice.
    const bool streamed = id.is_string() && streamed_.count(id.get<std::string>());
    const json content = message.value("content", json::array());
    for (const auto& block : content) {
      std::string type = block.value("type", "");
      if (type == "text") {
        if (!streamed) turn_->update(text_update("agent_message_chunk", block.value("text", ""), id));
      } else if (type == "thinking") {
        if (!streamed) turn_->update(text_update("agent_thought_chunk", block.value("thinking", ""), id));
      } else if (type == "tool_use") {
        std::string name = block.value("name", "");
        std::string tool_id = block.value("id", "");
        json input = block.value("input", json::object());
        tool_names_[tool_id] = name;
        if (name == "TodoWrite") {
          // Claude's todo list is ACP's plan: always the whole list.
          json entries = json::array();
          const json todos = input.value("todos", json::array());
          for (const auto& t : todos) {
            entries.push_back({{"content", t.value("content", "")},
                               {"priority", "medium"},
                               {"status", plan_status(t.value("status", ""))}});
          }
          turn_->update({{"sessionUpdate", "plan"}, {"entries", entries}});
          continue;
        }
        turn_->update({{"sessionUpdate", "tool_call"},
                       {"toolCallId", tool_id},
                       {"title", tool_title(name, input)},
                       {"kind", tool_kind(name)},
                       {"status", "pending"},
                       {"locations", tool_locations(input)},
                       {"rawInput", input}});
      }
    }
  }

  void on_user(const json& e) {
    if (!turn_ || !e.contains("message")) return;
    const json content = e["message"].value("content", json());
    if (!content.is_array()) return;
    for (const auto& block : content) {
      if (block.value("type", "") != "tool_result") continue;
      std::string tool_id = block.value("tool_use_id", "");
      if (tool_names_[tool_id] == "TodoWrite") continue;
      bool failed = block.value("is_error", false);
      std::string text = result_text(block.value("content", json()));
      turn_->update({{"sessionUpdate", "tool_call_update"},
                     {"toolCallId", tool_id},
                     {"status", failed ? "failed" : "completed"},
                     {"content", json::array({{{"type", "content"}, {"content", {{"type", "text"}, {"text", text}}}}})},
                     {"rawOutput", e.value("tool_use_result", json(text))}});
    }
  }

  void on_control_request(const json& e) {
    std::string request_id = e.value("request_id", "");
    const json request = e.value("request", json::object());
    if (request.value("subtype", "") != "can_use_tool") {
      answer_control(request_id, {{"subtype", "error"}, {"request_id", request_id}, {"error", "not supported"}});
      return;
    }
    json input = request.value("input", json::object());
    std::string name = request.value("tool_name", "");
    if (!turn_) {
      answer_control(request_id, {{"subtype", "success"},
                                  {"request_id", request_id},
                                  {"response", {{"behavior", "deny"}, {"message", "No turn is running."}}}});
      return;
    }
    json tool_call = {{"toolCallId", request.value("tool_use_id", request_id)},
                      {"title", tool_title(name, input)},
                      {"kind", tool_kind(name)},
                      {"status", "pending"},
                      {"rawInput", input}};
    json options = json::array({{{"optionId", "allow"}, {"name", "Allow"}, {"kind", "allow_once"}},
                                {{"optionId", "reject"}, {"name", "Reject"}, {"kind", "reject_once"}}});
    turn_->ask_permission(tool_call, options, [this, request_id, input](std::optional<std::string> choice) {
      json response = choice && *choice == "allow"
                          ? json{{"behavior", "allow"}, {"updatedInput", input}}
                          : json{{"behavior", "deny"}, {"message", "The user did not allow this tool call."}};
      answer_control(request_id, {{"subtype", "success"}, {"request_id", request_id}, {"response", response}});
    });
  }

  // Claude's answer to one of our control requests (an option change).
  void on_control_response(const json& e) {
    const json response = e.value("response", json::object());
    auto it = pending_options_.find(response.value("request_id", ""));
    if (it == pending_options_.end()) return;
    PendingOption pending = std::move(it->second);
    pending_options_.erase(it);
    if (response.value("subtype", "") != "success") {
      std::string why = response.contains("error") ? response["error"].dump() : "no reason given";
      return pending.done(RpcError{rpc_code::kAdapterFailed, "claude refused the change: " + why, {}});
    }
    *pending.slot = pending.value;
    pending.done({});
  }

  void answer_control(const std::string& request_id, json response) {
    (void)request_id;
    if (!process_) return;
    process_->write(json{{"type", "control_response"}, {"response", std::move(response)}}.dump() + "\n");
  }

  void on_result(const json& e) {
    interrupt_timer_.stop();
    if (!turn_) return;
    auto turn = std::move(turn_);
    // Usage, for hosts that show it: context tokens used and the window.
    const json usage = e.value("usage", json::object());
    long long used = 0;
    for (const char* k : {"input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens"}) {
      if (usage.contains(k) && usage[k].is_number_integer()) used += usage[k].get<long long>();
    }
    long long size = 200000;
    const json model_usage = e.value("modelUsage", json::object());
    for (const auto& [model, mu] : model_usage.items()) {
      if (mu.is_object() && mu.contains("contextWindow") && mu["contextWindow"].is_number_integer()) {
        size = mu["contextWindow"];
      }
    }
    json update = {{"sessionUpdate", "usage_update"}, {"used", used}, {"size", size}};
    if (e.contains("total_cost_usd") && e["total_cost_usd"].is_number()) {
      update["cost"] = {{"amount", e["total_cost_usd"]}, {"currency", "USD"}};
    }
    turn->update(update);
    json meta = {{"claudeCode",
                  {{"sessionId", e.value("session_id", spec_.id)},
                   {"numTurns", e.value("num_turns", 0)},
                   {"durationMs", e.value("duration_ms", 0)}}}};
    std::string subtype = e.value("subtype", "");
    if (turn->cancel_requested()) {
      turn->finish("cancelled", meta);
    } else if (subtype == "error_max_turns") {
      turn->finish("max_turn_requests", meta);
    } else if (e.value("is_error", false)) {
      // is_error is the failure signal; the subtype may still say success.
      std::string message = e.contains("result") && e["result"].is_string() ? e["result"].get<std::string>() : "";
      if (message.empty() && e.contains("errors") && e["errors"].is_array() && !e["errors"].empty()) {
        message = e["errors"][0].is_string() ? e["errors"][0].get<std::string>() : e["errors"][0].dump();
      }
      turn->fail(RpcError{rpc_code::kAdapterFailed, "claude failed: " + (message.empty() ? subtype : message),
                          {{"subtype", subtype},
                           {"terminalReason", e.value("terminal_reason", json())},
                           {"apiErrorStatus", e.value("api_error_status", json())}}});
    } else if (e.value("stop_reason", "") == "max_tokens") {
      turn->finish("max_tokens", meta);
    } else {
      turn->finish("end_turn", meta);
    }
  }

  void on_exit(const adapters::ExitStatus& status) {
    interrupt_timer_.stop();
    if (turn_) {
      auto turn = std::move(turn_);
      turn->fail(RpcError{rpc_code::kAdapterFailed, "claude exited during the turn (" + status.describe() + ")",
                          {{"stderrTail", process_->stderr_tail()}}});
    }
    // Changes claude never answered take effect as flags on the next start.
    auto pending = std::move(pending_options_);
    pending_options_.clear();
    for (auto& [request_id, option] : pending) {
      *option.slot = option.value;
      option.done({});
    }
    process_.release();
  }

  acp::Loop& loop_;
  const ClaudeOptions& options_;
  BridgeSessionSpec spec_;
  bool resume_;
  ProcessSlot process_{loop_};
  std::shared_ptr<BridgeTurn> turn_;
  std::map<std::string, std::string> tool_names_;
  json streaming_id_;
  std::set<std::string> streamed_;
  acp::Timer interrupt_timer_;
  int interrupts_ = 0;
  std::string model_;  // "default" or a name for --model
  std::string mode_;   // "default" or a --permission-mode
  struct PendingOption {
    std::string* slot;
    std::string value;
    OptionDone done;
  };
  std::map<std::string, PendingOption> pending_options_;
  int controls_ = 0;
};

}  // namespace

json claude_config_options(const std::string& model, const std::string& mode) {
  return json::array(
      {select_option("model", "Model", "model", model.empty() ? "default" : model,
                     {{"default", "Default"}, {"sonnet", "Sonnet"}, {"opus", "Opus"}, {"haiku", "Haiku"}}),
       select_option("mode", "Permission mode", "mode", mode.empty() ? "default" : mode,
                     {{"default", "Ask before acting"},
                      {"acceptEdits", "Accept edits"},
                      {"plan", "Plan only"},
                      {"bypassPermissions", "Bypass permissions"}})});
}

Bridge make_claude_bridge(acp::Loop& loop, ClaudeOptions given) {
  return make_bridge("claude-code", true, std::move(given),
                     [&loop](const ClaudeOptions& options, const BridgeSessionSpec& spec)
                         -> Expected<std::unique_ptr<BridgeSession>, RpcError> {
                       if (spec.resume && !conversation_exists(spec.id)) {
                         RpcError e = RpcError::session_not_found(spec.id);
                         e.message = "claude has no conversation " + spec.id;
                         return e;
                       }
                       return std::unique_ptr<BridgeSession>(new ClaudeSession(loop, options, spec));
                     });
}

}  // namespace harnessd::harnesses
