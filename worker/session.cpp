// The turn machinery of one session. References are to the ACP v1 spec
// ("prompt-turn", "cancellation") and to DESIGN.md "Semantics that must hold".
#include "worker/session.h"

#include <set>

#include "acp/files.h"
#include "acp/log.h"
#include "acp/utf8.h"
#include "harnessd_version.h"
#include "harnesses/packaging.h"
#include "schema/acp.h"
#include "schema/json_parse.h"
#include "schema/session_update.h"
#include "worker/turn_outcome.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Of a turn's answer, this many bytes are kept for a oneshot session's history.
constexpr std::size_t kMaxAnswerBytes = 32000;

// Text chunks longer than this are relayed as several chunks, so that no
// line we write comes near acpx's 8 MiB line limit.
constexpr std::size_t kMaxChunkText = 1u << 20;

// Updates that belong to a prompt turn. Outside a turn they would break
// clients that treat "updates after the answer" as a protocol violation.
const std::set<std::string, std::less<>> kTurnUpdates = {
    "user_message_chunk", "agent_message_chunk", "agent_thought_chunk", "tool_call", "tool_call_update", "plan"};
const std::set<std::string, std::less<>> kChunkUpdates = {"user_message_chunk", "agent_message_chunk",
                                                          "agent_thought_chunk"};
// Requests an adapter may make of its client, which harnessd forwards to the host.
const char* const kForwarded[] = {"session/request_permission", "fs/read_text_file", "fs/write_text_file",
                                  "terminal/create",            "terminal/output",   "terminal/wait_for_exit",
                                  "terminal/kill",              "terminal/release",  "elicitation/create"};

bool flag(const json& caps, const char* a, const char* b = nullptr) {
  auto it = caps.find(a);
  if (it == caps.end()) return false;
  if (!b) return it->is_boolean() ? it->get<bool>() : it->is_object();
  if (!it->is_object()) return false;
  auto jt = it->find(b);
  return jt != it->end() && jt->is_boolean() && jt->get<bool>();
}

}  // namespace

void answer_cancelled(QueuedPrompt prompt, UniqueFunction<void()> then) {
  TurnFacts facts;
  facts.run_id = prompt.run_id;
  facts.session_id = prompt.ledger.sessionId;
  facts.ended_at = iso_time();
  TurnOutcome o = cancelled_outcome("removed before it started", facts);
  // The terminal line is written before the host hears of it.
  prompt.recorder->finish(o.event, o.fields, o.result_file,
                          [reply = std::move(prompt.reply), run_id = prompt.run_id, answer = std::move(*o.answer),
                           then = std::move(then)](Expected<void> r) mutable {
                            if (!r) log::error("run " + run_id + ": " + r.error().message);
                            reply.result(std::move(answer));
                            if (then) then();
                          },
                          /*failure_fails=*/false);
}

Session::Session(Runtime& rt, SessionInit init, std::function<void(Session&)> on_idle)
    : rt_(rt), init_(std::move(init)), on_idle_(std::move(on_idle)), updated_at_(std::chrono::system_clock::now()) {
  restore_id_ = init_.restore_adapter_session;
  if (init_.created_at.empty()) init_.created_at = iso_time();
  adapter_defaults_ = init_.adapter_defaults;
  expect_adapter_options();
}

void Session::expect_adapter_options() {
  // What the harness's adapter offered last time, with this session's
  // choices as current values; the adapter's own list replaces it once it runs.
  auto known = rt_.harness_options.find(init_.profile.name);
  adapter_options_ = known != rt_.harness_options.end() ? known->second : json::array();
  for (auto& option : adapter_options_) {
    if (!option.is_object()) continue;
    auto choice = init_.config_choices.find(option.value("id", ""));
    if (choice != init_.config_choices.end()) option["currentValue"] = *choice;
  }
}

Session::~Session() {
  close();
  *alive_ = false;
}

json Session::record() const {
  SessionRecord r;
  r.session_id = init_.id;
  r.name = init_.name;
  r.host_session = init_.host_session;
  r.harness = init_.profile.name;
  r.cwd = init_.cwd;
  r.mode = init_.mode;
  if (!init_.template_name.empty()) r.template_name = init_.template_name;
  if (!init_.summary.empty()) r.summary = init_.summary;
  r.history = init_.history;
  r.mcp_servers = init_.mcp_servers;
  // The adapter's session of this lifetime, else the one it is resuming,
  // else the one of the earlier lifetime.
  for (const std::string* id : {&adapter_session_id_, &restore_id_, &init_.restore_adapter_session}) {
    if (id->empty()) continue;
    r.adapter_session_id = *id;
    break;
  }
  r.run_timeout_ms = init_.run_timeout.count();
  r.lane = queue::lane_name(init_.lane);
  r.config_options = init_.config_choices;
  r.adapter_options = adapter_defaults_;
  r.closed = closed_;
  r.daemon = rt_.store.instance();
  r.created_at = init_.created_at;
  r.updated_at = iso_time();
  return r.to_json();
}

void Session::save_record() {
  std::string id = init_.id;
  rt_.store.save_session(record(), [id](Expected<void> r) {
    if (!r) log::warn("session " + id + ": its record could not be saved: " + r.error().message);
  });
}

void Session::set_summary(std::string summary) {
  init_.summary = std::move(summary);
  save_record();
}

json Session::config_options() const {
  json choices = json::array();
  for (const auto& [name, profile] : rt_.config.harnesses) {
    json choice = {{"value", name}, {"name", name}};
    if (!profile.description.empty()) choice["description"] = profile.description;
    choices.push_back(std::move(choice));
  }
  json out = json::array({{{"id", "harness"},
                           {"name", "Harness"},
                           {"description", "The harness that runs this session's prompts; fixed at the first prompt"},
                           {"category", "_harness"},
                           {"type", "select"},
                           {"currentValue", init_.profile.name},
                           {"options", std::move(choices)}}});
  for (const auto& option : adapter_options_) {
    if (option.is_object() && option.value("id", "") != "harness") out.push_back(option);
  }
  return out;
}

Expected<void, RpcError> Session::set_harness(const harnesses::HarnessProfile& profile) {
  if (prompted_ || (adapter_ && !early_unused_) || init_.harness_fixed) {
    RpcError e = RpcError::invalid_params(
        "session/set_config_option: the harness of session " + init_.id + " can change only before its first prompt");
    e.data = {{"method", "session/set_config_option"}, {"field", "configId"}};
    return e;
  }
  // The mode and template follow the harness unless the host chose its own.
  if (init_.mode == init_.profile.mode) init_.mode = profile.mode;
  if (init_.template_name == init_.profile.template_name) init_.template_name = profile.template_name;
  if (adapter_) {
    // The adapter session/new started to learn the options has done nothing
    // else: it goes, and nothing of it is resumed by the new harness.
    retire_adapter();
    restore_id_.clear();
    adapter_defaults_ = nullptr;
  }
  init_.profile = profile;
  expect_adapter_options();
  save_record();
  return {};
}

void Session::set_adapter_option(const std::string& config_id, const json& value,
                                 UniqueFunction<void(Expected<json, RpcError>)> done) {
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive, config_id, value, done = std::move(done)](Expected<void, RpcError> ready) mutable {
    if (alive.expired()) return;
    if (!ready) return done(ready.error());
    adapters::AdapterLink* raw = adapter_.get();
    json params = {{"sessionId", adapter_session_id_}, {"configId", config_id}, {"value", value}};
    raw->rpc().call("session/set_config_option", std::move(params),
                    [this, alive, raw, config_id, value, done = std::move(done)](Connection::CallResult r) mutable {
                      if (alive.expired()) return;
                      if (!r) return done(r.error());
                      if (adapter_.get() == raw) take_adapter_options(*r, false);
                      init_.config_choices[config_id] = value;
                      save_record();
                      done(config_options());
                    });
  });
}

void Session::set_mode(const std::string& mode_id, UniqueFunction<void(Expected<void, RpcError>)> done) {
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive, mode_id, done = std::move(done)](Expected<void, RpcError> ready) mutable {
    if (alive.expired()) return;
    if (!ready) return done(ready.error());
    for (const auto& option : adapter_options_) {
      if (!option.is_object() || option.value("category", "") != "mode") continue;
      set_adapter_option(option.value("id", ""), mode_id,
                         [done = std::move(done)](Expected<json, RpcError> r) mutable {
                           if (!r) return done(r.error());
                           done({});
                         });
      return;
    }
    json params = {{"sessionId", adapter_session_id_}, {"modeId", mode_id}};
    adapter_->rpc().call("session/set_mode", std::move(params),
                         [alive, done = std::move(done)](Connection::CallResult r) mutable {
                           if (alive.expired()) return;
                           if (!r) return done(r.error());
                           done({});
                         });
  });
}

void Session::take_adapter_options(const json& answer, bool announce) {
  if (!answer.is_object() || !answer.contains("configOptions") || !answer["configOptions"].is_array()) return;
  if (answer["configOptions"] == adapter_options_) return;
  adapter_options_ = answer["configOptions"];
  // session/new listed what was known of the harness before the adapter
  // ran; the host hears of the adapter's own list when it differs.
  if (announce && !early_answer_) {
    send_update({{"sessionId", init_.id},
                 {"update", {{"sessionUpdate", "config_option_update"}, {"configOptions", config_options()}}}});
  }
}

void Session::reapply_choices(adapters::AdapterLink* raw) {
  for (const auto& [config_id, value] : init_.config_choices.items()) {
    json params = {{"sessionId", adapter_session_id_}, {"configId", config_id}, {"value", value}};
    raw->rpc().call("session/set_config_option", std::move(params),
                    [this, raw, id = config_id](Connection::CallResult r) {
                      if (adapter_.get() != raw) return;
                      if (r) {
                        take_adapter_options(*r, true);
                      } else {
                        log::warn("session " + init_.id + ": the new adapter refused option '" + id +
                                  "' chosen earlier: " + r.error().message);
                      }
                    });
  }
}

void Session::record_transcript(std::string line) {
  rt_.store.append(Store::transcript_file(init_.id), std::move(line));
}

int Session::adapter_pid() const { return adapter_ && !adapter_->exited() ? adapter_->pid() : 0; }

const char* Session::state() const { return turn_ ? queue::turn_state_name(turn_->control.state()) : "idle"; }

json Session::active_request_id() const { return turn_ ? turn_->prompt.ledger.requestId : json(); }

std::optional<std::string> Session::active_run_id() const {
  if (!turn_) return std::nullopt;
  return turn_->prompt.run_id;
}

void Session::start_turn(QueuedPrompt prompt) {
  updated_at_ = std::chrono::system_clock::now();
  prompted_ = true;
  turn_ = std::make_unique<Turn>(next_generation_++);
  turn_->prompt = std::move(prompt);
  turn_->control.start();
  turn_->started_at = iso_time();
  const std::uint64_t generation = turn_->control.generation();
  // The deadline counts from the turn's start, not from when it was queued.
  if (turn_->prompt.timeout.count() > 0) {
    turn_->deadline = std::make_unique<Timer>(rt_.loop);
    turn_->deadline->start(turn_->prompt.timeout, [this, generation] {
      if (turn_ && turn_->control.generation() == generation) stop_turn(queue::StopReason::kTimeout);
    });
  }
  // The user's prompt goes into the transcript as the updates a replay
  // shows (ACP session/load replays the user's messages this way).
  for (const auto& block : turn_->prompt.blocks) {
    record_transcript(to_line({{"jsonrpc", "2.0"},
                               {"method", "session/update"},
                               {"params", {{"sessionId", init_.id},
                                           {"update", {{"sessionUpdate", "user_message_chunk"}, {"content", block}}}}}}));
  }
  // The run folder was usually prepared while the previous turn ran; the
  // turn waits until it is on disk before it does anything else.
  turn_->recorder = std::move(turn_->prompt.recorder);
  turn_->task = harnesses::prompt_task(turn_->prompt.blocks);
  if (turn_->prompt.packaging) {
    // Packaged now, not when queued: the history must include the turn
    // that just ended. The adapter gets one text block; the files it lists
    // (large resources, images) are in the run folder before it starts.
    harnesses::PackageInput in;
    in.blocks = turn_->prompt.blocks;
    in.context = turn_->prompt.context;
    if (oneshot()) in.history = init_.history;
    in.summary = init_.summary;
    in.workspace = init_.cwd;
    in.harness = init_.profile.name;
    in.session = init_.name.value_or(init_.id);
    in.run_dir = rt_.store.path(Store::run_dir(turn_->prompt.run_id));
    harnesses::Packaged packaged = harnesses::package_prompt(*turn_->prompt.packaging, in);
    turn_->recorder->prepare(turn_->prompt.request, packaged.text);
    for (auto& file : packaged.files) turn_->recorder->add_file(file.rel, std::move(file.bytes));
    turn_->blocks = json::array({{{"type", "text"}, {"text", std::move(packaged.text)}}});
  } else {
    turn_->recorder->prepare(turn_->prompt.request, render_prompt_markdown(turn_->prompt.blocks));
    turn_->blocks = turn_->prompt.blocks;
  }
  std::string request_line = to_line(turn_->prompt.request);
  request_line.pop_back();
  turn_->recorder->event("host>harnessd", request_line);
  std::weak_ptr<bool> alive = alive_;
  turn_->recorder->open([this, alive, generation](Expected<void> opened) {
    if (alive.expired() || closed_) return;
    turn_recording_ready(generation, std::move(opened));
  });
}

void Session::turn_recording_ready(std::uint64_t generation, Expected<void> opened) {
  if (!turn_ || turn_->control.generation() != generation) return;
  if (!opened) {
    turn_->error = opened.error().message;
    turn_->control.request_stop(queue::StopReason::kError);
    finish_turn(generation, RpcError::internal(turn_->error));
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  turn_->recorder->on_failure([this, alive, generation](const std::string& why) {
    if (alive.expired() || closed_ || !turn_ || turn_->control.generation() != generation) return;
    log::error("session " + init_.id + ": run " + turn_->prompt.run_id + " cannot be recorded: " + why);
    turn_->error = why;
    stop_turn(queue::StopReason::kError);
  });
  ensure_adapter([this, generation](Expected<void, RpcError> ready) {
    if (!turn_ || turn_->control.generation() != generation) return;
    if (!ready) {
      finish_turn(generation, ready.error());
      return;
    }
    send_prompt();
  });
}

// ---------------------------------------------------------------- adapter start-up

void Session::start_adapter_early(UniqueFunction<void(json)> done) {
  early_answer_ = std::move(done);
  std::weak_ptr<bool> alive = alive_;
  ensure_adapter([this, alive](Expected<void, RpcError> ready) {
    if (alive.expired()) return;
    if (!ready) log::warn("session " + init_.id + ": " + ready.error().message + "; the first prompt starts it again");
    answer_early();
  });
  early_unused_ = true;
}

void Session::answer_early() {
  auto done = std::move(early_answer_);
  early_answer_ = nullptr;
  if (done) done(config_options());
}

void Session::ensure_adapter(Ready ready) {
  early_unused_ = false;
  if (adapter_ && adapter_->exited()) retire_adapter();
  if (adapter_ && adapter_ready_) {
    ready({});
    return;
  }
  adapter_waiters_.push_back(std::move(ready));
  if (adapter_) return;  // already starting

  const auto& d = rt_.config.daemon;
  adapters::AdapterOptions options;
  options.process.argv = harnesses::adapter_argv(init_.profile, rt_.self_exe);
  options.process.cwd = init_.cwd;
  options.process.env = harnesses::adapter_environment(init_.profile, rt_.parent_env);
  // Bridges keep their own small state (e.g. OpenCode's session ids) here.
  options.process.env.push_back("HARNESSD_STATE_DIR=" + rt_.store.dir());
  options.process.guard_exe = rt_.guard_exe;
  options.process.sweep_orphans = rt_.sweep_orphans;
  options.label = "session " + init_.id;
  options.max_line_bytes = d.max_line_bytes;
  options.stderr_tail_bytes = d.stderr_tail_bytes;
  options.output_gate = rt_.adapter_output_gate;
  options.input_gate = rt_.host_input_gate;
  options.input_high_water = d.queue_high_water;
  options.input_low_water = d.queue_low_water;
  auto link = adapters::AdapterLink::start(rt_.loop, std::move(options), nullptr);
  if (!link) {
    RpcError e{rpc_code::kHarnessUnavailable,
               "harness '" + init_.profile.name + "' cannot start: " + link.error().message,
               {{"harness", init_.profile.name}, {"command", init_.profile.command}}};
    if (!init_.profile.install_hint.empty()) e.data["hint"] = init_.profile.install_hint;
    adapter_started(e);
    return;
  }
  adapter_ = std::move(*link);
  adapters::AdapterLink* raw = adapter_.get();
  raw->set_on_exit([this, raw](const adapters::ExitStatus& status) { on_adapter_exit(raw, status); });
  raw->set_on_output_closed([this, raw] { on_adapter_output_closed(raw); });
  bind_adapter(*raw);

  start_timer_ = std::make_unique<Timer>(rt_.loop);
  start_timer_->start(d.start_timeout, [this, raw] {
    if (adapter_.get() != raw || adapter_ready_) return;
    auto seconds = std::to_string(rt_.config.daemon.start_timeout.count() / 1000.0);
    RpcError e = adapter_failure("did not finish start-up within " + seconds.substr(0, seconds.find('.') + 2) + " s");
    log::warn("session " + init_.id + ": " + e.message);
    abort_start(e);
  });

  // ACP "Initialization": offer the adapter exactly what the host offered,
  // so it never calls a client method nobody can serve.
  json init = {{"protocolVersion", schema::kProtocolVersion},
               {"clientCapabilities", adapter_client_capabilities()},
               {"clientInfo", {{"name", "harnessd"}, {"version", HARNESSD_VERSION}}}};
  raw->rpc().call("initialize", std::move(init), [this, raw](Connection::CallResult r) {
    if (adapter_.get() != raw) return;
    if (!r) return adapter_started(adapter_failure("failed to initialize: " + r.error().message));
    json version = r->is_object() ? r->value("protocolVersion", json()) : json();
    if (version != schema::kProtocolVersion) {
      return adapter_started(adapter_failure("speaks ACP protocol version " + version.dump() + ", not 1"));
    }
    if (restore_id_.empty()) return create_adapter_session(raw);
    // A session of an earlier lifetime: resume the adapter's own session
    // when it can, else load it (its replay is not relayed: the host gets
    // harnessd's transcript), else say that it starts afresh.
    const json caps = r->value("agentCapabilities", json::object());
    const bool can_resume = caps.is_object() && caps.contains("sessionCapabilities") &&
                            caps["sessionCapabilities"].is_object() &&
                            caps["sessionCapabilities"].contains("resume") &&
                            caps["sessionCapabilities"]["resume"].is_object();
    const bool can_load = caps.is_object() && caps.value("loadSession", false) == true;
    std::string method = can_resume ? "session/resume" : can_load ? "session/load" : "";
    std::string old_id = restore_id_;
    restore_id_.clear();
    if (method.empty()) {
      restore_outcome_ = {{"restored", false},
                          {"reason", "the adapter supports neither session/resume nor session/load, so it starts a "
                                     "new session of its own; the transcript is still harnessd's"}};
      return create_adapter_session(raw);
    }
    suppress_updates_ = method == "session/load";
    json params = {{"sessionId", old_id}, {"cwd", init_.cwd}, {"mcpServers", init_.mcp_servers}};
    raw->rpc().call(method, std::move(params), [this, raw, method, old_id](Connection::CallResult r2) {
      if (adapter_.get() != raw) return;
      suppress_updates_ = false;
      if (!r2) {
        restore_outcome_ = {{"restored", false},
                            {"method", method},
                            {"reason", "the adapter refused " + method + ": " + r2.error().message}};
        log::warn("session " + init_.id + ": " + restore_outcome_["reason"].get<std::string>());
        return create_adapter_session(raw);
      }
      adapter_session_id_ = old_id;
      take_adapter_options(*r2, init_.config_choices.empty());
      reapply_choices(raw);
      adapter_ready_ = true;
      start_timer_.reset();
      restore_outcome_ = {{"restored", true}, {"method", method}, {"adapterSessionId", old_id}};
      log::info("session " + init_.id + ": adapter session " + old_id + " restored with " + method);
      adapter_started({});
    });
  });
}

void Session::create_adapter_session(adapters::AdapterLink* raw) {
  json params = {{"cwd", init_.cwd}, {"mcpServers", init_.mcp_servers}};
  raw->rpc().call("session/new", std::move(params), [this, raw](Connection::CallResult r2) {
    if (adapter_.get() != raw) return;
    if (!r2) return adapter_started(adapter_failure("failed to create a session: " + r2.error().message));
    json sid = r2->is_object() ? r2->value("sessionId", json()) : json();
    if (!sid.is_string() || sid.get<std::string>().empty()) {
      return adapter_started(adapter_failure("answered session/new without a sessionId"));
    }
    adapter_session_id_ = sid.get<std::string>();
    const bool offers = r2->contains("configOptions") && (*r2)["configOptions"].is_array();
    adapter_defaults_ = offers ? (*r2)["configOptions"] : json::array();
    rt_.harness_options[init_.profile.name] = adapter_defaults_;
    // With choices to apply again, the host hears of the list once they are.
    take_adapter_options(*r2, init_.config_choices.empty());
    reapply_choices(raw);
    adapter_ready_ = true;
    start_timer_.reset();
    log::info("session " + init_.id + ": adapter session " + adapter_session_id_ + " ready");
    save_record();  // the adapter's id is what a later lifetime resumes
    adapter_started({});
  });
}

void Session::adapter_started(Expected<void, RpcError> result) {
  if (!result) retire_adapter();
  auto waiters = std::move(adapter_waiters_);
  adapter_waiters_.clear();
  for (auto& w : waiters) {
    if (result) {
      w({});
    } else {
      w(result.error());
    }
  }
}

void Session::abort_start(const RpcError& error) {
  // Take the waiters first: retiring fails the adapter's pending calls, and
  // their callbacks must not be the ones to report.
  auto waiters = std::move(adapter_waiters_);
  adapter_waiters_.clear();
  retire_adapter();
  for (auto& w : waiters) w(error);
}

RpcError Session::adapter_failure(const std::string& what) const {
  RpcError e{rpc_code::kAdapterFailed, "", {{"harness", init_.profile.name}}};
  if (adapter_ && adapter_->exited()) {
    const auto& status = *adapter_->exit_status();
    e.message = "adapter of harness '" + init_.profile.name + "' exited (" + status.describe() + ")";
    if (status.signal) {
      e.data["signal"] = status.signal;
    } else {
      e.data["exitCode"] = status.code;
    }
  } else if (adapter_ && adapter_->output_closed()) {
    e.message = "adapter of harness '" + init_.profile.name + "' closed its output but kept running";
  } else {
    e.message = "adapter of harness '" + init_.profile.name + "' " + what;
  }
  if (adapter_) e.data["stderrTail"] = adapter_->stderr_tail();
  return e;
}

void Session::on_adapter_exit(adapters::AdapterLink* link, const adapters::ExitStatus& status) {
  if (adapter_.get() != link) return;
  log::info("session " + init_.id + ": adapter gone (" + status.describe() + "); the next prompt starts a new one");
  retire_adapter();
}

void Session::on_adapter_output_closed(adapters::AdapterLink* link) {
  // Its pending calls have failed (the running turn with them); nothing
  // more can come from it, so stop it like an adapter that exited, through
  // the kill ladder (issue 11).
  if (adapter_.get() != link) return;
  log::info("session " + init_.id + ": stopping the adapter; the next prompt starts a new one");
  retire_adapter();
}

void Session::retire_adapter(std::chrono::milliseconds eof_grace) {
  // The next adapter of this session continues the adapter's own session
  // (session/resume or session/load) when it can.
  // A oneshot session starts every adapter afresh.
  if (!closed_ && !oneshot() && !adapter_session_id_.empty()) restore_id_ = adapter_session_id_;
  start_timer_.reset();
  adapter_ready_ = false;
  adapter_session_id_.clear();
  prompt_in_flight_ = false;
  if (adapter_) rt_.reaper.adopt(std::move(adapter_), rt_.config.daemon.kill_grace, eof_grace);
}

// ---------------------------------------------------------------- the turn

void Session::send_prompt() {
  const std::uint64_t generation = turn_->control.generation();
  const bool latched = turn_->control.activate();
  json params = {{"sessionId", adapter_session_id_}, {"prompt", turn_->blocks}};
  prompt_in_flight_ = true;
  adapters::AdapterLink* raw = adapter_.get();
  raw->rpc().call("session/prompt", std::move(params), [this, raw, generation](Connection::CallResult r) {
    if (adapter_.get() == raw) {
      prompt_in_flight_ = false;
      raw->drain_stderr();  // stderr written before the answer belongs to this run
    }
    if (!r && turn_ && turn_->control.generation() == generation && adapter_.get() == raw) {
      // The failure may come from the adapter's death: describe it while
      // the link still says how it ended.
      RpcError e = adapter_->exited() || adapter_->output_closed() ? adapter_failure("") : r.error();
      return finish_turn(generation, e);
    }
    finish_turn(generation, std::move(r));
  });
  // A stop that arrived during start-up was latched; apply it now that the
  // prompt has reached the adapter.
  if (latched && turn_ && turn_->control.generation() == generation) forward_stop();
}

void Session::cancel() {
  // A cancel while idle is a no-op; it must never reach the next turn.
  if (turn_) stop_turn(queue::StopReason::kCancelled);
}

bool Session::cancel_request(const json& request_id) {
  if (!turn_ || turn_->prompt.ledger.requestId != request_id) return false;
  stop_turn(queue::StopReason::kCancelled);
  return true;
}

void Session::stop_turn(queue::StopReason why) {
  switch (turn_->control.request_stop(why)) {
    case queue::StopAction::kForward:
      forward_stop();
      break;
    case queue::StopAction::kLatched:
      // A deadline or a failed recording cannot wait for a slow start-up:
      // stop it. A cancel waits and is applied once the prompt is sent.
      if (why != queue::StopReason::kCancelled) {
        abort_start(RpcError::internal("the run was stopped while its adapter was starting"));
      }
      break;
    case queue::StopAction::kDrop:
    case queue::StopAction::kNone:
      break;
  }
}

void Session::forward_stop() {
  if (!adapter_ || adapter_->exited()) return;  // its exit ends the turn
  adapter_->rpc().notify("session/cancel", {{"sessionId", adapter_session_id_}});
  const std::uint64_t generation = turn_->control.generation();
  turn_->stop_timer = std::make_unique<Timer>(rt_.loop);
  turn_->stop_timer->start(rt_.config.daemon.cancel_grace, [this, generation] {
    if (!turn_ || turn_->control.generation() != generation) return;
    log::warn("session " + init_.id + ": adapter did not answer the cancel in time; stopping it");
    // Retiring fails the pending session/prompt, which answers the host at
    // once; the reaper finishes the kill ladder.
    retire_adapter();
  });
}

void Session::remember(const Turn& turn, const std::string& event) {
  // Only turns that ended with an answer: a failed or cancelled task is not
  // something the next one can build on.
  if (event != run_event::kCompleted) return;
  std::string answer = turn.answer;
  if (answer.size() > kMaxAnswerBytes) {
    answer.resize(utf8::safe_cut(answer, kMaxAnswerBytes));
    answer += " [... answer cut at " + std::to_string(kMaxAnswerBytes) + " bytes]";
  }
  init_.history.push_back({{"task", turn.task}, {"answer", answer}, {"runId", turn.prompt.run_id}});
  while (init_.history.size() > kHistoryTurns) init_.history.erase(init_.history.begin());
}

void Session::finish_turn(std::uint64_t generation, Connection::CallResult result) {
  if (!turn_ || turn_->control.generation() != generation || !turn_->control.finish()) return;
  Turn& turn = *turn_;
  updated_at_ = std::chrono::system_clock::now();
  const std::string run_id = turn.prompt.run_id;
  turn.stop_timer.reset();
  turn.deadline.reset();

  // What happened, as the ledger says it and as the host will hear it.
  TurnFacts facts;
  facts.run_id = run_id;
  facts.session_id = init_.id;
  facts.started_at = turn.started_at;
  facts.ended_at = iso_time();
  facts.partial_output = turn.partial_output;
  facts.timeout = turn.prompt.timeout;
  facts.store_error = turn.error;
  facts.state_dir = rt_.store.dir();
  TurnOutcome o = turn_outcome(turn.control.stop_reason(), result, facts,
                               [this](const std::string& what) { return adapter_failure(what); });
  const std::string event = o.event;
  std::optional<json> answer = std::move(o.answer);
  std::optional<RpcError> failure = std::move(o.failure);
  if (answer) {
    std::string line = to_line({{"jsonrpc", "2.0"}, {"id", turn.prompt.ledger.requestId}, {"result", *answer}});
    line.pop_back();
    turn.recorder->event("harnessd>host", line);
  }

  // result.json and the terminal ledger line are on disk before the host is
  // answered; if they cannot be written, the run failed.
  std::weak_ptr<bool> alive = alive_;
  Store::Done deliver =
      [this, alive, generation, run_id, reply = std::move(turn.prompt.reply), answer = std::move(answer),
       failure = std::move(failure)](Expected<void> written) mutable {
        if (!written) {
          log::error("run " + run_id + ": " + written.error().message);
          reply.error(RpcError{rpc_code::kStoreFailed,
                               "run " + run_id + " failed: it could not be recorded (" + written.error().message + ")",
                               {{"runId", run_id}, {"reason", "store"}}});
        } else if (answer) {
          reply.result(std::move(*answer));
        } else {
          reply.error(*failure);
        }
        if (alive.expired() || closed_) return;
        if (turn_ && turn_->control.generation() == generation) {
          turn_->control.done();
          turn_.reset();
        }
        // A oneshot adapter serves one prompt.
        if (oneshot()) retire_adapter();
        save_record();
        if (on_idle_) on_idle_(*this);
      };
  if (!oneshot()) {
    turn.recorder->finish(event, o.fields, o.result_file, std::move(deliver));
    return;
  }
  // A oneshot session's memory is in its record before the host hears of
  // the turn, so a crash right after the answer loses nothing.
  remember(turn, event);
  save_record();
  turn.recorder->finish(event, o.fields, o.result_file,
                        [&store = rt_.store, id = init_.id, deliver = std::move(deliver)](Expected<void> written) mutable {
                          store.barrier(id, [written = std::move(written), deliver = std::move(deliver)](
                                                Expected<void>) mutable { deliver(std::move(written)); });
                        });
}

void Session::close(bool forget, UniqueFunction<void()> answered) {
  if (closed_) {
    if (answered) answered();
    return;
  }
  closed_ = true;
  if (auto turn = std::move(turn_)) {
    // A turn already finishing answers from its own callback; any other is
    // ended now, as cancelled, recorded first.
    if (turn->control.finish()) {
      UniqueFunction<void()> after = std::move(answered);
      answered = nullptr;
      TurnFacts facts;
      facts.run_id = turn->prompt.run_id;
      facts.session_id = init_.id;
      facts.started_at = turn->started_at;
      facts.ended_at = iso_time();
      facts.partial_output = turn->partial_output;
      TurnOutcome o = cancelled_outcome("session closed", facts);
      turn->recorder->finish(o.event, o.fields, o.result_file,
                             [reply = std::move(turn->prompt.reply), run_id = turn->prompt.run_id,
                              answer = std::move(*o.answer), after = std::move(after)](Expected<void> written) mutable {
                               if (!written) log::error("run " + run_id + ": " + written.error().message);
                               reply.result(std::move(answer));
                               if (after) after();
                             },
                             /*failure_fails=*/false);
    }
  }
  answer_early();  // the session exists; a later lifetime can load it
  adapter_waiters_.clear();
  if (!forget && prompt_in_flight_ && adapter_ && !adapter_->exited()) {
    // Shutting down mid-turn: the adapter is told (session/cancel, then
    // EOF) and has cancel_grace to read that, and any answer already
    // written to it such as a cancelled permission request, before the
    // kill ladder goes on.
    adapter_->rpc().notify("session/cancel", {{"sessionId", adapter_session_id_}});
    retire_adapter(rt_.config.daemon.cancel_grace);
  } else {
    retire_adapter();
  }
  if (forget) save_record();
  // No turn of ours to answer (a finishing one answers itself). Last, so
  // that whatever waits on it comes after the record's write.
  if (answered) answered();
}

void Session::restore(bool replay, UniqueFunction<void(Expected<json, RpcError>)> done) {
  auto finish = [this](UniqueFunction<void(Expected<json, RpcError>)> cb, std::size_t replayed) mutable {
    if (adapter_ && adapter_ready_ && !adapter_->exited()) {
      json outcome = restore_outcome_.is_null() ? json{{"restored", true}, {"live", true}} : restore_outcome_;
      cb(json{{"adapter", outcome}, {"replayed", replayed}});
      return;
    }
    std::weak_ptr<bool> alive = alive_;
    ensure_adapter([this, alive, cb = std::move(cb), replayed](Expected<void, RpcError> ready) mutable {
      if (alive.expired()) return;
      json outcome;
      if (!ready) {
        outcome = {{"restored", false}, {"reason", "the adapter could not start: " + ready.error().message}};
      } else if (restore_outcome_.is_null()) {
        outcome = {{"restored", false}, {"reason", "no adapter session was recorded for this session"}};
      } else {
        outcome = restore_outcome_;
      }
      cb(json{{"adapter", outcome}, {"replayed", replayed}});
    });
  };
  if (!replay) {
    finish(std::move(done), 0);
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  rt_.store.read_file(Store::transcript_file(init_.id),
                      [this, alive, finish, done = std::move(done)](Expected<std::string> content) mutable {
                        if (alive.expired()) return;
                        if (!content) {
                          done(RpcError::internal("cannot read the transcript: " + content.error().message));
                          return;
                        }
                        // Every stored line is a frame as the host saw it;
                        // a line cut by a crash is skipped.
                        std::size_t replayed = 0, skipped = 0, start = 0;
                        const std::string& text = *content;
                        while (start < text.size()) {
                          std::size_t end = text.find('\n', start);
                          if (end == std::string::npos) end = text.size();
                          std::string_view line(text.data() + start, end - start);
                          if (!line.empty()) {
                            if (schema::accept_json(line)) {
                              rt_.host.send_line(std::string(line) + "\n");
                              ++replayed;
                            } else {
                              ++skipped;
                            }
                          }
                          start = end + 1;
                        }
                        if (skipped) {
                          log::warn("session " + init_.id + ": " + std::to_string(skipped) +
                                    " transcript line(s) cut by a crash were skipped");
                        }
                        finish(std::move(done), replayed);
                      });
}

// ---------------------------------------------------------------- relaying

void Session::bind_adapter(adapters::AdapterLink& link) {
  link.set_taps(
      [this](bool outbound, std::string_view line) {
        if (turn_ && turn_->recorder) turn_->recorder->event(outbound ? "harnessd>adapter" : "adapter>harnessd", line);
      },
      [this](std::string_view data) {
        if (turn_ && turn_->recorder) turn_->recorder->stderr_data(data);
      });
  Connection& rpc = link.rpc();
  rpc.on_notification("session/update", [this](const json& params) { relay_update(params); });
  for (const char* method : kForwarded) {
    std::string m = method;
    rpc.on_request(m, [this, m](const json& params, Reply reply) { forward_to_host(m, params, std::move(reply)); });
  }
  rpc.on_notification("elicitation/complete", [this](const json& params) {
    if (flag(rt_.client_capabilities, "elicitation")) rt_.host.notify("elicitation/complete", params);
  });
}

void Session::relay_update(const json& params) {
  const json* update = nullptr;
  if (params.is_object()) {
    auto it = params.find("update");
    if (it != params.end() && it->is_object()) update = &*it;
  }
  if (!update) {
    log::warn("session " + init_.id + ": adapter sent session/update without an update object; dropped");
    return;
  }
  std::string kind = update->value("sessionUpdate", "");
  // The host must never receive an update its own schema rejects: an
  // update of a known kind is relayed only in its ACP shape; a kind
  // harnessd does not know only when the host opted into it.
  if (!schema::is_known_update_kind(kind)) {
    if (!host_accepts_unstable(kind)) {
      log::warn("session " + init_.id + ": adapter sent session/update of unknown kind '" + kind + "'; dropped");
      return;
    }
  } else if (auto problem = schema::check_session_update(*update)) {
    log::warn("session " + init_.id + ": adapter sent a malformed " + kind + " (" + *problem + "); dropped");
    return;
  }
  if (kTurnUpdates.count(kind) && !prompt_in_flight_) {
    log::warn("session " + init_.id + ": adapter sent " + kind + " outside a turn; dropped");
    return;
  }
  if (suppress_updates_) return;  // the adapter replaying its own history
  if (turn_ && kTurnUpdates.count(kind)) turn_->partial_output = true;
  if (turn_ && kind == "agent_message_chunk" && update->contains("content") && (*update)["content"].is_object()) {
    const json& c = (*update)["content"];
    if (c.value("type", "") == "text" && c.contains("text") && c["text"].is_string() &&
        turn_->answer.size() < kMaxAnswerBytes) {
      turn_->answer += c["text"].get_ref<const std::string&>();
    }
  }
  json out = params;
  out["sessionId"] = init_.id;
  if (kind == "config_option_update" && update->contains("configOptions") && (*update)["configOptions"].is_array()) {
    // The host sees the complete list: harnessd's option, then the adapter's.
    adapter_options_ = (*update)["configOptions"];
    out["update"]["configOptions"] = config_options();
  }

  const json* content = update->contains("content") ? &(*update)["content"] : nullptr;
  if (kChunkUpdates.count(kind) && content && content->is_object() && content->value("type", "") == "text" &&
      (*content)["text"].is_string() && (*content)["text"].get_ref<const std::string&>().size() > kMaxChunkText) {
    std::string text = (*content)["text"].get<std::string>();
    std::string_view rest = text;
    while (!rest.empty()) {
      std::size_t n = utf8::safe_cut(rest, kMaxChunkText);
      out["update"]["content"]["text"] = std::string(rest.substr(0, n));
      send_update(out);
      rest.remove_prefix(n);
    }
    return;
  }
  send_update(out);
}

void Session::send_update(const json& params) {
  // Serialised once: the same line goes to the host, the transcript and the
  // run's events.
  std::string line = to_line({{"jsonrpc", "2.0"}, {"method", "session/update"}, {"params", params}});
  if (turn_ && turn_->recorder) turn_->recorder->event("harnessd>host", std::string_view(line).substr(0, line.size() - 1));
  record_transcript(line);
  rt_.host.send_line(std::move(line));
}

bool Session::host_accepts_unstable(const std::string& kind) const {
  // Kinds that SDK schemas know but ACP v1 marks unstable, each behind the
  // client capability that announces it.
  const json& caps = rt_.client_capabilities;
  if (kind == "notice") return flag(caps, "session", "notices");
  if (kind == "compaction_update" || kind == "compaction_summary_chunk") return flag(caps, "session", "compaction");
  return false;
}

bool Session::host_can_serve(const std::string& method) const {
  const json& caps = rt_.client_capabilities;
  if (method == "session/request_permission") return true;
  if (method == "fs/read_text_file") return flag(caps, "fs", "readTextFile");
  if (method == "fs/write_text_file") return flag(caps, "fs", "writeTextFile");
  if (method.rfind("terminal/", 0) == 0) return flag(caps, "terminal");
  if (method == "elicitation/create") return flag(caps, "elicitation");
  return false;
}

json Session::adapter_client_capabilities() const {
  json caps = rt_.client_capabilities.is_object() ? rt_.client_capabilities : json::object();
  // harnessd does not relay authentication flows, so terminal auth is not offered.
  caps.erase("auth");
  return caps;
}

void Session::forward_to_host(const std::string& method, const json& params, Reply reply) {
  if (!host_can_serve(method)) {
    // The host did not advertise this capability (ACP: never call what
    // was not advertised), so the adapter gets "method not found".
    reply.error(RpcError::method_not_found(method));
    return;
  }
  json out = params;
  if (out.is_object() && out.contains("sessionId")) out["sessionId"] = init_.id;
  rt_.host.call(method, std::move(out), [method, reply = std::move(reply)](Connection::CallResult r) mutable {
    if (r) {
      reply.result(std::move(*r));
    } else if (method == "session/request_permission" && r.error().code == rpc_code::kPeerGone) {
      // Nobody can approve: treat it as a cancelled permission request.
      reply.result({{"outcome", {{"outcome", "cancelled"}}}});
    } else {
      reply.error(r.error());
    }
  });
}

}  // namespace harnessd::worker
