// `harnessd run` is an ACP client of the engine `harnessd serve` runs,
// in-process: the same sessions, store and adapters, joined to the client
// by a pair of connections. The engine records the run; `run` reports only
// after the engine has flushed the store, so the recording is complete on
// disk before `run` returns, whatever became of its stdout. Adapters run
// under their guards as always: if `run` is killed, they die with it.
#include "worker/wrapper.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/utf8.h"
#include "adapters/process.h"
#include "adapters/tree_sweep.h"
#include "harnesses/packaging.h"
#include "harnesses/template.h"
#include "schema/acp.h"
#include "schema/rpc_error.h"
#include "worker/inspect.h"
#include "worker/engine.h"
#include "worker/ledger.h"
#include "worker/store.h"
#include "schema/json_parse.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

void complain(const std::string& command, const std::string& message) {
  std::string line = "harnessd " + command + ": " + message + "\n";
  write_all(2, line);
}

Expected<std::string> read_prompt(const std::string& arg) {
  if (arg != "-") return arg;
  std::stringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

/// The --context file: a JSON object checked like _meta.harnessd.context.
Expected<json> read_context(const std::optional<std::string>& path) {
  if (!path) return json();
  std::ifstream in(*path);
  if (!in) return Error{"cannot read the context file '" + *path + "'"};
  std::stringstream ss;
  ss << in.rdbuf();
  auto parsed = schema::parse_json(ss.str());
  if (!parsed) return Error{"the context file '" + *path + "' is not valid JSON: " + parsed.error().message};
  json context = std::move(*parsed);
  auto checked = schema::check_context("--context", "context", context);
  if (!checked) return Error{checked.error().message};
  return context;
}

Expected<std::string> absolute_dir(const std::optional<std::string>& dir) {
  char buf[PATH_MAX];
  if (!dir) {
    if (!::getcwd(buf, sizeof buf)) return Error{"cannot read the current directory"};
    return std::string(buf);
  }
  if (!::realpath(dir->c_str(), buf)) return Error{"--cwd '" + *dir + "' does not exist"};
  return std::string(buf);
}

/// The option a permission request is answered with under `policy`.
json permission_outcome(const json& params, const std::string& policy) {
  std::string kind;
  if (params.contains("toolCall") && params["toolCall"].is_object()) kind = params["toolCall"].value("kind", "");
  const bool allow = policy == "all" || (policy == "reads" && (kind == "read" || kind == "search" ||
                                                               kind == "fetch" || kind == "think"));
  const json options = params.value("options", json::array());
  auto pick = [&](std::initializer_list<const char*> kinds) -> std::optional<std::string> {
    for (const char* k : kinds) {
      for (const auto& o : options) {
        if (o.is_object() && o.value("kind", json()) == k && o.contains("optionId") && o["optionId"].is_string()) {
          return o["optionId"].get<std::string>();
        }
      }
    }
    return std::nullopt;
  };
  auto chosen = allow ? pick({"allow_once", "allow_always"}) : pick({"reject_once", "reject_always"});
  if (!chosen) return {{"outcome", "cancelled"}};
  return {{"outcome", "selected"}, {"optionId", *chosen}};
}

/// The protocol's words for a refused parameter, in the command line's:
/// "session/new: _meta.harnessd.template: no template named 'x'" becomes
/// "--template: no template named 'x'".
std::string in_cli_words(std::string message) {
  static const std::pair<const char*, const char*> kOptions[] = {
      {"_meta.harnessd.harness", "--harness"},  {"_meta.harnessd.template", "--template"},
      {"_meta.harnessd.mode", "--mode"},        {"_meta.harnessd.name", "--session"},
      {"_meta.harnessd.context", "--context"},  {"_meta.harnessd.timeoutMs", "--timeout"},
      {"_meta.harnessd.summary", "--summary"}};
  for (const char* method : {"session/new: ", "session/prompt: ", "_harnessd/sessions/set_summary: "}) {
    if (message.rfind(method, 0) == 0) message.erase(0, std::strlen(method));
  }
  for (const auto& [field, option] : kOptions) {
    if (message.rfind(field, 0) == 0) return option + message.substr(std::strlen(field));
  }
  return message;
}

/// True when `outcome` selected one of the request's allow options.
bool permission_allowed(const json& params, const json& outcome) {
  const json options = params.value("options", json::array());
  for (const auto& o : options) {
    if (o.is_object() && o.value("optionId", json()) == outcome.value("optionId", json())) {
      const json kind = o.value("kind", json());
      return kind == "allow_once" || kind == "allow_always";
    }
  }
  return false;
}

/// The last `n` non-empty lines of `text`.
std::vector<std::string> last_lines(const std::string& text, std::size_t n) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  }
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(n));
  return lines;
}

/// One `harnessd run`: an ACP client of an in-process engine, the two
/// joined by a pair of connections that hand each other lines on the loop.
class RunClient {
 public:
  RunClient(Loop& loop, const WrapperOptions& options, EngineOptions engine, std::string prompt, json context,
            std::string cwd)
      : loop_(loop),
        options_(options),
        state_dir_(engine.state_dir),
        engine_options_(std::move(engine)),
        prompt_(std::move(prompt)),
        context_(std::move(context)),
        cwd_(std::move(cwd)),
        host_(connection_options("run", true), [this](std::string line) { pass(client_, std::move(line)); }),
        client_(connection_options("engine", false), [this](std::string line) { pass(host_, std::move(line)); }) {
    harness_ = options_.harness.value_or(engine_options_.config.daemon.default_harness);
  }

  int exit_code() const { return exit_code_; }

  void start() {
    engine_ = std::make_unique<Engine>(loop_, host_, std::move(engine_options_));
    client_.on_notification("session/update", [this](const json& p) { on_update(p); });
    client_.on_request("session/request_permission", [this](const json& p, Reply r) {
      json outcome = permission_outcome(p, options_.approve);
      std::string title = p.contains("toolCall") && p["toolCall"].is_object() ? p["toolCall"].value("title", "") : "";
      log::info("permission for '" + title + "': " + outcome.dump());
      if (outcome.value("outcome", "") != "selected" || !permission_allowed(p, outcome)) {
        refused_.push_back(title.empty() ? std::string("a tool call") : title);
      }
      r.result({{"outcome", outcome}});
    });
    for (int signum : {SIGINT, SIGTERM, SIGHUP}) {
      signals_.push_back(std::make_unique<SignalWatch>(loop_, signum, [this](int) { on_signal(); }));
    }
    initialize();
  }

  /// After the loop ran dry: the engine finishes its writes as it goes.
  void stop() {
    engine_.reset();
    client_.close();
    host_.close();
  }

 private:
  static ConnectionOptions connection_options(const char* peer, bool agent_side) {
    ConnectionOptions o;
    o.peer = peer;
    o.require_initialize = agent_side;
    return o;
  }

  // Lines cross on the next loop iteration, never inside the sender's stack.
  void pass(Connection& to, std::string line) {
    if (!line.empty() && line.back() == '\n') line.pop_back();
    loop_.post([&to, line = std::move(line)] {
      if (!to.closed()) to.receive_line(line);
    });
  }

  void initialize() {
    json params = {{"protocolVersion", schema::kProtocolVersion},
                   {"clientCapabilities", json::object()},
                   {"clientInfo", {{"name", "harnessd-run"}, {"version", "1"}}}};
    set_activity("starting the harness");
    start_progress();
    client_.call("initialize", std::move(params), [this](Connection::CallResult r) {
      if (!r) return fail(r.error());
      new_session();
    });
  }

  void new_session() {
    json ours = json::object();
    if (options_.harness) ours["harness"] = *options_.harness;
    if (options_.session) {
      ours["name"] = *options_.session;
      ours["ensure"] = true;
    }
    if (options_.mode) ours["mode"] = *options_.mode;
    if (options_.template_name) ours["template"] = *options_.template_name;
    json params = {{"cwd", cwd_}, {"mcpServers", json::array()}};
    if (!ours.empty()) params["_meta"] = {{"harnessd", ours}};
    client_.call("session/new", std::move(params), [this](Connection::CallResult r) {
      if (!r) return fail(r.error());
      session_id_ = r->value("sessionId", "");
      if (interrupted_) return end(run_exit::kInterrupted);
      if (!options_.summary) return send_prompt();
      client_.call("_harnessd/sessions/set_summary", {{"sessionId", session_id_}, {"summary", *options_.summary}},
                   [this](Connection::CallResult set) {
                     if (!set) return fail(set.error());
                     if (interrupted_) return end(run_exit::kInterrupted);
                     send_prompt();
                   });
    });
  }

  void send_prompt() {
    json ours = json::object();
    if (!context_.is_null()) ours["context"] = context_;
    if (options_.template_name) ours["template"] = *options_.template_name;
    if (options_.timeout_s > 0) ours["timeoutMs"] = static_cast<long long>(std::llround(options_.timeout_s * 1000));
    json params = {{"sessionId", session_id_}, {"prompt", json::array({{{"type", "text"}, {"text", prompt_}}})}};
    if (!ours.empty()) params["_meta"] = {{"harnessd", ours}};
    prompting_ = true;
    set_activity("waiting for the harness");
    client_.call("session/prompt", std::move(params), [this](Connection::CallResult r) {
      prompting_ = false;
      answered(std::move(r));
    });
  }

  void on_update(const json& params) {
    const json update = params.value("update", json::object());
    const std::string kind = update.value("sessionUpdate", "");
    if (kind == "agent_message_chunk") {
      const json content = update.value("content", json::object());
      if (content.value("type", "") != "text" || !content.contains("text") || !content["text"].is_string()) return;
      const std::string& t = content["text"].get_ref<const std::string&>();
      set_activity("answering");
      if (options_.format == "text" && stdout_open_) {
        clear_progress();
        stdout_open_ = write_all(1, t) == 0;
      }
      text_ += t;
    } else if (kind == "usage_update") {
      usage_ = update;
      usage_.erase("sessionUpdate");
    } else if (kind == "tool_call") {
      std::string title = update.contains("title") && update["title"].is_string() ? update["title"].get<std::string>()
                                                                                   : update.value("toolCallId", "");
      set_activity("running " + title);
      if (options_.format == "text") {
        // One line per tool call, on stderr: stdout is the answer alone.
        clear_progress();
        write_all(2, "[tool] " + title + "\n");
      }
    } else if (kind == "tool_call_update") {
      std::string status = update.value("status", json("")).is_string() ? update.value("status", "") : "";
      if (status == "completed" || status == "failed") set_activity("thinking");
    } else if (kind == "agent_thought_chunk") {
      // OpenSpace's bridge says which iteration of how many this is.
      const json meta = update.value("_meta", json::object());
      const json os = meta.is_object() ? meta.value("openspace", json::object()) : json::object();
      if (os.is_object() && os.contains("iteration") && os["iteration"].is_number_integer()) {
        std::string of = os.contains("maxIterations") && os["maxIterations"].is_number_integer()
                             ? "/" + std::to_string(os["maxIterations"].get<long long>())
                             : "";
        set_activity("OpenSpace iteration " + std::to_string(os["iteration"].get<long long>()) + of);
      } else {
        set_activity("thinking");
      }
    } else if (kind == "plan") {
      set_activity("planning");
    }
  }

  // ------------------------------------------------------- progress line
  // On a terminal (or --progress always), one status line on stderr,
  // redrawn in place: elapsed time, harness, what it is doing. Cleared
  // before anything else is written and at the end; never drawn in the
  // middle of an answer line on the same terminal.
  void set_activity(std::string what) { activity_ = std::move(what); }

  void start_progress() {
    const std::string& mode = options_.progress;
    progress_ = mode == "always" || (mode == "auto" && ::isatty(2) == 1);
    if (!progress_) return;
    answer_on_terminal_ = ::isatty(1) == 1 && ::isatty(2) == 1;
    progress_timer_.start(std::chrono::milliseconds(150), [this] { draw_progress(); });
  }

  void draw_progress() {
    if (!progress_) return;
    const bool mid_line = answer_on_terminal_ && !text_.empty() && text_.back() != '\n';
    if (!mid_line) {
      auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%.1f s", took);
      std::string line = "harnessd: " + std::string(seconds) + " \u00b7 " + harness_ + " \u00b7 " + activity_;
      // Never wider than the terminal: a wrapped line cannot be redrawn.
      winsize ws{};
      std::size_t cols = ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 100;
      if (line.size() > cols - 1) line = line.substr(0, utf8::safe_cut(line, cols - 1));
      write_all(2, "\r\x1b[K" + line);
      drawn_ = true;
    }
    progress_timer_.start(std::chrono::milliseconds(250), [this] { draw_progress(); });
  }

  void clear_progress() {
    if (!drawn_) return;
    write_all(2, "\r\x1b[K");
    drawn_ = false;
  }

  void stop_progress() {
    progress_ = false;
    progress_timer_.stop();
    clear_progress();
  }

  void answered(Connection::CallResult r) {
    if (r) {
      stop_reason_ = r->value("stopReason", "");
      json meta = r->contains("_meta") && (*r)["_meta"].is_object() ? (*r)["_meta"].value("harnessd", json::object())
                                                                     : json::object();
      run_id_ = meta.is_object() ? meta.value("runId", "") : "";
      // What the harness's adapter added (OpenSpace: its recording folder,
      // iterations, warnings), without harnessd's own part.
      if (r->contains("_meta") && (*r)["_meta"].is_object()) {
        adapter_meta_ = (*r)["_meta"];
        adapter_meta_.erase("harnessd");
      }
      if (r->contains("usage")) usage_ = (*r)["usage"];
      exit_code_ = stop_reason_ == "end_turn"    ? run_exit::kDone
                   : stop_reason_ == "cancelled" ? run_exit::kInterrupted
                                                 : run_exit::kFailed;
    } else {
      error_ = r.error();
      if (error_->data.is_object()) run_id_ = error_->data.value("runId", "");
      exit_code_ = exit_code_for(*error_);
      if (options_.format != "text") complain("run", error_->message);  // text: in the end line
    }
    // A session without a name has served its purpose.
    if (options_.session || session_id_.empty() || ending_) return end(exit_code_);
    client_.call("session/close", {{"sessionId", session_id_}}, [this](Connection::CallResult) { end(exit_code_); });
  }

  static int exit_code_for(const RpcError& e) {
    if (e.code == rpc_code::kRunTimeout) return run_exit::kTimeout;
    if (e.code == -32602 || e.code == rpc_code::kHarnessUnavailable) return run_exit::kUsage;
    return run_exit::kFailed;
  }

  void fail(const RpcError& e) {
    clear_progress();
    if (options_.format != "text") complain("run", e.message);
    error_ = e;
    end(interrupted_ ? run_exit::kInterrupted : exit_code_for(e));
  }

  /// The engine answers what is still open, stops the adapters and flushes
  /// the store; then the result is reported and the loop runs dry.
  void end(int code) {
    if (ending_) return;
    ending_ = true;
    exit_code_ = code;
    // A session without a name exists for this run alone: it ends closed
    // however the run ends (a second signal comes here mid-turn).
    engine_->shutdown("the run is over", [this] { finished(); }, /*close_sessions=*/!options_.session);
  }

  void on_signal() {
    ++signals_seen_;
    interrupted_ = true;
    if (signals_seen_ == 1 && prompting_) {
      clear_progress();
      set_activity("cancelling");
      complain("run", "interrupted: cancelling the run (again to stop at once)");
      client_.notify("session/cancel", {{"sessionId", session_id_}});
      return;
    }
    // A second signal, or one before the prompt went out: stop now. The
    // prompt is answered cancelled and recorded as the engine shuts down.
    end(run_exit::kInterrupted);
  }

  void finished() {
    if (interrupted_ && exit_code_ != run_exit::kDone) exit_code_ = run_exit::kInterrupted;
    stop_progress();
    report();
    signals_.clear();
  }

  void report() {
    // Everything is on disk now: the run's own result.json is the truth.
    json result;
    std::string recording;
    if (!run_id_.empty()) {
      recording = state_dir_ + "/" + Store::run_dir(run_id_);
      std::ifstream in(recording + "/result.json");
      if (in) {
        std::stringstream text;
        text << in.rdbuf();
        result = schema::parse_or_discard(text.str());
      }
      if (result.is_discarded()) result = json();
    }
    if (options_.format == "text") {
      if (!text_.empty() && text_.back() != '\n' && stdout_open_) stdout_open_ = write_all(1, "\n") == 0;
      write_all(2, end_summary(result, recording));
      return;
    }
    if (options_.format != "json") return;
    json out = {{"version", 1},
                {"exitCode", exit_code_},
                {"state", result.is_object() ? result.value("state", json()) : json()},
                {"stopReason", stop_reason_.empty() ? json() : json(stop_reason_)},
                {"text", text_},
                {"runId", run_id_.empty() ? json() : json(run_id_)},
                {"sessionId", session_id_.empty() ? json() : json(session_id_)},
                {"recording", recording.empty() ? json() : json(recording)},
                {"usage", usage_},
                {"adapterMeta", adapter_meta_.empty() ? json() : adapter_meta_},
                {"error", error_ ? json(*error_) : json()}};
    if (stdout_open_) {
      stdout_open_ = write_all(1, out.dump(-1, ' ', false, json::error_handler_t::replace) + "\n") == 0;
    }
  }

  /// How the run ended, for a person: the harness's last stderr lines on
  /// a failure, then one line with the state, the stop reason, the time,
  /// refused permissions, the error and its install hint, the recording.
  std::string end_summary(const json& result, const std::string& recording) const {
    std::string out;
    std::string state = result.is_object() && result.contains("state") && result["state"].is_string()
                            ? result["state"].get<std::string>()
                            : (error_ ? "failed" : stop_reason_.empty() ? "not run" : stop_reason_);
    if (error_ && error_->data.is_object() && error_->data.contains("stderrTail") &&
        error_->data["stderrTail"].is_string()) {
      for (const auto& line : last_lines(error_->data["stderrTail"].get<std::string>(), 5)) {
        out += "harnessd run: harness stderr: " + line + "\n";
      }
    }
    auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f s", took);
    std::string line = "harnessd run: " + (exit_code_ == run_exit::kUsage && !result.contains("state") ? "refused" : state);
    if (!stop_reason_.empty() && stop_reason_ != state) line += " (" + stop_reason_ + ")";
    if (interrupted_) line += ", interrupted";
    line += " after " + std::string(seconds);
    if (!refused_.empty()) {
      line += "; " + std::to_string(refused_.size()) + " permission request" + (refused_.size() == 1 ? "" : "s") +
              " refused (" + refused_.front() + (refused_.size() > 1 ? ", ..." : "") + "; --approve all allows them)";
    }
    if (error_) {
      line += ": " + in_cli_words(error_->message);
      if (error_->data.is_object() && error_->data.contains("hint") && error_->data["hint"].is_string()) {
        line += "; install: " + error_->data["hint"].get<std::string>();
      }
    }
    // OpenSpace's own record and warning (from its answer, or its failure).
    const json* os = adapter_meta_.contains("openspace") ? &adapter_meta_["openspace"] : nullptr;
    if (!os && error_ && error_->data.is_object() && error_->data.contains("taskId")) os = &error_->data;
    if (os && os->is_object()) {
      if (os->contains("warning") && (*os)["warning"].is_string()) {
        out += "harnessd run: openspace warning: " + (*os)["warning"].get<std::string>() + "\n";
      }
      if (os->contains("recordingDir") && (*os)["recordingDir"].is_string()) {
        line += "; OpenSpace recording " + (*os)["recordingDir"].get<std::string>();
      }
    }
    if (!recording.empty()) line += "; recording " + recording;
    return out + line + "\n";
  }

  Loop& loop_;
  const WrapperOptions& options_;
  std::string state_dir_;
  EngineOptions engine_options_;
  std::string prompt_;
  json context_;
  std::string cwd_;
  Connection host_;    // the engine's side
  Connection client_;  // ours
  std::unique_ptr<Engine> engine_;
  std::vector<std::unique_ptr<SignalWatch>> signals_;
  std::string session_id_;
  std::string run_id_;
  std::string stop_reason_;
  std::string text_;
  json usage_;
  std::optional<RpcError> error_;
  int exit_code_ = run_exit::kFailed;
  int signals_seen_ = 0;
  bool prompting_ = false;
  bool interrupted_ = false;
  bool ending_ = false;
  bool stdout_open_ = true;
  std::vector<std::string> refused_;  // titles of the permission requests refused
  json adapter_meta_ = json::object();  // the answer's _meta without harnessd's
  std::string harness_;                 // for the progress line
  std::string activity_;
  Timer progress_timer_{loop_};
  bool progress_ = false;
  bool drawn_ = false;
  bool answer_on_terminal_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace

std::string unknown_harness_message(const std::string& name, const Config& config) {
  std::string known;
  for (const auto& [n, profile] : config.harnesses) known += (known.empty() ? "" : ", ") + n;
  return "unknown harness '" + name + "' (configured: " + known + ")";
}

void print_refused_run(const std::string& message) {
  json out = {{"version", 1},         {"exitCode", run_exit::kUsage}, {"state", nullptr},
              {"stopReason", nullptr}, {"text", ""},                   {"runId", nullptr},
              {"sessionId", nullptr},  {"recording", nullptr},         {"usage", nullptr},
              {"adapterMeta", nullptr}, {"error", {{"code", -32602}, {"message", message}}}};
  write_all(1, out.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

int run_command(const WrapperOptions& options, const Config& config, const std::string& state_dir) {
  // A reader that goes away (`| head -1`) must not kill the run half-way:
  // output stops, the run and its recording go on to the end.
  signal(SIGPIPE, SIG_IGN);
  // Refused before anything runs; --format json still prints its object.
  auto refuse = [&](const std::string& message) {
    complain("run", message);
    if (options.format == "json") print_refused_run(message);
    return run_exit::kUsage;
  };
  if (options.summary && !options.session) return refuse("--summary needs --session: a summary belongs to a named session");
  if (options.harness && !config.harnesses.count(*options.harness)) {
    return refuse(unknown_harness_message(*options.harness, config));
  }
  auto prompt = read_prompt(options.prompt);
  if (!prompt || prompt->find_first_not_of(" \t\r\n") == std::string::npos) {
    return refuse(prompt ? "the prompt is empty" : prompt.error().message);
  }
  auto context = read_context(options.context_file);
  if (!context) return refuse(context.error().message);
  auto cwd = absolute_dir(options.cwd);
  if (!cwd) return refuse(cwd.error().message);
  const std::string harness = options.harness.value_or(config.daemon.default_harness);
  if (auto profile = config.harnesses.find(harness); profile != config.harnesses.end() &&
                                                     profile->second.kind == "exec" && options.session &&
                                                     !options.mode && profile->second.mode != "oneshot") {
    // exec runs a fresh command per prompt: a persistent session of it
    // remembers nothing unless harnessd packs the earlier turns in.
    complain("run", "harness '" + harness + "' runs a fresh command per prompt and keeps no memory; " +
                        "give --mode oneshot (or mode = \"oneshot\" in its profile) for --session to carry the " +
                        "earlier turns");
  }
  EngineOptions engine;
  engine.config = config;
  engine.guard_exe = adapters::default_guard_exe();
  engine.sweep_orphans = adapters::become_child_subreaper();
  engine.state_dir = state_dir;
  engine.store.sync = config.daemon.fsync;
  int code = run_exit::kFailed;
  {
    Loop loop;
    RunClient client(loop, options, std::move(engine), std::move(*prompt), std::move(*context), std::move(*cwd));
    client.start();
    loop.run();
    client.stop();
    code = client.exit_code();
  }
  return code;
}

int pack_command(const WrapperOptions& options, const Config& config, const std::string& state_dir) {
  auto prompt = read_prompt(options.prompt);
  if (!prompt) {
    complain("pack", prompt.error().message);
    return run_exit::kUsage;
  }
  auto context = read_context(options.context_file);
  if (!context) {
    complain("pack", context.error().message);
    return run_exit::kUsage;
  }
  auto cwd = absolute_dir(options.cwd);
  if (!cwd) {
    complain("pack", cwd.error().message);
    return run_exit::kUsage;
  }
  const std::string harness = options.harness.value_or(config.daemon.default_harness);
  auto profile = config.harnesses.find(harness);
  if (profile == config.harnesses.end()) {
    complain("pack", unknown_harness_message(harness, config));
    return run_exit::kUsage;
  }
  harnesses::PackageInput in;
  in.blocks = json::array({{{"type", "text"}, {"text", *prompt}}});
  in.context = *context;
  in.workspace = *cwd;
  in.harness = harness;
  in.session = options.session.value_or("");
  std::string template_name = options.template_name.value_or(profile->second.template_name);
  // The memory of the named session, as the daemon would pack it: the
  // newest open record of that name.
  if (options.session) {
    std::optional<SessionRecord> found;
    for (const auto& [id, record] : read_session_records(state_dir)) {
      if (record.closed || record.name != options.session) continue;
      if (!found || record.updated_at > found->updated_at) found = record;
    }
    if (found) {
      if (found->mode == "oneshot") in.history = found->history;
      if (found->summary) in.summary = *found->summary;
      if (!options.template_name && found->template_name) template_name = *found->template_name;
    }
  }
  if (template_name.empty()) template_name = "single-shot";
  auto tmpl = harnesses::load_template(template_name, config.daemon.template_dir);
  if (!tmpl) {
    complain("pack", tmpl.error().message);
    return run_exit::kUsage;
  }
  harnesses::Packaged packaged = harnesses::package_prompt(*tmpl, in);
  if (!packaged.text.empty() && packaged.text.back() != '\n') packaged.text += '\n';
  write_all(1, packaged.text);
  return run_exit::kDone;
}

}  // namespace harnessd::worker
