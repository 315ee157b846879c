// One ACP session at one adapter. References are to the ACP v1 spec
// ("initialization", "session setup").
#include "adapters/adapter_session.h"

#include "acp/json_write.h"
#include "acp/log.h"
#include "acp/utf8.h"
#include "harnessd_version.h"
#include "schema/acp.h"

namespace harnessd::adapters {

using nlohmann::json;

json initialize_params(const json& client_capabilities) {
  return {{"protocolVersion", schema::kProtocolVersion},
          {"clientCapabilities", client_capabilities},
          {"clientInfo", {{"name", "harnessd"}, {"version", HARNESSD_VERSION}}}};
}

AdapterSession::AdapterSession(acp::Loop& loop, Reaper& reaper, std::chrono::milliseconds kill_grace, std::string label,
                               std::string harness, Hooks hooks)
    : loop_(loop),
      reaper_(reaper),
      kill_grace_(kill_grace),
      label_(std::move(label)),
      harness_(std::move(harness)),
      hooks_(std::move(hooks)) {}

AdapterSession::~AdapterSession() { retire(); }

void AdapterSession::ensure(Ready ready) {
  if (link_ && link_->exited()) retire();
  if (ready_) {
    ready({});
    return;
  }
  waiters_.push_back(std::move(ready));
  if (!link_ && !admitting_) start();  // else already starting
}

void AdapterSession::start() {
  if (!admitted_ && !admitting_ && !slot_) {
    // A new start: its spec, then a warm adapter if one fits, else the
    // breaker's leave and a place under the cap.
    spec_ = hooks_.spec();
    ++starts_;
    start_began_ = std::chrono::steady_clock::now();
    start_report_ = {{"warm", false}};
    if (hooks_.warm) {
      if (auto warm = hooks_.warm(spec_.client_capabilities)) return adopt(std::move(*warm));
    }
    if (StartBreaker* breaker = hooks_.breaker ? hooks_.breaker() : nullptr) {
      if (auto refused = breaker->admit()) return started(*refused);
      admitted_ = breaker;
    }
  }
  if (live_ && !slot_) {
    // A place under the cap first; it may mean waiting for an evicted
    // adapter to exit.
    admitting_ = true;
    LiveAdapters::Wait wait = live_->acquire([this](LiveAdapters::Slot slot) {
      admitting_ = false;
      slot_wait_ = {};
      slot_ = std::move(slot);
      start();
    });
    if (admitting_) slot_wait_ = std::move(wait);
    return;
  }
  note_auth_env();
  spec_.link.slot = std::move(slot_);
  can_close_ = false;
  if (auto limited = apply_limits(spec_.link, spec_.limits, harness_); !limited) {
    return started(RpcError{rpc_code::kHarnessUnavailable,
                            "harness '" + harness_ + "' cannot start within its limits (" + spec_.limits.describe() +
                                "): " + limited.error().message,
                            {{"harness", harness_}, {"reason", "limits"}}});
  }
  auto link = AdapterLink::start(loop_, std::move(spec_.link), nullptr);
  if (!link) {
    RpcError e{rpc_code::kHarnessUnavailable, "harness '" + harness_ + "' cannot start: " + link.error().message,
               {{"harness", harness_}, {"command", spec_.command}}};
    if (!spec_.install_hint.empty()) e.data["hint"] = spec_.install_hint;
    started(e);
    return;
  }
  link_ = std::move(*link);
  AdapterLink* raw = link_.get();
  watch(raw);
  // Offer the adapter exactly what the host offered.
  raw->rpc().call("initialize", initialize_params(spec_.client_capabilities), [this, raw](acp::Connection::CallResult r) {
    if (link_.get() != raw) return;
    if (!r) return started(failure("failed to initialize: " + r.error().message));
    initialized(raw, *r);
  });
}

void AdapterSession::adopt(WarmAdapter warm) {
  note_auth_env();
  can_close_ = false;
  start_report_ = {{"warm", true}, {"savedMs", warm.start_time.count()}};
  link_ = std::move(warm.link);
  AdapterLink* raw = link_.get();
  acp::log::info(label_ + ": took warm adapter (pid " + std::to_string(raw->pid()) + ")");
  watch(raw);
  initialized(raw, warm.initialized);
}

void AdapterSession::note_auth_env() {
  // Read before the link takes the spec's environment.
  const std::string& var = spec_.auth_env;
  auth_env_set_ = false;
  for (const auto& entry : spec_.link.process.env) {
    auth_env_set_ = auth_env_set_ || (!var.empty() && entry.size() > var.size() + 1 &&
                                      entry.compare(0, var.size(), var) == 0 && entry[var.size()] == '=');
  }
}

void AdapterSession::watch(AdapterLink* raw) {
  raw->set_on_exit([this, raw](const ExitStatus& status) {
    if (link_.get() != raw) return;
    acp::log::info(label_ + ": adapter gone (" + status.describe() + "); the next prompt starts a new one");
    retire();
  });
  raw->set_on_output_closed([this, raw] {
    // Its pending calls have failed; nothing more can come from it, so it
    // is stopped like an adapter that exited, through the kill ladder.
    if (link_.get() != raw) return;
    acp::log::info(label_ + ": stopping the adapter; the next prompt starts a new one");
    retire();
  });
  if (hooks_.bind) hooks_.bind(*raw);

  start_timer_ = std::make_unique<acp::Timer>(loop_);
  start_timer_->start(spec_.start_timeout, [this, raw] {
    if (link_.get() != raw || ready_) return;
    auto seconds = std::to_string(spec_.start_timeout.count() / 1000.0);
    RpcError e = failure("did not finish start-up within " + seconds.substr(0, seconds.find('.') + 2) + " s");
    acp::log::warn(label_ + ": " + e.message);
    if (auto* breaker = std::exchange(admitted_, nullptr)) breaker->failed(e);
    abort_start(e);
  });
}

void AdapterSession::initialized(AdapterLink* raw, const json& answer) {
  json version = answer.is_object() ? answer.value("protocolVersion", json()) : json();
  if (version != schema::kProtocolVersion) {
    return started(failure("speaks ACP protocol version " + version.dump() + ", not 1"));
  }
  const json caps = answer.value("agentCapabilities", json::object());
  const json session_caps =
      caps.is_object() ? caps.value("sessionCapabilities", json::object()) : json::object();
  auto offers = [&](const char* what) {
    return session_caps.is_object() && session_caps.contains(what) && session_caps[what].is_object();
  };
  can_close_ = offers("close");
  can_resume_ = offers("resume");
  can_load_ = caps.is_object() && caps.contains("loadSession") && caps["loadSession"] == true;
  auth_methods_ = answer.contains("authMethods") && answer["authMethods"].is_array() ? answer["authMethods"]
                                                                                      : json::array();
  if (spec_.auth_env.empty()) return open(raw);
  // An API key in the environment, and a method of the adapter's that
  // reads it: authenticate once, before any session. Nothing is guessed.
  const std::string& var = spec_.auth_env;
  std::string method_id;
  for (const auto& m : auth_methods_) {
    if (!m.is_object() || m.value("type", json()) != "env_var" || !m.contains("id") || !m["id"].is_string()) continue;
    bool reads = m.value("varName", json()) == var;
    if (auto vars = m.find("vars"); vars != m.end() && vars->is_array()) {
      for (const auto& v : *vars) reads = reads || (v.is_object() && v.value("name", json()) == var);
    }
    if (reads) method_id = m["id"].get<std::string>();
  }
  if (method_id.empty() || !auth_env_set_) {
    acp::log::info(label_ + ": not authenticating: " +
                   (method_id.empty() ? "the adapter offers no env_var auth method that reads " + var
                                      : var + " is not in the adapter's environment"));
    return open(raw);
  }
  raw->rpc().call("authenticate", {{"methodId", method_id}}, [this, raw, method_id](acp::Connection::CallResult r) {
    if (link_.get() != raw) return;
    if (!r) return started(auth_required(r.error()));
    acp::log::info(label_ + ": authenticated with " + method_id);
    open(raw);
  });
}

RpcError AdapterSession::auth_required(const RpcError& said) const {
  RpcError e{rpc_code::kAuthRequired,
             "harness '" + harness_ + "' needs authentication: " + said.message,
             {{"harness", harness_}, {"reason", "auth_required"}, {"authMethods", auth_methods_},
              {"adapterError", {{"code", said.code}, {"message", said.message}}}}};
  e.data["hint"] = spec_.auth_env.empty()
                       ? "log in to the harness, or name its API key variable in the profile's auth_env"
                       : "set " + spec_.auth_env + " for the adapter (env or env_passthrough), or log in to the harness";
  if (link_) e.data["stderrTail"] = link_->stderr_tail();
  return e;
}

void AdapterSession::open(AdapterLink* raw) {
  if (resume_id_.empty()) return create(raw);
  // An adapter session of an earlier adapter: resume it when the adapter
  // can, else load it (the owner hears nothing of its replay), else say
  // that a new one starts.
  std::string method = can_resume_ ? "session/resume" : can_load_ ? "session/load" : "";
  std::string old_id = std::move(resume_id_);
  resume_id_.clear();
  if (method.empty()) {
    restore_outcome_ = {{"restored", false},
                        {"reason", "the adapter supports neither session/resume nor session/load, so it starts a "
                                   "new session of its own; the transcript is still harnessd's"}};
    return create(raw);
  }
  replaying_ = method == "session/load";
  json params = {{"sessionId", old_id}, {"cwd", spec_.cwd}, {"mcpServers", spec_.mcp_servers}};
  raw->rpc().call(method, std::move(params), [this, raw, method, old_id](acp::Connection::CallResult r) {
    if (link_.get() != raw) return;
    replaying_ = false;
    if (!r && r.error().code == rpc_code::kAuthRequired) return started(auth_required(r.error()));
    if (!r && r.error().code == rpc_code::kSessionBusy) {
      // A worker whose earlier process still holds the session (a lost
      // link it has not noticed yet): a new session there would drop the
      // harness's memory of this one; the start fails and a later one
      // resumes it.
      RpcError e = failure("could not resume its session: " + r.error().message);
      e.data["retryable"] = true;
      e.data["adapterError"] = r.error();
      restore_outcome_ = {{"restored", false}, {"method", method}, {"reason", e.message}};
      resume_id_ = old_id;
      return started(std::move(e));
    }
    if (!r) {
      restore_outcome_ = {{"restored", false},
                          {"method", method},
                          {"reason", "the adapter refused " + method + ": " + r.error().message}};
      acp::log::warn(label_ + ": " + restore_outcome_["reason"].get<std::string>());
      return create(raw);
    }
    id_ = old_id;
    if (hooks_.options) hooks_.options(*r, spec_.config_choices.empty());
    reapply(raw);
    ready_ = true;
    start_timer_.reset();
    restore_outcome_ = {{"restored", true}, {"method", method}, {"adapterSessionId", old_id}};
    acp::log::info(label_ + ": adapter session " + old_id + " restored with " + method);
    started({});
  });
}

void AdapterSession::create(AdapterLink* raw) {
  json params = {{"cwd", spec_.cwd}, {"mcpServers", spec_.mcp_servers}};
  raw->rpc().call("session/new", std::move(params), [this, raw](acp::Connection::CallResult r) {
    if (link_.get() != raw) return;
    if (!r && r.error().code == rpc_code::kAuthRequired) return started(auth_required(r.error()));
    if (!r) return started(failure("failed to create a session: " + r.error().message));
    json sid = r->is_object() ? r->value("sessionId", json()) : json();
    if (!sid.is_string() || sid.get<std::string>().empty()) {
      return started(failure("answered session/new without a sessionId"));
    }
    id_ = sid.get<std::string>();
    const bool offers = r->contains("configOptions") && (*r)["configOptions"].is_array();
    json offered = offers ? (*r)["configOptions"] : json::array();
    // With choices to apply again, the list is final once they are.
    if (hooks_.options) hooks_.options(*r, spec_.config_choices.empty());
    reapply(raw);
    ready_ = true;
    start_timer_.reset();
    acp::log::info(label_ + ": adapter session " + id_ + " ready");
    if (hooks_.created) hooks_.created(offered);
    started({});
  });
}

void AdapterSession::reapply(AdapterLink* raw) {
  for (const auto& [config_id, value] : spec_.config_choices.items()) {
    json params = {{"sessionId", id_}, {"configId", config_id}, {"value", value}};
    raw->rpc().call("session/set_config_option", std::move(params),
                    [this, raw, id = config_id](acp::Connection::CallResult r) {
                      if (link_.get() != raw) return;
                      if (!r) {
                        acp::log::warn(label_ + ": the new adapter refused option '" + id +
                                       "' chosen earlier: " + r.error().message);
                      } else if (hooks_.options) {
                        hooks_.options(*r, true);
                      }
                    });
  }
}

void AdapterSession::started(Expected<void, RpcError> result) {
  if (result && start_report_.is_object()) {
    start_report_["startMs"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - start_began_)
                                   .count();
  }
  if (auto* breaker = std::exchange(admitted_, nullptr)) {
    if (result) {
      breaker->succeeded();
    } else {
      breaker->failed(result.error());
    }
  }
  if (!result) retire();
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& w : waiters) {
    if (result) {
      w({});
    } else {
      w(result.error());
    }
  }
}

void AdapterSession::abort_start(const RpcError& error) {
  // The waiters are taken first: retiring fails the adapter's pending
  // calls, and their callbacks must not be the ones to report.
  auto waiters = std::move(waiters_);
  waiters_.clear();
  retire();
  for (auto& w : waiters) w(error);
}

void AdapterSession::retire(std::chrono::milliseconds eof_grace) {
  if (!id_.empty() && hooks_.resumable && hooks_.resumable()) resume_id_ = id_;
  start_timer_.reset();
  ready_ = false;
  replaying_ = false;
  id_.clear();
  prompting_ = false;
  slot_wait_.reset();
  slot_.reset();
  admitting_ = false;
  if (auto* breaker = std::exchange(admitted_, nullptr)) breaker->abandoned();
  if (!link_) return;
  reaper_.adopt(std::move(link_), kill_grace_, eof_grace);
  if (hooks_.stopped) hooks_.stopped();
}

void AdapterSession::evict(std::chrono::milliseconds eof_grace) {
  if (ready() && can_close_) {
    // Written before the EOF that follows; the answer is not waited for.
    link_->rpc().call("session/close", {{"sessionId", id_}}, [](acp::Connection::CallResult) {});
  }
  retire(eof_grace);
}

void AdapterSession::prompt(const json& blocks, acp::Connection::CallHandler done) {
  prompting_ = true;
  AdapterLink* raw = link_.get();
  // Written straight from the blocks: a params value would copy them.
  std::string params = "{\"prompt\":";
  acp::append_json(params, blocks);
  params += ",\"sessionId\":";
  acp::utf8::append_json_string(params, id_);
  params += '}';
  raw->rpc().call_text("session/prompt", params,
                  [this, raw, done = std::move(done)](acp::Connection::CallResult r) mutable {
                    if (link_.get() == raw) {
                      prompting_ = false;
                      raw->drain_stderr();  // what it wrote before answering belongs to this prompt
                      // Said while the link still knows how the adapter ended.
                      if (!r && (raw->exited() || raw->output_closed())) r = failure("");
                    }
                    done(std::move(r));
                  });
}

void AdapterSession::cancel() {
  if (link_) link_->rpc().notify("session/cancel", {{"sessionId", id_}});
}

void AdapterSession::notify(const std::string& method, json params) {
  if (alive()) link_->rpc().notify(method, std::move(params));
}

void AdapterSession::set_config_option(const std::string& config_id, const json& value,
                                       acp::Connection::CallHandler done) {
  AdapterLink* raw = link_.get();
  json params = {{"sessionId", id_}, {"configId", config_id}, {"value", value}};
  raw->rpc().call("session/set_config_option", std::move(params),
                  [this, raw, done = std::move(done)](acp::Connection::CallResult r) mutable {
                    if (r && link_.get() == raw && hooks_.options) hooks_.options(*r, false);
                    done(std::move(r));
                  });
}

void AdapterSession::set_mode(const std::string& mode_id, acp::Connection::CallHandler done) {
  link_->rpc().call("session/set_mode", {{"sessionId", id_}, {"modeId", mode_id}}, std::move(done));
}

RpcError AdapterSession::failure(const std::string& what) const {
  RpcError e = local_failure(what);
  if (!spec_.host.empty()) {
    // The adapter is ssh to a worker: which machine is the first thing to know.
    const std::string adapter = "adapter of harness '" + harness_ + "'";
    if (e.message.rfind(adapter, 0) == 0) {
      e.message.insert(adapter.size(), " on host " + spec_.host);
    }
    e.data["host"] = spec_.host;
  }
  return e;
}

RpcError AdapterSession::local_failure(const std::string& what) const {
  RpcError e{rpc_code::kAdapterFailed, "", {{"harness", harness_}}};
  if (link_ && link_->exited()) {
    const auto& status = *link_->exit_status();
    e.message = "adapter of harness '" + harness_ + "' exited (" + status.describe() + ")";
    if (std::string limit = link_->killed_by(); !limit.empty()) {
      // The kernel enforced a limit of the profile: said as such.
      e.message = "adapter of harness '" + harness_ + "' was killed by its " + limit + " (" + spec_.limits.describe() +
                  ")";
      e.data["reason"] = limit;
    }
    if (status.signal) {
      e.data["signal"] = status.signal;
    } else {
      e.data["exitCode"] = status.code;
    }
  } else if (link_ && link_->output_closed()) {
    e.message = "adapter of harness '" + harness_ + "' closed its output but kept running";
  } else {
    e.message = "adapter of harness '" + harness_ + "' " + what;
  }
  if (link_) e.data["stderrTail"] = link_->stderr_tail();
  return e;
}

}  // namespace harnessd::adapters
