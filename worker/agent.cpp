// Handlers of the ACP methods harnessd serves to its host.
#include "worker/agent.h"

#include <sys/stat.h>

#include <ctime>

#include "acp/log.h"
#include "adapters/process.h"
#include "harnessd_version.h"
#include "queue/ids.h"
#include "schema/acp.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

constexpr std::size_t kListPageSize = 100;

const schema::PromptCapabilities kPromptCapabilities{false, false, true};

std::string iso8601(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[40];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

std::string adapter_path(const Runtime& rt, const harnesses::HarnessProfile& profile) {
  std::string path;
  for (const auto& e : harnesses::adapter_environment(profile, rt.parent_env)) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  return path;
}

}  // namespace

json agent_capabilities() {
  return {{"loadSession", false},
          {"promptCapabilities",
           {{"image", kPromptCapabilities.image},
            {"audio", kPromptCapabilities.audio},
            {"embeddedContext", kPromptCapabilities.embeddedContext}}},
          {"mcpCapabilities", {{"http", false}, {"sse", false}}},
          {"sessionCapabilities", {{"list", json::object()}, {"close", json::object()}}}};
}

Agent::Agent(Runtime& rt)
    : rt_(rt),
      scheduler_(queue::SchedulerOptions{rt.config.daemon.max_concurrent_runs, rt.config.daemon.max_queue_depth, {4, 2, 1}}) {
  Connection& c = rt_.host;
  c.on_request("initialize", [this](const json& p, Reply r) { on_initialize(p, std::move(r)); });
  c.on_request("session/new", [this](const json& p, Reply r) { on_new_session(p, std::move(r)); });
  c.on_request("session/prompt", [this](const json& p, Reply r) { on_prompt(p, std::move(r)); });
  c.on_request("session/close", [this](const json& p, Reply r) { on_close(p, std::move(r)); });
  c.on_request("session/list", [this](const json& p, Reply r) { on_list(p, std::move(r)); });
  c.on_request("_harnessd/sessions/list", [this](const json& p, Reply r) { on_harnessd_sessions(p, std::move(r)); });
  c.on_notification("session/cancel", [this](const json& p) { on_cancel(p); });
  c.on_notification("$/cancel_request", [this](const json& p) { on_cancel_request(p); });
}

Agent::~Agent() {
  rt_.host.clear_handlers();
  close_all();
}

void Agent::close_all() {
  std::vector<std::string> ids;
  registry_.for_each_open([&](const std::string& id, const auto&, const Session&) { ids.push_back(id); });
  for (const auto& id : ids) close_session(id, "shutting down");
}

void Agent::close_session(const std::string& id, const std::string& why) {
  Session* session = registry_.find(id);
  if (!session) return;
  // Drop the queue first: it frees the session's slot, and the session's
  // own close() does not report back.
  std::vector<QueuedPrompt> queued = scheduler_.drop(id);
  session->close();
  for (auto& q : queued) answer_cancelled(q);
  std::unique_ptr<Session> closed = registry_.close(id);
  log::info("session " + id + ": closed (" + why + ")");
  closed.reset();
  pump();
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
        answer_cancelled(next->item);
        scheduler_.finished(next->session);
        continue;
      }
      session->start_turn(std::move(next->item));
    }
  } while (pump_again_);
  pumping_ = false;
}

void Agent::on_initialize(const json& params, Reply reply) {
  auto req = schema::decode_initialize(params);
  if (!req) return reply.error(req.error());
  rt_.client_capabilities = req->clientCapabilities;
  // ACP "Initialization": answer the one version we speak, whatever was asked.
  reply.result({{"protocolVersion", schema::kProtocolVersion},
                {"agentCapabilities", agent_capabilities()},
                {"authMethods", json::array()},
                {"agentInfo", {{"name", "harnessd"}, {"title", "harnessd"}, {"version", HARNESSD_VERSION}}}});
  rt_.host.mark_initialized();
}

void Agent::on_new_session(const json& params, Reply reply) {
  auto req = schema::decode_new_session(params);
  if (!req) return reply.error(req.error());
  const auto& meta = req->harnessd;

  // ensure: hand back the open session of that name (acpx "sessions ensure").
  if (meta.ensure) {
    if (auto existing = registry_.find_name(*meta.name)) {
      reply.result({{"sessionId", *existing}, {"_meta", {{"harnessd", {{"name", *meta.name}, {"created", false}}}}}});
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
  struct stat st {};
  if (::stat(req->cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    RpcError e = RpcError::invalid_params("session/new: cwd '" + req->cwd + "' is not an existing directory");
    e.data = {{"method", "session/new"}, {"field", "cwd"}};
    return reply.error(e);
  }
  // Fail now, not at the first prompt, when the harness cannot run here.
  auto program = adapters::find_executable(profile->second.command.at(0), adapter_path(rt_, profile->second));
  if (!program) {
    RpcError e{rpc_code::kHarnessUnavailable,
               "harness '" + harness + "' cannot run: " + program.error().message,
               {{"harness", harness}, {"command", profile->second.command}}};
    if (!profile->second.install_hint.empty()) e.data["hint"] = profile->second.install_hint;
    return reply.error(e);
  }

  SessionInit init;
  init.id = queue::make_id("sess_");
  init.cwd = req->cwd;
  init.profile = profile->second;
  init.mcp_servers = req->mcpServers;
  init.name = meta.name;
  init.run_timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : rt_.config.daemon.run_timeout;
  if (meta.lane) init.lane = *queue::parse_lane(*meta.lane);
  const std::string id = init.id;
  auto session = std::make_unique<Session>(rt_, std::move(init), [this](Session& s) {
    scheduler_.finished(s.id());
    pump();
  });
  auto displaced = registry_.add(id, meta.name, std::move(session));
  log::info("session " + id + ": created for harness '" + harness + "' in " + req->cwd +
            (meta.name ? " as '" + *meta.name + "'" : ""));
  if (displaced) {
    // Without ensure, a new session takes the name; the old one is closed.
    if (Session* old = registry_.find(*displaced)) old->forget_name();
    close_session(*displaced, "its name went to " + id);
  }
  json result = {{"sessionId", id}};
  if (meta.name) result["_meta"] = {{"harnessd", {{"name", *meta.name}, {"created", true}}}};
  reply.result(std::move(result));
}

void Agent::on_prompt(const json& params, Reply reply) {
  auto req = schema::decode_prompt(params, kPromptCapabilities);
  if (!req) return reply.error(req.error());
  Session* session = registry_.find(req->sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req->sessionId));
  if (!scheduler_.can_enqueue(session->id())) {
    std::size_t depth = rt_.config.daemon.max_queue_depth;
    RpcError e{rpc_code::kQueueFull,
               "session " + session->id() + " already has " + std::to_string(depth) + " prompts waiting; retry later",
               {{"sessionId", session->id()}, {"queueDepth", depth}, {"retryable", true}}};
    return reply.error(e);
  }
  QueuedPrompt prompt;
  prompt.run_id = queue::make_id("run_");
  prompt.blocks = std::move(req->prompt);
  prompt.reply = std::move(reply);
  const auto& meta = req->harnessd;
  prompt.timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : session->init().run_timeout;
  queue::Lane lane = meta.lane ? *queue::parse_lane(*meta.lane) : session->init().lane;
  scheduler_.enqueue(session->id(), lane, std::move(prompt));
  pump();
}

void Agent::on_cancel(const json& params) {
  // A notification: problems are logged, never answered.
  auto req = schema::decode_session_ref("session/cancel", params);
  if (!req) {
    log::warn("ignored session/cancel: " + req.error().message);
    return;
  }
  Session* session = registry_.find(req->sessionId);
  if (!session) {
    log::warn("ignored session/cancel for unknown session " + req->sessionId);
    return;
  }
  session->cancel();
}

void Agent::on_cancel_request(const json& params) {
  auto req = schema::decode_cancel_request(params);
  if (!req) {
    log::warn("ignored $/cancel_request: " + req.error().message);
    return;
  }
  // A queued prompt leaves the queue and is answered at once ...
  auto removed = scheduler_.remove_if([&](const QueuedPrompt& q) { return q.reply.id() == req->requestId; });
  if (removed) {
    log::info("session " + removed->first + ": queued request " + req->requestId.dump() + " cancelled");
    answer_cancelled(removed->second);
    return;
  }
  // ... a running one is cancelled like session/cancel.
  bool found = false;
  registry_.for_each_open([&](const std::string&, const auto&, Session& s) {
    if (!found) found = s.cancel_request(req->requestId);
  });
  if (!found) log::debug("$/cancel_request for " + req->requestId.dump() + ": no such prompt");
}

void Agent::on_close(const json& params, Reply reply) {
  auto req = schema::decode_session_ref("session/close", params);
  if (!req) return reply.error(req.error());
  if (!registry_.find(req->sessionId)) return reply.error(RpcError::session_not_found(req->sessionId));
  // ACP "session/close": cancel the running work as if session/cancel had
  // arrived; its prompts are answered "cancelled" before this reply.
  close_session(req->sessionId, "session/close");
  reply.result(json::object());
}

void Agent::on_list(const json& params, Reply reply) {
  auto req = schema::decode_list_sessions(params);
  if (!req) return reply.error(req.error());
  // The cursor is the id of the last session of the previous page.
  const auto& entries = registry_.entries();
  auto it = entries.begin();
  if (req->cursor) {
    if (req->cursor->rfind("after:", 0) != 0) {
      RpcError e = RpcError::invalid_params("session/list: cursor '" + *req->cursor + "' is not valid");
      e.data = {{"method", "session/list"}, {"field", "cursor"}};
      return reply.error(e);
    }
    it = entries.upper_bound(req->cursor->substr(6));
  }
  json sessions = json::array();
  std::string last;
  for (; it != entries.end(); ++it) {
    if (!it->second.open()) continue;
    const Session& s = *it->second.value;
    if (req->cwd && s.cwd() != *req->cwd) continue;
    if (sessions.size() == kListPageSize) break;
    json entry = {{"sessionId", s.id()}, {"cwd", s.cwd()}, {"updatedAt", iso8601(s.updated_at())}};
    if (s.name()) entry["title"] = *s.name();
    entry["_meta"] = {{"harnessd", {{"harness", s.profile().name}}}};
    if (s.name()) entry["_meta"]["harnessd"]["name"] = *s.name();
    sessions.push_back(std::move(entry));
    last = s.id();
  }
  json result = {{"sessions", std::move(sessions)}};
  if (it != entries.end()) result["nextCursor"] = "after:" + last;
  reply.result(std::move(result));
}

void Agent::on_harnessd_sessions(const json&, Reply reply) {
  json sessions = json::array();
  registry_.for_each_open([&](const std::string& id, const auto& name, const Session& s) {
    json entry = {{"sessionId", id},
                  {"name", name ? json(*name) : json()},
                  {"harness", s.profile().name},
                  {"cwd", s.cwd()},
                  {"state", s.state()},
                  {"queueDepth", scheduler_.queued(id)},
                  {"activeRequestId", s.active_request_id()},
                  {"activeRunId", s.active_run_id() ? json(*s.active_run_id()) : json()},
                  {"adapterPid", s.adapter_pid() ? json(s.adapter_pid()) : json()},
                  {"updatedAt", iso8601(s.updated_at())}};
    sessions.push_back(std::move(entry));
  });
  reply.result({{"sessions", std::move(sessions)}, {"running", scheduler_.running()},
                {"queued", scheduler_.total_queued()}});
}

}  // namespace harnessd::worker
