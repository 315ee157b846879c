// Opening and closing sessions: session/new (with ensure by name),
// session/load and session/resume of a session of an earlier lifetime,
// session/close. Which process serves a session is decided by the store's
// leases, so that several harnessd processes on one state directory never
// serve one session at once.
#include <sys/stat.h>

#include <memory>

#include "acp/files.h"
#include "acp/log.h"
#include "adapters/process.h"
#include "adapters/sandbox.h"
#include "queue/ids.h"
#include "schema/acp.h"
#include "worker/agent.h"
#include "worker/placement.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

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

// session/new's answer for a named session that was open already (ensure):
// its id, name and effective sandbox.
json ensured_answer(const Session* session, const std::string& id, const std::string& name, bool reopened = false) {
  json meta = {{"name", name}, {"created", false}};
  if (reopened) meta["reopened"] = true;
  if (session) meta["sandbox"] = session->sandbox();
  if (session && !session->host().empty()) meta["host"] = session->host();
  return {{"sessionId", id}, {"_meta", {{"harnessd", std::move(meta)}}}};
}

// session/new's answer for a session it made: its id and options, its
// effective sandbox, the worker host of a remote one, and its name.
json created_answer(const std::string& id, const std::optional<std::string>& name, json sandbox,
                    const std::string& host, json options) {
  json ours = {{"sandbox", std::move(sandbox)}};
  if (!host.empty()) ours["host"] = host;
  if (name) {
    ours["name"] = *name;
    ours["created"] = true;
  }
  return {{"sessionId", id}, {"configOptions", std::move(options)}, {"_meta", {{"harnessd", std::move(ours)}}}};
}

// -32010 when the profile asks for a sandbox that this machine cannot make:
// never a session that only looks sandboxed (issue 17).
std::optional<RpcError> check_sandbox(const std::string& name, const harnesses::HarnessProfile& profile) {
  if (!profile.sandbox.enabled()) return std::nullopt;
  const adapters::SandboxSupport& sandbox = adapters::SandboxSupport::here();
  auto why = sandbox.refuse();
  if (!why) return std::nullopt;
  return RpcError{rpc_code::kHarnessUnavailable,
                  "harness '" + name + "' asks for a sandbox (" + profile.sandbox.mode +
                      ") that cannot be made here: " + *why + "; to fix: " + sandbox.hint(),
                  {{"harness", name},
                   {"reason", "sandbox"},
                   {"sandbox", profile.sandbox.mode},
                   {"why", *why},
                   {"hint", sandbox.hint()}}};
}

// session/new's `_meta.harnessd.sandbox`: what the host asked for, as a
// choice to tighten the harness's sandbox `base` with; -32602 when it would
// loosen it (issue 17: stricter, never looser).
Expected<adapters::Sandbox, RpcError> sandbox_choice(const std::string& harness, const adapters::Sandbox& base,
                                                     const schema::HarnessdMeta& meta) {
  adapters::Sandbox choice;
  if (!meta.sandboxMode && !meta.sandboxNetwork) return choice;
  choice.mode = meta.sandboxMode.value_or("none");
  choice.network = meta.sandboxNetwork.value_or(true);
  adapters::Sandbox asked = base;
  if (meta.sandboxMode) asked.mode = *meta.sandboxMode;
  if (meta.sandboxNetwork) asked.network = *meta.sandboxNetwork;
  std::string problem;
  if (!adapters::at_least_as_strict(asked, base)) {
    problem = "can only make harness '" + harness + "''s sandbox stricter, and it has mode " + base.mode +
              (base.network ? " with network" : " without network");
  } else if (!asked.enabled() && !asked.network) {
    problem = "network: false needs a mode, \"read-only\" or \"workspace-write\"";
  }
  if (problem.empty()) return choice;
  RpcError e = RpcError::invalid_params("session/new: _meta.harnessd.sandbox " + problem);
  e.data = {{"method", "session/new"}, {"field", "_meta.harnessd.sandbox"}};
  return e;
}

}  // namespace

std::optional<RpcError> check_harness(const Runtime& rt, const std::string& name,
                                      const harnesses::HarnessProfile& profile) {
  if (profile.limits.any()) {
    // Never a session that only looks limited.
    if (auto why = adapters::CgroupSupport::here().refuse(profile.limits)) {
      return RpcError{rpc_code::kHarnessUnavailable,
                      "harness '" + name + "' has limits (" + profile.limits.describe() +
                          ") that cannot be enforced here: " + *why,
                      {{"harness", name}, {"reason", "limits"}, {"limits", profile.limits.describe()}}};
    }
  }
  if (auto bad = check_sandbox(name, profile)) return bad;
  // A remote harness's command runs on its worker; here it takes ssh.
  const std::string local = profile.remote.enabled() ? "ssh" : profile.command.at(0);
  auto program = adapters::find_executable(local, adapter_path(rt, profile));
  if (program) return std::nullopt;
  RpcError e{rpc_code::kHarnessUnavailable, "harness '" + name + "' cannot run: " + program.error().message,
             {{"harness", name}, {"command", profile.remote.enabled() ? json::array({"ssh"}) : json(profile.command)}}};
  const std::string hint = profile.remote.enabled()
                               ? "install the OpenSSH client (Debian: apt-get install openssh-client)"
                               : profile.install_hint;
  if (!hint.empty()) e.data["hint"] = hint;
  return e;
}

void Agent::on_new_session(schema::NewSessionRequest req, acp::Reply reply) {
  // ensure: hand back the open session of that name (acpx "sessions ensure").
  if (req.harnessd.ensure) {
    const std::string name = *req.harnessd.name;
    if (auto existing = registry_.find_name(name)) {
      reply.result(ensured_answer(registry_.find(*existing), *existing, name));
      return;
    }
    // Which session serves the name is decided in the state database, so
    // that two processes asking at once do not both create or reopen it.
    std::string id = queue::make_id("sess_");
    rt_.store.claim_name(name, id, [this, alive = std::weak_ptr<bool>(alive_), req = std::move(req),
                                    reply = std::move(reply), id](Expected<Store::Claim> claim) mutable {
      if (alive.expired()) return;
      if (claim) return ensure_claimed(std::move(req), std::move(reply), std::move(*claim));
      acp::log::warn("session name " + *req.harnessd.name + ": the state database cannot say who serves it (" +
                     claim.error().message + "); deciding in this process alone");
      ensure_locally(std::move(req), std::move(reply), std::move(id));
    });
    return;
  }
  create_session(std::move(req), std::move(reply), queue::make_id("sess_"), false);
}

void Agent::ensure_claimed(schema::NewSessionRequest req, acp::Reply reply, Store::Claim claim) {
  const std::string name = *req.harnessd.name;
  if (closing_) {
    if (!claim.held) rt_.store.release_session(claim.session_id);
    return reply.error(shutting_down("session/new"));
  }
  if (claim.held) return reply.error(session_busy(*claim.held, name));
  if (claim.created) return create_session(std::move(req), std::move(reply), std::move(claim.session_id), true);
  // Already ours (a second ensure of the name while the first was decided).
  if (Session* open = registry_.find(claim.session_id)) {
    reply.result(ensured_answer(open, claim.session_id, name));
    return;
  }
  // A session of that name from an earlier lifetime, not closed, comes
  // back: names outlive the daemon.
  auto record = stored_record(claim.session_id);
  if (!record) {
    rt_.store.release_session(claim.session_id);
    return create_session(std::move(req), std::move(reply), queue::make_id("sess_"), false);
  }
  reopen_named(std::move(req), std::move(reply), *record);
}

void Agent::ensure_locally(schema::NewSessionRequest req, acp::Reply reply, std::string id) {
  const std::string name = *req.harnessd.name;
  if (auto existing = registry_.find_name(name)) {
    reply.result(ensured_answer(registry_.find(*existing), *existing, name));
    return;
  }
  std::optional<SessionRecord> found;
  for (const auto& stored : rt_.store.sessions_named(name)) {
    auto record = SessionRecord::from_json(stored);
    if (!record || record->closed || record->name != name) continue;
    if (!found || record->updated_at > found->updated_at) found = std::move(*record);
  }
  if (found) return reopen_named(std::move(req), std::move(reply), *found);
  create_session(std::move(req), std::move(reply), std::move(id), false);
}

void Agent::reopen_named(schema::NewSessionRequest req, acp::Reply reply, const SessionRecord& record) {
  schema::LoadSessionRequest again{record.session_id, req.cwd, req.mcpServers};
  auto reopened = reopen(record, again);
  if (!reopened) return reply.error(reopened.error());
  reply.result(ensured_answer(registry_.find(again.sessionId), again.sessionId, *req.harnessd.name, true));
}

void Agent::create_session(schema::NewSessionRequest req, acp::Reply reply, std::string id, bool leased) {
  const auto& meta = req.harnessd;
  auto refuse = [&](const RpcError& e) {
    if (leased) rt_.store.release_session(id);
    reply.error(e);
  };
  std::string harness = meta.harness.value_or(rt_.config.daemon.default_harness);
  auto profile = rt_.config.harnesses.find(harness);
  if (profile == rt_.config.harnesses.end()) {
    std::string known;
    for (const auto& [name, p] : rt_.config.harnesses) known += (known.empty() ? "" : ", ") + name;
    RpcError e = RpcError::invalid_params("session/new: _meta.harnessd.harness names unknown harness '" + harness +
                                          "' (known: " + known + ")");
    e.data = {{"method", "session/new"}, {"field", "_meta.harnessd.harness"}};
    return refuse(e);
  }
  const harnesses::RemoteSpec& remote = profile->second.remote;
  // A remote session's cwd is the worker's to check (remote_cwd).
  if (!remote.enabled()) {
    if (auto bad = check_cwd("session/new", req.cwd)) return refuse(*bad);
  }
  auto choice = sandbox_choice(harness, profile->second.sandbox, meta);
  if (!choice) return refuse(choice.error());
  harnesses::HarnessProfile effective = profile->second;
  effective.sandbox = adapters::tightened(effective.sandbox, *choice);
  // Fail now, not at the first prompt, when the harness cannot run here.
  if (auto bad = check_harness(rt_, harness, effective)) return refuse(*bad);

  if (meta.permissions && !harnesses::no_looser(*meta.permissions, profile->second.policy.mode)) {
    RpcError e = RpcError::invalid_params("session/new: _meta.harnessd.permissions '" + *meta.permissions +
                                          "' is looser than harness '" + harness + "' allows (its permissions are '" +
                                          profile->second.policy.mode + "'); a session may only be stricter");
    e.data = {{"method", "session/new"}, {"field", "_meta.harnessd.permissions"}};
    return refuse(e);
  }

  SessionInit init;
  init.permissions = meta.permissions;
  init.mode = meta.mode.value_or(profile->second.mode);
  init.template_name = meta.templateName.value_or(profile->second.template_name);
  if (!init.template_name.empty()) {
    auto tmpl = harnesses::load_template(init.template_name, rt_.config.daemon.template_dir);
    if (!tmpl) return refuse(template_error("session/new", tmpl.error().message));
  }
  init.id = id;
  init.cwd = req.cwd;
  init.profile = profile->second;
  init.sandbox_choice = *choice;
  init.mcp_servers = req.mcpServers;
  init.name = meta.name;
  init.host_session = meta.hostSession ? meta.hostSession : host_session_from_env(rt_.parent_env);
  init.run_timeout = meta.timeoutMs ? std::chrono::milliseconds(*meta.timeoutMs) : rt_.config.daemon.run_timeout;
  if (meta.lane) init.lane = *queue::parse_lane(*meta.lane);
  std::vector<std::string> hosts;
  if (remote.enabled()) {
    hosts = placement_order(remote, sessions_per_host());
    if (hosts.empty()) return refuse(no_capacity(harness, remote));
    init.host = hosts.front();
  }
  // A new id: nobody else can ask for it before its lease is written.
  if (!leased) rt_.store.claim_session(id, meta.name, nullptr);
  Session& session = open_session(std::move(init));
  if (remote.enabled()) return place_session(session, std::move(hosts), meta.name, std::move(reply));
  session.save_record();
  acp::log::info("session " + id + ": created for harness '" + harness + "' in " + req.cwd +
                 (meta.name ? " as '" + *meta.name + "'" : ""));
  auto answer = [id, name = meta.name, sandbox = session.sandbox(), reply = std::move(reply)](json options) mutable {
    reply.result(created_answer(id, name, std::move(sandbox), "", std::move(options)));
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

std::map<std::string, std::size_t> Agent::sessions_per_host() const {
  std::map<std::string, std::size_t> open;
  registry_.for_each_open([&](const std::string&, const auto&, const Session& s) {
    if (!s.host().empty()) ++open[s.host()];
  });
  return open;
}

RpcError Agent::no_capacity(const std::string& harness, const harnesses::RemoteSpec& remote) const {
  auto open = sessions_per_host();
  json hosts = json::array();
  for (const auto& host : remote.hosts) hosts.push_back({{"host", host}, {"sessions", open[host]}, {"capacity", remote.capacity}});
  return RpcError{rpc_code::kNoCapacity,
                  "session/new: every worker host of harness '" + harness + "' holds its " +
                      std::to_string(remote.capacity) + " sessions; retry when one closes",
                  {{"harness", harness}, {"retryable", true}, {"retryAfterMs", 1000}, {"hosts", std::move(hosts)}}};
}

void Agent::place_session(Session& session, std::vector<std::string> hosts, std::optional<std::string> name,
                          acp::Reply reply) {
  // The worker starts now: a host that cannot be reached is passed over,
  // and a missing remote cwd refuses the session, while the host waits.
  const std::string id = session.id();
  acp::log::info("session " + id + ": placing harness '" + session.profile().name + "' on " + hosts.front());
  session.place(std::move(hosts), [this, alive = std::weak_ptr<bool>(alive_), id, name = std::move(name),
                                   reply = std::move(reply)](Expected<void, RpcError> placed) mutable {
    if (alive.expired()) return;
    Session* s = registry_.find(id);
    if (!s || !placed) {
      RpcError e = placed ? RpcError::internal("session " + id + " closed while it was placed") : placed.error();
      if (s) close_session(id, "no worker host took it: " + e.message);
      return reply.error(e);
    }
    s->save_record();
    acp::log::info("session " + id + ": runs on " + s->host());
    reply.result(created_answer(id, name, s->sandbox(), s->host(), s->config_options()));
  });
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

void Agent::on_close(schema::SessionRef req, acp::Reply reply) {
  if (registry_.find(req.sessionId)) {
    // ACP "session/close": cancel the running work as if session/cancel had
    // arrived; its prompts are answered "cancelled", in order, before this reply.
    close_session(req.sessionId, "session/close", true, [&store = rt_.store, reply = std::move(reply)]() mutable {
      store.barrier_all([reply = std::move(reply)](Expected<void>) mutable { reply.result(json::object()); });
    });
    return;
  }
  if (!stored_record(req.sessionId)) return reply.error(RpcError::session_not_found(req.sessionId));
  // A session of an earlier lifetime: only its record changes, unless
  // another live process serves it.
  std::string id = req.sessionId;
  rt_.store.claim_session(id, std::nullopt, [this, alive = std::weak_ptr<bool>(alive_), id,
                                             reply = std::move(reply)](Expected<Store::Claim> claim) mutable {
    if (alive.expired()) return;
    if (claim && claim->held) return reply.error(session_busy(*claim->held, std::nullopt));
    if (registry_.find(id)) {  // loaded meanwhile by a request before this one
      close_session(id, "session/close", true, [&store = rt_.store, reply = std::move(reply)]() mutable {
        store.barrier_all([reply = std::move(reply)](Expected<void>) mutable { reply.result(json::object()); });
      });
      return;
    }
    if (auto record = stored_record(id)) {
      record->closed = true;
      record->updated_at = acp::iso_time();
      rt_.store.save_session(record->to_json());
    }
    if (claim) rt_.store.release_session(id);
    rt_.store.barrier_all([reply = std::move(reply)](Expected<void>) mutable { reply.result(json::object()); });
  });
}

void Agent::on_load(bool replay, schema::LoadSessionRequest req, acp::Reply reply) {
  if (registry_.find(req.sessionId)) return restore(replay, req.sessionId, std::move(reply));
  auto record = stored_record(req.sessionId);
  if (!record) return reply.error(RpcError::session_not_found(req.sessionId));
  // A session of an earlier lifetime: this process serves it only if no
  // other live one does.
  std::string id = req.sessionId;
  rt_.store.claim_session(id, record->name, [this, alive = std::weak_ptr<bool>(alive_), replay, req = std::move(req),
                                              reply = std::move(reply)](Expected<Store::Claim> claim) mutable {
    if (alive.expired()) return;
    const std::string method = replay ? "session/load" : "session/resume";
    if (claim && claim->held) return reply.error(session_busy(*claim->held, std::nullopt));
    if (!claim) {
      acp::log::warn("session " + req.sessionId + ": the state database cannot say who serves it (" +
                     claim.error().message + "); serving it from this process");
    }
    auto give_up = [&](const RpcError& e) {
      if (claim && !registry_.find(req.sessionId)) rt_.store.release_session(req.sessionId);
      reply.error(e);
    };
    if (closing_) return give_up(shutting_down(method));
    if (!registry_.find(req.sessionId)) {  // not reopened meanwhile by a request before this one
      auto stored = stored_record(req.sessionId);
      if (!stored) return give_up(RpcError::session_not_found(req.sessionId));
      auto opened = reopen(*stored, req);
      if (!opened) return give_up(opened.error());
    }
    restore(replay, req.sessionId, std::move(reply));
  });
}

void Agent::restore(bool replay, const std::string& id, acp::Reply reply) {
  Session* session = registry_.find(id);
  if (!session) return reply.error(RpcError::session_not_found(id));
  if (session->busy() || scheduler_.queued(id) > 0) {
    return reply.error(RpcError::invalid_request("Invalid request: session " + id + " has prompts running or queued; " +
                                                 (replay ? "session/load" : "session/resume") + " it when idle"));
  }
  session->restore(replay, [this, id, reply = std::move(reply)](Expected<json, RpcError> outcome) mutable {
    if (!outcome) return reply.error(outcome.error());
    json result = {{"_meta", {{"harnessd", std::move(*outcome)}}}};
    if (Session* s = registry_.find(id)) result["configOptions"] = s->config_options();
    reply.result(std::move(result));
  });
}

RpcError Agent::shutting_down(const std::string& method) {
  return RpcError::internal(method + ": harnessd is shutting down");
}

RpcError Agent::session_busy(const StateDb::Lease& held, const std::optional<std::string>& name) {
  std::string which = "session " + held.session_id + (name ? " ('" + *name + "')" : "");
  RpcError e{rpc_code::kSessionBusy,
             which + " is served by another harnessd process (pid " + std::to_string(held.pid) + ", since " +
                 held.since + "); one process serves a session at a time: retry once it lets go",
             {{"sessionId", held.session_id},
              {"owner", {{"instance", held.owner}, {"pid", held.pid}, {"since", held.since}}},
              {"retryable", true}}};
  if (name) e.data["name"] = *name;
  return e;
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
  const harnesses::RemoteSpec& remote = profile->second.remote;
  if (!remote.enabled()) {
    if (auto bad = check_cwd("session/load", req.cwd)) return *bad;
  }
  SessionInit init;
  // A remote session goes back to its host, whatever the pool says now.
  if (remote.enabled()) {
    init.host = record.worker_host.value_or("");
    if (init.host.empty()) {
      auto hosts = placement_order(remote, sessions_per_host());
      init.host = hosts.empty() ? remote.hosts.front() : hosts.front();
    }
  }
  // The host's stricter sandbox comes back with the session.
  if (record.sandbox.is_object()) {
    // A record edited by hand errs on the strict side.
    auto mode = record.sandbox.find("mode");
    auto network = record.sandbox.find("network");
    if (mode != record.sandbox.end()) {
      init.sandbox_choice.mode = mode->is_string() && adapters::is_sandbox_mode(mode->get_ref<const std::string&>())
                                     ? mode->get<std::string>()
                                     : "read-only";
    }
    init.sandbox_choice.network = network == record.sandbox.end() || (network->is_boolean() && network->get<bool>());
  }
  harnesses::HarnessProfile effective = profile->second;
  effective.sandbox = adapters::tightened(effective.sandbox, init.sandbox_choice);
  if (auto bad = check_sandbox(record.harness, effective)) return *bad;
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
  init.permissions = record.permissions;
  init.history = record.history;
  init.usage = record.usage;
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

}  // namespace harnessd::worker

namespace harnessd::worker {

void Agent::on_watch(schema::WatchRequest req, acp::Reply reply) {
  std::string id;
  if (req.sessionId) {
    id = *req.sessionId;
  } else if (auto open = registry_.find_name(*req.name)) {
    id = *open;
  } else {
    // The newest open record by that name, as ensure finds it.
    std::optional<SessionRecord> found;
    for (const auto& stored : rt_.store.sessions_named(*req.name)) {
      auto record = SessionRecord::from_json(stored);
      if (!record || record->closed || record->name != *req.name) continue;
      if (!found || record->updated_at > found->updated_at) found = std::move(*record);
    }
    if (!found) {
      return reply.error(RpcError{rpc_code::kResourceNotFound, "No open session is named '" + *req.name + "'",
                                  {{"name", *req.name}}});
    }
    id = found->session_id;
  }
  if (registry_.find(id)) return start_watch(id, req.fromSeq, std::move(reply));
  // A session of an earlier lifetime: served from here from now on, like a
  // session/resume, but its adapter starts only with its next prompt.
  auto record = stored_record(id);
  if (!record || record->closed) return reply.error(RpcError::session_not_found(id));
  rt_.store.claim_session(id, record->name, [this, alive = std::weak_ptr<bool>(alive_), id, from = req.fromSeq,
                                             reply = std::move(reply)](Expected<Store::Claim> claim) mutable {
    if (alive.expired()) return;
    if (claim && claim->held) return reply.error(session_busy(*claim->held, std::nullopt));
    if (closing_) return reply.error(shutting_down("_harnessd/sessions/watch"));
    if (!registry_.find(id)) {
      auto stored = stored_record(id);
      auto opened = stored ? reopen(*stored, schema::LoadSessionRequest{id, stored->cwd, std::nullopt})
                           : Expected<Session*, RpcError>(RpcError::session_not_found(id));
      if (!opened) {
        if (claim) rt_.store.release_session(id);
        return reply.error(opened.error());
      }
    }
    start_watch(id, from, std::move(reply));
  });
}

void Agent::start_watch(const std::string& id, std::uint64_t from_seq, acp::Reply reply) {
  Session* session = registry_.find(id);
  if (!session) return reply.error(RpcError::session_not_found(id));
  json watch_id = reply.id();
  watches_[watch_id.dump()] = id;
  session->watch(watch_id, from_seq, [id, watch_id, reply = std::move(reply)](Expected<FrameLog::Started> s) mutable {
    if (!s) return reply.error(RpcError::internal("_harnessd/sessions/watch: " + s.error().message));
    json result = {{"watchId", watch_id}, {"sessionId", id}, {"nextSeq", s->next_seq}, {"replayed", s->replayed}};
    if (s->missing) result["missing"] = s->missing;
    reply.result(std::move(result));
  });
}

void Agent::on_unwatch(json watch_id, acp::Reply reply) {
  auto it = watches_.find(watch_id.dump());
  Session* session = it == watches_.end() ? nullptr : registry_.find(it->second);
  if (it != watches_.end()) watches_.erase(it);
  if (!session || !session->unwatch(watch_id)) {
    RpcError e = RpcError::invalid_params("_harnessd/sessions/unwatch: no watch " + watch_id.dump());
    e.data = {{"method", "_harnessd/sessions/unwatch"}, {"field", "watchId"}};
    return reply.error(e);
  }
  reply.result(json::object());
}

}  // namespace harnessd::worker
