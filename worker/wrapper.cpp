// `harnessd run` is an ACP client of the engine `harnessd serve` runs,
// in-process: the same sessions, store and adapters, joined to the client
// by a pair of connections. The engine records the run; `run` reports only
// after the engine has flushed the store, so the recording is complete on
// disk before `run` returns, whatever became of its stdout. Adapters run
// under their guards as always: if `run` is killed, they die with it.
#include "worker/wrapper.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "acp/line_splitter.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stream.h"
#include "adapters/prestart.h"
#include "adapters/process.h"
#include "adapters/tree_sweep.h"
#include "harnesses/packaging.h"
#include "harnesses/template.h"
#include "schema/acp.h"
#include "schema/rpc_error.h"
#include "worker/inspect.h"
#include "worker/engine.h"
#include "worker/ledger.h"
#include "worker/progress_line.h"
#include "worker/run_report.h"
#include "worker/server_client.h"
#include "worker/session.h"
#include "worker/store.h"
#include "schema/json_parse.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

void complain(const std::string& command, const std::string& message) {
  std::string line = "harnessd " + command + ": " + message + "\n";
  acp::write_all(2, line);
}

std::string seconds_text(double s) {
  std::ostringstream out;
  out << s << " s";
  return out.str();
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

/// One `harnessd run`: an ACP client of an in-process engine, the two
/// joined by a pair of connections that hand each other lines on the loop.
class RunClient {
 public:
  RunClient(acp::Loop& loop, const WrapperOptions& options, EngineOptions engine, std::string prompt, json context,
            std::string cwd)
      : loop_(loop),
        options_(options),
        state_dir_(engine.state_dir),
        engine_options_(std::move(engine)),
        prompt_(std::move(prompt)),
        context_(std::move(context)),
        cwd_(std::move(cwd)),
        host_(connection_options("run", true), [this](std::string line) { pass(client_, std::move(line)); }),
        client_(connection_options("engine", false), [this](std::string line) { to_engine(std::move(line)); }),
        progress_(loop, options_.harness.value_or(engine_options_.config.daemon.default_harness), outcome_.started,
                  [this] { return !outcome_.text.empty() && outcome_.text.back() != '\n'; }) {}

  int exit_code() const { return outcome_.exit_code; }

  /// The engine is the server on this connected socket (before start()).
  void use_server(int fd) { server_fd_ = fd; }

  void start() {
    if (server_fd_ >= 0) {
      start_through_server();
      return;
    }
    // A run in a new session: its adapter starts now, while the engine
    // opens the state directory, and the session's start takes it over
    // (a named session may exist already, with another directory or
    // harness: its adapter starts when the session asks for it).
    if (!options_.session) {
      const Config& config = engine_options_.config;
      auto profile = config.harnesses.find(options_.harness.value_or(config.daemon.default_harness));
      if (profile != config.harnesses.end()) {
        const std::string self =
            engine_options_.self_exe.empty() ? adapters::self_executable() : engine_options_.self_exe;
        prestart_ = std::make_unique<adapters::Prestart>(
            loop_, adapter_process(profile->second, cwd_, self, adapters::current_environment(),
                                   Store::directory(engine_options_.state_dir), engine_options_.guard_exe,
                                   engine_options_.sweep_orphans));
        engine_options_.prestart = prestart_.get();
      }
    }
    engine_options_.warm = false;  // one prompt: nothing to keep warm for
    engine_ = std::make_unique<Engine>(loop_, host_, std::move(engine_options_));
    bind_client();
    initialize();
  }

  void bind_client() {
    client_.on_notification("session/update", [this](const json& p) { on_update(p); });
    client_.on_request("session/request_permission", [this](const json& p, acp::Reply r) {
      json outcome = permission_outcome(p, options_.approve);
      std::string title = p.contains("toolCall") && p["toolCall"].is_object() ? p["toolCall"].value("title", "") : "";
      acp::log::info("permission for '" + title + "': " + outcome.dump());
      if (outcome.value("outcome", "") != "selected" || !permission_allowed(p, outcome)) {
        outcome_.refused.push_back(title.empty() ? std::string("a tool call") : title);
      }
      r.result({{"outcome", outcome}});
    });
    for (int signum : {SIGINT, SIGTERM, SIGHUP}) {
      signals_.push_back(std::make_unique<acp::SignalWatch>(loop_, signum, [this](int) { on_signal(); }));
    }
  }

  /// After the loop ran dry: the engine finishes its writes as it goes.
  void stop() {
    engine_.reset();
    client_.close();
    host_.close();
    close_server();
  }

 private:
  static acp::ConnectionOptions connection_options(const char* peer, bool agent_side) {
    acp::ConnectionOptions o;
    o.peer = peer;
    o.require_initialize = agent_side;
    return o;
  }

  void to_engine(std::string line) {
    if (server_fd_ >= 0) {
      if (server_out_) server_out_->write(std::move(line));
      return;
    }
    pass(host_, std::move(line));
  }

  // The server is the engine: its lines come from the socket.
  void start_through_server() {
    auto reader = acp::open_fd_reader(loop_, server_fd_);
    int out_fd = ::fcntl(server_fd_, F_DUPFD_CLOEXEC, 3);
    auto writer = out_fd >= 0 ? acp::open_fd_writer(loop_, out_fd)
                              : Expected<std::unique_ptr<acp::Writer>>(Error{std::strerror(errno)});
    if (!reader || !writer) {
      server_gone_ = true;
      return fail(RpcError::internal("cannot use the harnessd server's connection: " +
                                     (!reader ? reader.error().message : writer.error().message)));
    }
    server_in_ = std::move(*reader);
    server_out_ = std::move(*writer);
    splitter_ = std::make_unique<acp::LineSplitter>(
        engine_options_.config.daemon.max_line_bytes, [this](std::string_view line) { client_.receive_line(line); },
        [this](std::string_view prefix, std::size_t size) {
          client_.receive_overlong(prefix, size, engine_options_.config.daemon.max_line_bytes);
        });
    server_in_->start([this](std::string_view data) { splitter_->feed(data); },
                      [this](int) {
                        splitter_->finish();
                        loop_.post([this] {
                          server_gone_ = true;
                          client_.fail_pending("the harnessd server closed the connection");
                          if (!ending_) fail(RpcError::internal("the harnessd server closed the connection"));
                          close_server();
                        });
                      });
    bind_client();
    initialize();
  }

  void close_server() {
    server_in_.reset();
    server_out_.reset();
  }

  // Lines cross on the next loop iteration, never inside the sender's stack.
  void pass(acp::Connection& to, std::string line) {
    if (!line.empty() && line.back() == '\n') line.pop_back();
    loop_.post([&to, line = std::move(line)] {
      if (!to.closed()) to.receive_line(line);
    });
  }

  void initialize() {
    json params = {{"protocolVersion", schema::kProtocolVersion},
                   {"clientCapabilities", json::object()},
                   {"clientInfo", {{"name", "harnessd-run"}, {"version", "1"}}}};
    progress_.set_activity("starting the harness");
    progress_.start(options_.progress);
    client_.call("initialize", std::move(params), [this](acp::Connection::CallResult r) {
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
    client_.call("session/new", std::move(params), [this](acp::Connection::CallResult r) {
      if (!r && r.error().code == rpc_code::kSessionBusy && !ending_) return wait_for_session(r.error());
      if (!r) return fail(r.error());
      if (waiting_since_) progress_.set_activity("starting the harness");
      outcome_.session_id = r->value("sessionId", "");
      if (outcome_.interrupted) return end(run_exit::kInterrupted);
      if (!options_.summary) return send_prompt();
      client_.call("_harnessd/sessions/set_summary",
                   {{"sessionId", outcome_.session_id}, {"summary", *options_.summary}},
                   [this](acp::Connection::CallResult set) {
                     if (!set) return fail(set.error());
                     if (outcome_.interrupted) return end(run_exit::kInterrupted);
                     send_prompt();
                   });
    });
  }

  /// Another process serves the named session: ask again, sooner at first
  /// (it may be letting go now), then every 100 ms, until --wait runs out.
  void wait_for_session(RpcError busy) {
    const auto now = std::chrono::steady_clock::now();
    const json owner = busy.data.is_object() ? busy.data.value("owner", json::object()) : json::object();
    const std::string pid = owner.is_object() && owner.contains("pid") ? owner["pid"].dump() : "?";
    if (!waiting_since_) {
      waiting_since_ = now;
      progress_.set_activity("waiting for harnessd pid " + pid + " to let go of the session");
      if (!options_.wait_s || *options_.wait_s > 0) {
        complain("run", "session '" + *options_.session + "' is served by harnessd pid " + pid + "; waiting for it" +
                            (options_.wait_s ? " (up to " + seconds_text(*options_.wait_s) + ")" : ""));
      }
    }
    if (options_.wait_s && now - *waiting_since_ >= std::chrono::duration<double>(*options_.wait_s)) {
      if (*options_.wait_s > 0) busy.message += " (waited " + seconds_text(*options_.wait_s) + ")";
      return fail(busy);
    }
    retry_after_ = std::min(retry_after_ * 2, std::chrono::milliseconds(100));
    wait_timer_.start(retry_after_, [this] {
      if (!ending_) new_session();
    });
  }

  void send_prompt() {
    json ours = json::object();
    if (!context_.is_null()) ours["context"] = context_;
    if (options_.template_name) ours["template"] = *options_.template_name;
    if (options_.timeout_s > 0) ours["timeoutMs"] = static_cast<long long>(std::llround(options_.timeout_s * 1000));
    json params = {{"sessionId", outcome_.session_id},
                   {"prompt", json::array({{{"type", "text"}, {"text", prompt_}}})}};
    if (!ours.empty()) params["_meta"] = {{"harnessd", ours}};
    prompting_ = true;
    progress_.set_activity("waiting for the harness");
    client_.call("session/prompt", std::move(params), [this](acp::Connection::CallResult r) {
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
      progress_.set_activity("answering");
      if (options_.format == "text" && stdout_open_) {
        progress_.clear();
        stdout_open_ = acp::write_all(1, t) == 0;
      }
      outcome_.text += t;
    } else if (kind == "usage_update") {
      outcome_.usage = update;
      outcome_.usage.erase("sessionUpdate");
    } else if (kind == "tool_call") {
      std::string title = update.contains("title") && update["title"].is_string() ? update["title"].get<std::string>()
                                                                                   : update.value("toolCallId", "");
      progress_.set_activity("running " + title);
      if (options_.format == "text") {
        // One line per tool call, on stderr: stdout is the answer alone.
        progress_.clear();
        acp::write_all(2, "[tool] " + title + "\n");
      }
    } else if (kind == "tool_call_update") {
      std::string status = update.value("status", json("")).is_string() ? update.value("status", "") : "";
      if (status == "completed" || status == "failed") progress_.set_activity("thinking");
    } else if (kind == "agent_thought_chunk") {
      // OpenSpace's bridge says which iteration of how many this is.
      const json meta = update.value("_meta", json::object());
      const json os = meta.is_object() ? meta.value("openspace", json::object()) : json::object();
      if (os.is_object() && os.contains("iteration") && os["iteration"].is_number_integer()) {
        std::string of = os.contains("maxIterations") && os["maxIterations"].is_number_integer()
                             ? "/" + std::to_string(os["maxIterations"].get<long long>())
                             : "";
        progress_.set_activity("OpenSpace iteration " + std::to_string(os["iteration"].get<long long>()) + of);
      } else {
        progress_.set_activity("thinking");
      }
    } else if (kind == "plan") {
      progress_.set_activity("planning");
    }
  }

  void answered(acp::Connection::CallResult r) {
    if (reported_) return;  // the run was reported already; its outcome stays
    if (r) {
      outcome_.stop_reason = r->value("stopReason", "");
      json meta = r->contains("_meta") && (*r)["_meta"].is_object() ? (*r)["_meta"].value("harnessd", json::object())
                                                                     : json::object();
      outcome_.run_id = meta.is_object() ? meta.value("runId", "") : "";
      // What the harness's adapter added (OpenSpace: its recording folder,
      // iterations, warnings), without harnessd's own part.
      if (r->contains("_meta") && (*r)["_meta"].is_object()) {
        outcome_.adapter_meta = (*r)["_meta"];
        outcome_.adapter_meta.erase("harnessd");
      }
      // The run's usage as harnessd recorded it, else the adapter's own.
      if (meta.is_object() && meta.contains("usage")) {
        outcome_.usage = meta["usage"];
      } else if (r->contains("usage")) {
        outcome_.usage = (*r)["usage"];
      }
      outcome_.exit_code = outcome_.stop_reason == "end_turn"    ? run_exit::kDone
                           : outcome_.stop_reason == "cancelled" ? run_exit::kInterrupted
                                                                 : run_exit::kFailed;
    } else {
      outcome_.error = r.error();
      if (outcome_.error->data.is_object()) outcome_.run_id = outcome_.error->data.value("runId", "");
      outcome_.exit_code = exit_code_for(*outcome_.error);
      if (options_.format != "text") complain("run", outcome_.error->message);  // text: in the end line
    }
    // A session without a name has served its purpose: the shutdown closes
    // it, with the same record a session/close would leave, one round trip
    // to the store sooner.
    end(outcome_.exit_code);
  }

  static int exit_code_for(const RpcError& e) {
    if (e.code == rpc_code::kRunTimeout) return run_exit::kTimeout;
    if (e.code == -32602 || e.code == rpc_code::kHarnessUnavailable || e.code == rpc_code::kBudgetExceeded) {
      return run_exit::kUsage;
    }
    return run_exit::kFailed;
  }

  void fail(const RpcError& e) {
    if (reported_) return;
    progress_.clear();
    if (options_.format != "text") complain("run", e.message);
    outcome_.error = e;
    end(outcome_.interrupted ? run_exit::kInterrupted : exit_code_for(e));
  }

  /// The engine answers what is still open, stops the adapters and flushes
  /// the store; then the result is reported and the loop runs dry.
  void end(int code) {
    if (ending_) return;
    ending_ = true;
    outcome_.exit_code = code;
    if (prestart_) prestart_->discard();  // not taken: the run ended before its adapter started
    if (server_fd_ >= 0) return end_through_server();
    // A session without a name exists for this run alone: it ends closed
    // however the run ends (a second signal comes here mid-turn).
    // Reported on the next turn of the loop, after the answers the engine
    // sent as it closed: they cross on the loop too.
    engine_->shutdown(
        "the run is over", [this] { loop_.post([this] { finished(); }); }, /*close_sessions=*/!options_.session);
  }

  // Through a server: a session without a name is closed (which also ends
  // a turn still running); a named one stays for the next run.
  void end_through_server() {
    auto done = [this] {
      auto report = [this] { loop_.post([this] { finished(); }); };
      if (server_out_) {
        server_out_->flush([this, report] {
          close_server();
          report();
        });
      } else {
        report();
      }
    };
    if (options_.session || outcome_.session_id.empty() || server_gone_) return done();
    client_.call("session/close", {{"sessionId", outcome_.session_id}}, [done](acp::Connection::CallResult) { done(); });
  }

  void on_signal() {
    ++signals_seen_;
    outcome_.interrupted = true;
    if (signals_seen_ == 1 && prompting_) {
      progress_.clear();
      progress_.set_activity("cancelling");
      complain("run", "interrupted: cancelling the run (again to stop at once)");
      client_.notify("session/cancel", {{"sessionId", outcome_.session_id}});
      return;
    }
    // A second signal, or one before the prompt went out: stop now. The
    // prompt is answered cancelled and recorded as the engine shuts down.
    end(run_exit::kInterrupted);
  }

  void finished() {
    reported_ = true;
    if (outcome_.interrupted && outcome_.exit_code != run_exit::kDone) outcome_.exit_code = run_exit::kInterrupted;
    progress_.stop();
    report_run(outcome_, options_.format, state_dir_, stdout_open_);
    signals_.clear();
  }

  acp::Loop& loop_;
  const WrapperOptions& options_;
  std::string state_dir_;
  EngineOptions engine_options_;
  std::string prompt_;
  json context_;
  std::string cwd_;
  acp::Connection host_;    // the engine's side
  acp::Connection client_;  // ours
  std::unique_ptr<adapters::Prestart> prestart_;  // declared before engine_: it outlives the engine
  std::unique_ptr<Engine> engine_;
  // Through a server (use_server): its connection instead of an engine.
  int server_fd_ = -1;
  bool server_gone_ = false;
  std::unique_ptr<acp::Reader> server_in_;
  std::unique_ptr<acp::Writer> server_out_;
  std::unique_ptr<acp::LineSplitter> splitter_;
  std::vector<std::unique_ptr<acp::SignalWatch>> signals_;
  RunOutcome outcome_;  // what the run came to, filled in as it goes
  int signals_seen_ = 0;
  bool prompting_ = false;
  bool ending_ = false;
  bool reported_ = false;
  // --session NAME served by another process: since when this one waits.
  std::optional<std::chrono::steady_clock::time_point> waiting_since_;
  std::chrono::milliseconds retry_after_{1};
  acp::Timer wait_timer_{loop_};
  bool stdout_open_ = true;
  ProgressLine progress_;
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
  acp::write_all(1, out.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
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
  if (options.wait_s && !options.session) return refuse("--wait needs --session: only a named session can be busy");
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
  engine.store.retention = config.daemon.retention;
  // A server of the state directory serves the run when one listens (or
  // with --shared, one started now); else the run has an engine of its own.
  const std::string address = server_address(config, state_dir);
  std::optional<int> server;
  if (options.shared) {
    auto fd = connect_or_start_server(address, options.config_path, state_dir, shared_idle_exit(config));
    if (!fd) return refuse(fd.error().message);
    server = *fd;
  } else {
    server = connect_server(address);
  }
  int code = run_exit::kFailed;
  {
    acp::Loop loop;
    RunClient client(loop, options, std::move(engine), std::move(*prompt), std::move(*context), std::move(*cwd));
    if (server) client.use_server(*server);
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
  acp::write_all(1, packaged.text);
  return run_exit::kDone;
}

}  // namespace harnessd::worker
