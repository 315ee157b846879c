#include "worker/queries.h"

#include "acp/files.h"
#include "worker/session_record.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

constexpr std::size_t kListPageSize = 100;

}  // namespace

Queries::Queries(Runtime& rt, const Registry& registry, const Scheduler& scheduler)
    : rt_(rt), registry_(registry), scheduler_(scheduler) {
  acp::Connection& c = rt_.host;
  c.bind<schema::ListSessionsRequest>(
      "session/list", schema::decode_list_sessions,
      [this](schema::ListSessionsRequest req, acp::Reply r) { list_sessions(std::move(req), std::move(r)); });
  c.on_request("_harnessd/sessions/list", [this](const json&, acp::Reply r) { open_sessions(std::move(r)); });
  c.bind<std::string>("_harnessd/runs/get", schema::decode_run_get,
                      [this](std::string id, acp::Reply r) { get_run(id, std::move(r)); });
  c.bind<schema::ListRunsRequest>(
      "_harnessd/runs/list", schema::decode_list_runs,
      [this](schema::ListRunsRequest req, acp::Reply r) { list_runs(std::move(req), std::move(r)); });
}

void Queries::list_sessions(schema::ListSessionsRequest req, acp::Reply reply) const {
  // Every session the store knows, of this lifetime or earlier ones, that
  // is not closed. The cursor is the id of the last session of a page.
  std::string after;
  if (req.cursor) {
    if (req.cursor->rfind("after:", 0) != 0) {
      RpcError e = RpcError::invalid_params("session/list: cursor '" + *req.cursor + "' is not valid");
      e.data = {{"method", "session/list"}, {"field", "cursor"}};
      return reply.error(e);
    }
    after = req.cursor->substr(6);
  }
  json sessions = json::array();
  std::string last;
  bool more = false;
  // Read in slices, since closed records and other folders are skipped.
  constexpr std::size_t kSlice = 256;
  // Who serves each session now (this process or another).
  const auto served = rt_.store.leases();
  for (;;) {
    std::vector<json> slice = rt_.store.sessions_after(after, kSlice);
    for (const auto& stored : slice) {
      auto r = SessionRecord::from_json(stored);
      if (r) after = r->session_id;
      if (!r || r->closed) continue;
      if (req.cwd && r->cwd != *req.cwd) continue;
      if (sessions.size() == kListPageSize) {
        more = true;
        break;
      }
      json entry = {{"sessionId", r->session_id}, {"cwd", r->cwd}, {"updatedAt", r->updated_at}};
      json meta = {{"harness", r->harness}, {"open", registry_.find(r->session_id) != nullptr}};
      if (auto lease = served.find(r->session_id); lease != served.end()) {
        meta["servedBy"] = {{"pid", lease->second.pid},
                            {"instance", lease->second.owner},
                            {"since", lease->second.since},
                            {"thisProcess", lease->second.owner == rt_.store.instance()}};
      }
      if (r->name) {
        entry["title"] = *r->name;
        meta["name"] = *r->name;
      }
      entry["_meta"] = {{"harnessd", meta}};
      sessions.push_back(std::move(entry));
      last = r->session_id;
    }
    if (more || slice.size() < kSlice) break;
  }
  json result = {{"sessions", std::move(sessions)}};
  if (more) result["nextCursor"] = "after:" + last;
  reply.result(std::move(result));
}

void Queries::get_run(const std::string& id, acp::Reply reply) const {
  std::optional<RunRecord> run = rt_.store.find_run(id);
  if (!run) {
    return reply.error(RpcError{rpc_code::kResourceNotFound, "Run not found: " + id, {{"runId", id}}});
  }
  reply.result({{"run", run_json(*run)}});
}

void Queries::list_runs(schema::ListRunsRequest req, acp::Reply reply) const {
  StateDb::RunFilter filter;
  filter.session_id = req.sessionId;
  filter.name = req.name;
  filter.state = req.state;
  filter.since = req.since;
  filter.limit = static_cast<std::size_t>(req.limit);
  // The most recent `limit` runs, oldest first.
  Store::RunPage page = rt_.store.list_runs(filter);
  json runs = json::array();
  for (const auto& r : page.runs) runs.push_back(run_json(r));
  reply.result({{"runs", std::move(runs)}, {"total", page.total}});
}

json Queries::run_json(const RunRecord& run) const {
  json j = run.to_json();
  // The recording exists from the moment the run started.
  if (!run.startedAt.empty()) j["recording"] = rt_.store.recording_path(run.runId, run.sessionId);
  return j;
}

void Queries::open_sessions(acp::Reply reply) const {
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
                  {"adapter", s.adapter_status()},
                  {"updatedAt", acp::iso_time(s.updated_at())}};
    sessions.push_back(std::move(entry));
  });
  json result = {{"sessions", std::move(sessions)}, {"running", scheduler_.running()},
                 {"queued", scheduler_.total_queued()}};
  if (rt_.live) {
    result["adapters"] = {{"live", rt_.live->held()},
                          {"idle", rt_.live->idle_count()},
                          {"waiting", rt_.live->waiting()},
                          {"max", rt_.live->cap()},
                          {"idleTtlMs", rt_.config.daemon.adapter_idle_ttl.count()}};
  }
  json harnesses = json::object();
  for (const auto& [name, breaker] : rt_.breakers) harnesses[name] = breaker.status();
  for (const auto& [name, pool] : rt_.warm) harnesses[name]["warm"] = pool->status();
  result["harnesses"] = std::move(harnesses);
  reply.result(std::move(result));
}

}  // namespace harnessd::worker
