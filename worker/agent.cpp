// Handlers of the ACP methods harnessd serves to its host.
#include "worker/agent.h"

#include <sys/stat.h>

#include <ctime>
#include <deque>
#include <functional>
#include <memory>

#include "acp/files.h"
#include "acp/log.h"
#include "adapters/process.h"
#include "harnessd_version.h"
#include "queue/ids.h"
#include "schema/acp.h"
#include "worker/ledger.h"
#include "worker/run_recorder.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Images: a packaged prompt lists them as files; otherwise they go to the
// adapter as sent.
const schema::PromptCapabilities kPromptCapabilities{true, false, true};

std::string adapter_path(const Runtime& rt, const harnesses::HarnessProfile& profile) {
  std::string path;
  for (const auto& e : harnesses::adapter_environment(profile, rt.parent_env)) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  return path;
}

// HARNESSD_HOST_SESSION: the host's name for the sessions this process
// makes, for hosts that start one harnessd per session and cannot send
// `_meta` (the OpenClaw plugin harnessd ships sets it to the session key).
std::optional<std::string> host_session_from_env(const std::vector<std::string>& env) {
  static constexpr std::string_view kVar = "HARNESSD_HOST_SESSION=";
  for (const auto& e : env) {
    if (e.compare(0, kVar.size(), kVar) != 0) continue;
    std::string value = e.substr(kVar.size());
    bool plain = !value.empty() && value.size() <= schema::kMaxHostSession;
    for (unsigned char c : value) plain = plain && c >= 0x20 && c != 0x7f;
    if (plain) return value;
    acp::log::warn("HARNESSD_HOST_SESSION is ignored: it must be 1 to " + std::to_string(schema::kMaxHostSession) +
                   " bytes without control characters");
    return std::nullopt;
  }
  return std::nullopt;
}

// -32602 naming `cwd` unless it is an existing directory.
std::optional<RpcError> check_cwd(const std::string& method, const std::string& cwd) {
  struct stat st {};
  if (::stat(cwd.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return std::nullopt;
  RpcError e = RpcError::invalid_params(method + ": cwd '" + cwd + "' is not an existing directory");
  e.data = {{"method", method}, {"field", "cwd"}};
  return e;
}

// -32010 (with the install hint) when the harness's program cannot be found.
std::optional<RpcError> check_harness(const Runtime& rt, const std::string& name,
                                      const harnesses::HarnessProfile& profile) {
  auto program = adapters::find_executable(profile.command.at(0), adapter_path(rt, profile));
  if (program) return std::nullopt;
  RpcError e{rpc_code::kHarnessUnavailable, "harness '" + name + "' cannot run: " + program.error().message,
             {{"harness", name}, {"command", profile.command}}};
  if (!profile.install_hint.empty()) e.data["hint"] = profile.install_hint;
  return e;
}

}  // namespace

json agent_capabilities(const Config& config) {
  json harnesses = json::array();
  for (const auto& [name, profile] : config.harnesses) harnesses.push_back(name);
  // harnessd's own extensions, for hosts that look for them.
  json ours = {{"version", HARNESSD_VERSION},
               {"methods",
                {"_harnessd/sessions/list", "_harnessd/sessions/set_summary", "_harnessd/runs/get",
                 "_harnessd/runs/list"}},
               {"notifications", {"$/cancel_request"}},
               {"meta", {"harness", "name", "hostSession", "ensure", "lane", "timeoutMs", "mode", "template", "context"}},
               {"harnesses", harnesses},
               {"defaultHarness", config.daemon.default_harness}};
  return {{"loadSession", true},
          {"_meta", {{"harnessd", ours}}},
          {"promptCapabilities",
           {{"image", kPromptCapabilities.image},
            {"audio", kPromptCapabilities.audio},
            {"embeddedContext", kPromptCapabilities.embeddedContext}}},
          {"mcpCapabilities", {{"http", false}, {"sse", false}}},
          {"sessionCapabilities", {{"list", json::object()}, {"close", json::object()}, {"resume", json::object()}}}};
}

Agent::Agent(Runtime& rt)
    : rt_(rt),
      scheduler_(queue::SchedulerOptions{rt.config.daemon.max_concurrent_runs, rt.config.daemon.max_queue_depth, {4, 2, 1}}) {
  acp::Connection& c = rt_.host;
  // Once close_all ran no session is opened: session/new, load and resume
  // are refused before their params are read.
  auto unless_closing = [this](std::string method, auto decode) {
    return [this, method = std::move(method), decode](const json& p) -> decltype(decode(p)) {
      if (closing_) return RpcError::internal(method + ": harnessd is shutting down");
      return decode(p);
    };
  };
  // The decoders that report the method they decode for.
  auto session_ref = [](std::string method) {
    return [method = std::move(method)](const json& p) { return schema::decode_session_ref(method, p); };
  };
  auto load = [&](std::string method) {
    return unless_closing(method, [method](const json& p) { return schema::decode_load_session(method, p); });
  };
  c.bind<schema::InitializeRequest>("initialize", schema::decode_initialize,
                                    std::bind_front(&Agent::on_initialize, this));
  c.bind<schema::NewSessionRequest>("session/new", unless_closing("session/new", schema::decode_new_session),
                                    std::bind_front(&Agent::on_new_session, this));
  // A prompt's blocks are checked against the promptCapabilities we
  // advertise; the run's record keeps the params as received.
  c.bind<PromptParams>(
      "session/prompt",
      [](const json& p) -> Expected<PromptParams, RpcError> {
        auto req = schema::decode_prompt(p, kPromptCapabilities);
        if (!req) return req.error();
        return PromptParams{std::move(*req), p};
      },
      std::bind_front(&Agent::on_prompt, this));
  c.bind<schema::SessionRef>("session/close", session_ref("session/close"), std::bind_front(&Agent::on_close, this));
  c.bind<schema::LoadSessionRequest>("session/load", load("session/load"),
                                     std::bind_front(&Agent::on_load, this, true));
  c.bind<schema::LoadSessionRequest>("session/resume", load("session/resume"),
                                     std::bind_front(&Agent::on_load, this, false));
  c.bind<schema::SetConfigOptionRequest>("session/set_config_option", schema::decode_set_config_option,
                                         std::bind_front(&Agent::on_set_config_option, this));
  c.bind<schema::SetModeRequest>("session/set_mode", schema::decode_set_mode,
                                 std::bind_front(&Agent::on_set_mode, this));
  c.bind<schema::SetSummaryRequest>("_harnessd/sessions/set_summary", schema::decode_set_summary,
                                    std::bind_front(&Agent::on_set_summary, this));
  c.bind_notification<schema::SessionRef>("session/cancel", session_ref("session/cancel"),
                                          std::bind_front(&Agent::on_cancel, this));
  c.bind_notification<schema::CancelRequest>("$/cancel_request", schema::decode_cancel_request,
                                             std::bind_front(&Agent::on_cancel_request, this));
}

Agent::~Agent() {
  rt_.host.clear_handlers();
  close_all();
}

void Agent::close_all(acp::UniqueFunction<void()> answered, bool for_good) {
  // A session/new or load read after this point would open a session that
  // nothing closes (and, for `harnessd run`, leave its record open).
  closing_ = true;
  std::vector<std::string> ids;
  registry_.for_each_open([&](const std::string& id, const auto&, const Session&) { ids.push_back(id); });
  // One count for each session, and one so that `answered` runs only after
  // every session has been asked to close.
  struct Left {
    std::size_t n;
    acp::UniqueFunction<void()> fn;
    void one() {
      if (--n == 0 && fn) fn();
    }
  };
  auto left = std::make_shared<Left>(Left{ids.size() + 1, std::move(answered)});
  for (const auto& id : ids) close_session(id, "shutting down", for_good, [left] { left->one(); });
  left->one();
}

namespace {

// Answers a closed session's queued prompts one after the other, after its
// running prompt: a host hears them in the order it sent them.
struct CancelChain : std::enable_shared_from_this<CancelChain> {
  std::deque<QueuedPrompt> left;
  acp::UniqueFunction<void()> done;
  void next() {
    if (left.empty()) {
      if (done) done();
      return;
    }
    QueuedPrompt q = std::move(left.front());
    left.pop_front();
    answer_cancelled(std::move(q), [self = shared_from_this()] { self->next(); });
  }
};

}  // namespace

void Agent::close_session(const std::string& id, const std::string& why, bool forget,
                          acp::UniqueFunction<void()> answered) {
  Session* session = registry_.find(id);
  if (!session) {
    if (answered) answered();
    return;
  }
  // Drop the queue first: it frees the session's slot, and the session's
  // own close() does not report back.
  std::vector<QueuedPrompt> queued = scheduler_.drop(id);
  auto chain = std::make_shared<CancelChain>();
  for (auto& q : queued) chain->left.push_back(std::move(q));
  chain->done = std::move(answered);
  session->close(forget, [chain] { chain->next(); });
  std::unique_ptr<Session> closed = registry_.close(id);
  acp::log::info("session " + id + ": closed (" + why + ")");
  closed.reset();
  pump();
}

void Agent::prepare_next(const std::string& session) {
  // The next prompt of a busy session gets its run folder while the current
  // turn runs, so the hand-off does not wait for the disk; deeper queues are
  // prepared as they move up.
  if (!scheduler_.active(session)) return;
  // A prompt to package waits for its turn: its history is not known yet.
  if (QueuedPrompt* next = scheduler_.front(session); next && !next->packaging) prepare_run(*next);
}

void Agent::pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    while (auto next = scheduler_.next()) {
      Session* session = registry_.find(next->session);
      if (!session) {  // closed meanwhile: cannot happen, drop() removes its queue
        answer_cancelled(std::move(next->item));
        scheduler_.finished(next->session);
        continue;
      }
      session->start_turn(std::move(next->item));
      prepare_next(next->session);
    }
  } while (pump_again_);
  pumping_ = false;
}

void Agent::on_initialize(schema::InitializeRequest req, acp::Reply reply) {
  rt_.client_capabilities = std::move(req.clientCapabilities);
  // ACP "Initialization": answer the one version we speak, whatever was asked.
  reply.result({{"protocolVersion", schema::kProtocolVersion},
                {"agentCapabilities", agent_capabilities(rt_.config)},
                {"authMethods", json::array()},
                {"agentInfo", {{"name", "harnessd"}, {"title", "harnessd"}, {"version", HARNESSD_VERSION}}}});
  rt_.host.mark_initialized();
}

void Agent::on_new_session(schema::NewSessionRequest req, acp::Reply reply) {
  const auto& meta = req.harnessd;

  // ensure: hand back the open session of that name (acpx "sessions ensure").
  if (meta.ensure) {
    if (auto existing = registry_.find_name(*meta.name)) {
      reply.result({{"sessionId", *existing}, {"_meta", {{"harnessd", {{"name", *meta.name}, {"created", false}}}}}});
      return;
    }
    // A session of that name from an earlier lifetime, not closed, comes
    // back (the newest, if several): names outlive the daemon.
    std::optional<SessionRecord> found;
    for (const auto& stored : rt_.store.sessions_named(*meta.name)) {
      auto record = SessionRecord::from_json(stored);
      if (!record || record->closed || record->name != meta.name) continue;
      if (!found || record->updated_at > found->updated_at) found = std::move(*record);
    }
    if (found) {
      schema::LoadSessionRequest again{found->session_id, req.cwd, req.mcpServers};
      auto reopened = reopen(*found, again);
      if (!reopened) return reply.error(reopened.error());
      reply.result({{"sessionId", again.sessionId},
                    {"_meta", {{"harnessd", {{"name", *meta.name}, {"created", false}, {"reopened", true}}}}}});
      return;
    }
  }

  std::string harness = meta.harness.value_or(rt_.config.daemon.default_harness);
  auto profile = rt_.config.harnesses.find(harness);
  if (profile == rt_.config.harnesses.end()) {
    std::string known;
    for (const auto& [name, p] : rt_.config.harnesses) known += (known.empty() ? "" : ", ") + name;
    RpcError e = RpcError::invalid_params("session/new: _meta.harnessd.harness names unknown harness '" + harness +
                                          "' (known: " + known + ")");
    e.data = {{"method", "session/new"}, {"field", "_meta.harnessd.harness"}};
    return reply.error(e);
  }
  if (auto bad = check_cwd("session/new", req.cwd)) return reply.error(*bad);
  // Fail now, not at the first prompt, when the harness cannot run here.
  if (auto bad = check_harness(rt_, harness, profile->second)) return reply.error(*bad);

  SessionInit init;
  init.mode = meta.mode.value_or(profile->second.mode);
  init.template_name = meta.templateName.value_or(profile->second.template_name);
  if (!init.template_name.empty()) {
    auto tmpl = harnesses::load_template(init.template_name, rt_.config.daemon.template_dir);
    if (!tmpl) return reply.error(template_error("session/new", tmpl.error().message));
  }
  init.id = queue::make_id("sess_");
  init.cwd = req.cwd;
  init.profile = profile->second;
  init.mcp_servers = req.mcpServers;
  init.name = meta.name;
  init.host_session = meta.hostSession ? meta.hostSession : host_session_from_env(rt_.parent_env);
  init.run_timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : rt_.config.daemon.run_timeout;
  if (meta.lane) init.lane = *queue::parse_lane(*meta.lane);
  const std::string id = init.id;
  Session& session = open_session(std::move(init));
  session.save_record();
  acp::log::info("session " + id + ": created for harness '" + harness + "' in " + req.cwd +
                 (meta.name ? " as '" + *meta.name + "'" : ""));
  auto answer = [id, name = meta.name, reply = std::move(reply)](json options) mutable {
    json result = {{"sessionId", id}, {"configOptions", std::move(options)}};
    if (name) result["_meta"] = {{"harnessd", {{"name", *name}, {"created", true}}}};
    reply.result(std::move(result));
  };
  // Hosts read the model and mode options from this answer (acpx --model
  // sets the model right after it). When nothing yet says what this
  // harness's adapter offers, it starts now instead of at the first prompt;
  // its list is then known to every later session, in this lifetime and in
  // the next (the session records keep it).
  if (!rt_.harness_options.count(harness) && rt_.harness_options_sought.insert(harness).second) {
    session.start_adapter_early(std::move(answer));
    return;
  }
  answer(session.config_options());
}

Session& Agent::open_session(SessionInit init) {
  const std::string id = init.id;
  std::optional<std::string> name = init.name;
  auto session = std::make_unique<Session>(rt_, std::move(init), [this](Session& s) {
    scheduler_.finished(s.id());
    pump();
  });
  Session& ref = *session;
  auto displaced = registry_.add(id, name, std::move(session));
  if (displaced) {
    // Without ensure, a new session takes the name; the old one is closed.
    if (Session* old = registry_.find(*displaced)) old->forget_name();
    close_session(*displaced, "its name went to " + id);
  }
  return ref;
}

void Agent::on_prompt(PromptParams params, acp::Reply reply) {
  schema::PromptRequest& req = params.req;
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  // Packaging: the prompt's template, else the session's; a oneshot
  // session or a context with neither uses single-shot.
  auto packaging = prompt_template(*session, req.harnessd);
  if (!packaging) return reply.error(packaging.error());
  if (!scheduler_.can_enqueue(session->id())) {
    std::size_t depth = rt_.config.daemon.max_queue_depth;
    RpcError e{rpc_code::kQueueFull,
               "session " + session->id() + " already has " + std::to_string(depth) + " prompts waiting; retry later",
               {{"sessionId", session->id()}, {"queueDepth", depth}, {"retryable", true}}};
    return reply.error(e);
  }
  QueuedPrompt prompt;
  prompt.run_id = queue::make_id("run_");
  prompt.request = {{"id", reply.id()},
                    {"method", "session/prompt"},
                    {"params", std::move(params.received)},
                    {"receivedAt", acp::iso_time()}};
  prompt.blocks = std::move(req.prompt);
  prompt.ledger.runId = prompt.run_id;
  prompt.ledger.sessionId = session->id();
  prompt.ledger.name = session->name();
  prompt.ledger.hostSession = session->init().host_session;
  prompt.ledger.harness = session->profile().name;
  prompt.ledger.requestId = reply.id();
  prompt.reply = std::move(reply);
  LedgerEntry queued = prompt.ledger;
  queued.event = run_event::kQueued;
  rt_.store.record(std::move(queued));
  prompt.recorder = std::make_unique<RunRecorder>(
      rt_.store, prompt.ledger,
      RunRecorder::Policy{rt_.config.daemon.max_recording_bytes, session->profile().record_metadata_only});
  const auto& meta = req.harnessd;
  prompt.packaging = std::move(*packaging);
  prompt.context = meta.context;
  prompt.timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : session->init().run_timeout;
  queue::Lane lane = meta.lane ? *queue::parse_lane(*meta.lane) : session->init().lane;
  scheduler_.enqueue(session->id(), lane, std::move(prompt));
  pump();
  prepare_next(session->id());
}

void Agent::on_cancel(schema::SessionRef req) {
  Session* session = registry_.find(req.sessionId);
  if (!session) {
    acp::log::warn("ignored session/cancel for unknown session " + req.sessionId);
    return;
  }
  session->cancel();
}

void Agent::on_cancel_request(schema::CancelRequest req) {
  // A queued prompt leaves the queue and is answered at once ...
  auto removed = scheduler_.remove_if([&](const QueuedPrompt& q) { return q.reply.id() == req.requestId; });
  if (removed) {
    acp::log::info("session " + removed->first + ": queued request " + req.requestId.dump() + " cancelled");
    answer_cancelled(std::move(removed->second));
    return;
  }
  // ... a running one is cancelled like session/cancel.
  bool found = false;
  registry_.for_each_open([&](const std::string&, const auto&, Session& s) {
    if (!found) found = s.cancel_request(req.requestId);
  });
  if (!found) acp::log::debug("$/cancel_request for " + req.requestId.dump() + ": no such prompt");
}

void Agent::on_close(schema::SessionRef req, acp::Reply reply) {
  if (registry_.find(req.sessionId)) {
    // ACP "session/close": cancel the running work as if session/cancel had
    // arrived; its prompts are answered "cancelled", in order, before this reply.
    close_session(req.sessionId, "session/close", true, [&store = rt_.store, reply = std::move(reply)]() mutable {
      store.barrier_all([reply = std::move(reply)](Expected<void>) mutable { reply.result(json::object()); });
    });
    return;
  } else if (auto record = stored_record(req.sessionId)) {
    // A session of an earlier lifetime: only its record changes.
    record->closed = true;
    record->updated_at = acp::iso_time();
    rt_.store.save_session(record->to_json());
  } else {
    return reply.error(RpcError::session_not_found(req.sessionId));
  }
  // After every write the close caused, so the prompts' answers go first.
  rt_.store.barrier_all([reply = std::move(reply)](Expected<void>) mutable { reply.result(json::object()); });
}

void Agent::on_load(bool replay, schema::LoadSessionRequest req, acp::Reply reply) {
  const std::string method = replay ? "session/load" : "session/resume";
  Session* session = registry_.find(req.sessionId);
  if (!session) {
    auto record = stored_record(req.sessionId);
    if (!record) return reply.error(RpcError::session_not_found(req.sessionId));
    auto opened = reopen(*record, req);
    if (!opened) return reply.error(opened.error());
    session = *opened;
  }
  if (session->busy() || scheduler_.queued(session->id()) > 0) {
    return reply.error(RpcError::invalid_request("Invalid request: session " + session->id() +
                                                 " has prompts running or queued; " + method + " it when idle"));
  }
  session->restore(replay, [this, id = session->id(), reply = std::move(reply)](Expected<json, RpcError> outcome) mutable {
    if (!outcome) return reply.error(outcome.error());
    json result = {{"_meta", {{"harnessd", std::move(*outcome)}}}};
    if (Session* s = registry_.find(id)) result["configOptions"] = s->config_options();
    reply.result(std::move(result));
  });
}

std::optional<SessionRecord> Agent::stored_record(const std::string& id) const {
  std::optional<json> stored = acp::is_safe_id(id) ? rt_.store.session(id) : std::nullopt;
  if (!stored) return std::nullopt;
  auto record = SessionRecord::from_json(*stored);
  if (!record) {
    acp::log::warn("session " + id + ": its record is not usable (" + record.error() + ")");
    return std::nullopt;
  }
  return std::move(*record);
}

Expected<Session*, RpcError> Agent::reopen(const SessionRecord& record, const schema::LoadSessionRequest& req) {
  auto profile = rt_.config.harnesses.find(record.harness);
  if (profile == rt_.config.harnesses.end()) {
    return RpcError{rpc_code::kHarnessUnavailable,
                    "session " + req.sessionId + " ran on harness '" + record.harness + "', which is not configured now",
                    {{"harness", record.harness}, {"sessionId", req.sessionId}}};
  }
  if (auto bad = check_cwd("session/load", req.cwd)) return *bad;
  SessionInit init;
  init.id = req.sessionId;
  init.cwd = req.cwd;
  init.profile = profile->second;
  init.mcp_servers = req.mcpServers ? *req.mcpServers : record.mcp_servers;
  // The name comes back only if no open session took it meanwhile.
  if (record.name && !registry_.find_name(*record.name)) init.name = record.name;
  init.host_session = record.host_session;
  init.run_timeout = std::chrono::milliseconds(record.run_timeout_ms);
  if (auto lane = queue::parse_lane(record.lane)) init.lane = *lane;
  init.created_at = record.created_at;
  init.mode = record.mode;
  init.template_name = record.template_name.value_or("");
  init.summary = record.summary.value_or("");
  init.history = record.history;
  init.config_choices = record.config_options;
  if (record.adapter_options.is_array()) init.adapter_defaults = record.adapter_options;
  init.harness_fixed = true;
  // A oneshot session has no adapter session to come back to.
  if (init.mode != "oneshot" && record.adapter_session_id) init.restore_adapter_session = *record.adapter_session_id;
  Session& session = open_session(std::move(init));
  session.save_record();  // open again
  acp::log::info("session " + req.sessionId + ": reopened from the store");
  return &session;
}

RpcError Agent::template_error(const std::string& method, const std::string& problem) const {
  RpcError e = RpcError::invalid_params(method + ": _meta.harnessd.template: " + problem);
  e.data = {{"method", method},
            {"field", "_meta.harnessd.template"},
            {"builtin", harnesses::builtin_template_names()},
            {"templateDir", rt_.config.daemon.template_dir}};
  return e;
}

Expected<std::optional<harnesses::Template>, RpcError> Agent::prompt_template(const Session& session,
                                                                              const schema::HarnessdMeta& meta) {
  std::string name = meta.templateName.value_or(session.init().template_name);
  if (name.empty() && (session.oneshot() || !meta.context.is_null())) name = "single-shot";
  if (name.empty()) return std::optional<harnesses::Template>{};
  auto tmpl = harnesses::load_template(name, rt_.config.daemon.template_dir);
  if (!tmpl) return template_error("session/prompt", tmpl.error().message);
  return std::optional<harnesses::Template>(std::move(*tmpl));
}

void Agent::on_set_config_option(schema::SetConfigOptionRequest req, acp::Reply reply) {
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  if (req.configId != "harness") {
    // The adapter's own options (model, mode, ...) pass through.
    session->set_adapter_option(req.configId, req.value,
                                [reply = std::move(reply)](Expected<json, RpcError> options) mutable {
                                  if (!options) return reply.error(options.error());
                                  reply.result({{"configOptions", std::move(*options)}});
                                });
    return;
  }
  auto bad_value = [&](const std::string& problem) {
    RpcError e = RpcError::invalid_params("session/set_config_option: value " + problem);
    e.data = {{"method", "session/set_config_option"}, {"field", "value"}};
    return e;
  };
  if (!req.value.is_string()) return reply.error(bad_value("must be a harness name"));
  auto profile = rt_.config.harnesses.find(req.value.get<std::string>());
  if (profile == rt_.config.harnesses.end()) {
    return reply.error(bad_value("names unknown harness '" + req.value.get<std::string>() + "'"));
  }
  if (auto bad = check_harness(rt_, profile->first, profile->second)) return reply.error(*bad);
  auto changed = session->set_harness(profile->second);
  if (!changed) return reply.error(changed.error());
  acp::log::info("session " + session->id() + ": harness is now '" + profile->first + "'");
  reply.result({{"configOptions", session->config_options()}});
}

void Agent::on_set_mode(schema::SetModeRequest req, acp::Reply reply) {
  Session* session = registry_.find(req.sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req.sessionId));
  session->set_mode(req.modeId, [reply = std::move(reply)](Expected<void, RpcError> r) mutable {
    if (!r) return reply.error(r.error());
    reply.result(json::object());
  });
}

void Agent::on_set_summary(schema::SetSummaryRequest req, acp::Reply reply) {
  if (Session* session = registry_.find(req.sessionId)) {
    session->set_summary(std::move(req.summary));
  } else if (auto record = stored_record(req.sessionId)) {
    record->summary = req.summary.empty() ? std::nullopt : std::optional<std::string>(req.summary);
    record->updated_at = acp::iso_time();
    rt_.store.save_session(record->to_json());
  } else {
    return reply.error(RpcError::session_not_found(req.sessionId));
  }
  // Answered once the record holding it is on disk.
  rt_.store.barrier(req.sessionId, [reply = std::move(reply)](Expected<void> r) mutable {
    if (!r) return reply.error(RpcError{rpc_code::kStoreFailed, "the summary could not be saved: " + r.error().message, {}});
    reply.result(json::object());
  });
}

}  // namespace harnessd::worker
