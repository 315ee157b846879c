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

Agent::Agent(Runtime& rt) : rt_(rt) {
  Connection& c = rt_.host;
  c.on_request("initialize", [this](const json& p, Reply r) { on_initialize(p, std::move(r)); });
  c.on_request("session/new", [this](const json& p, Reply r) { on_new_session(p, std::move(r)); });
  c.on_request("session/prompt", [this](const json& p, Reply r) { on_prompt(p, std::move(r)); });
  c.on_request("session/close", [this](const json& p, Reply r) { on_close(p, std::move(r)); });
  c.on_request("session/list", [this](const json& p, Reply r) { on_list(p, std::move(r)); });
  c.on_notification("session/cancel", [this](const json& p) { on_cancel(p); });
}

Agent::~Agent() {
  rt_.host.clear_handlers();
  close_all();
}

void Agent::close_all() {
  auto sessions = std::move(sessions_);
  sessions_.clear();
  for (auto& [id, session] : sessions) session->close();
}

Session* Agent::find(const std::string& id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
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

  std::string harness = req->harnessd.harness.value_or(rt_.config.daemon.default_harness);
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
  init.name = req->harnessd.name;
  std::string id = init.id;
  sessions_.emplace(id, std::make_unique<Session>(rt_, std::move(init)));
  log::info("session " + id + ": created for harness '" + harness + "' in " + req->cwd);
  reply.result({{"sessionId", id}});
}

void Agent::on_prompt(const json& params, Reply reply) {
  auto req = schema::decode_prompt(params, kPromptCapabilities);
  if (!req) return reply.error(req.error());
  Session* session = find(req->sessionId);
  if (!session) return reply.error(RpcError::session_not_found(req->sessionId));
  session->prompt(std::move(req->prompt), std::move(reply));
}

void Agent::on_cancel(const json& params) {
  // A notification: problems are logged, never answered.
  auto req = schema::decode_session_ref("session/cancel", params);
  if (!req) {
    log::warn("ignored session/cancel: " + req.error().message);
    return;
  }
  Session* session = find(req->sessionId);
  if (!session) {
    log::warn("ignored session/cancel for unknown session " + req->sessionId);
    return;
  }
  session->cancel();
}

void Agent::on_close(const json& params, Reply reply) {
  auto req = schema::decode_session_ref("session/close", params);
  if (!req) return reply.error(req.error());
  auto it = sessions_.find(req->sessionId);
  if (it == sessions_.end()) return reply.error(RpcError::session_not_found(req->sessionId));
  std::unique_ptr<Session> session = std::move(it->second);
  sessions_.erase(it);
  // ACP "session/close": cancel the running work as if session/cancel had
  // arrived (its prompt is answered "cancelled" before this reply).
  session->close();
  log::info("session " + req->sessionId + ": closed");
  reply.result(json::object());
}

void Agent::on_list(const json& params, Reply reply) {
  auto req = schema::decode_list_sessions(params);
  if (!req) return reply.error(req.error());
  // The cursor is the id of the last session of the previous page.
  auto it = sessions_.begin();
  if (req->cursor) {
    if (req->cursor->rfind("after:", 0) != 0) {
      RpcError e = RpcError::invalid_params("session/list: cursor '" + *req->cursor + "' is not valid");
      e.data = {{"method", "session/list"}, {"field", "cursor"}};
      return reply.error(e);
    }
    it = sessions_.upper_bound(req->cursor->substr(6));
  }
  json sessions = json::array();
  std::string last;
  for (; it != sessions_.end(); ++it) {
    const Session& s = *it->second;
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
  if (it != sessions_.end()) result["nextCursor"] = "after:" + last;
  reply.result(std::move(result));
}

}  // namespace harnessd::worker
