#include "worker/queries.h"

#include <unistd.h>

#include "acp/files.h"
#include "worker/session_record.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

constexpr std::size_t kListPageSize = 100;

// The process's adapters: {live, idle, waiting, max, idleTtlMs}.
json adapters_json(const Runtime& rt) {
  return {{"live", rt.live->held()},
          {"idle", rt.live->idle_count()},
          {"waiting", rt.live->waiting()},
          {"max", rt.live->cap()},
          {"idleTtlMs", rt.config.daemon.adapter_idle_ttl.count()}};
}

}  // namespace

Queries::Queries(Runtime& rt, Registry& registry, const Scheduler& scheduler)
    : rt_(rt), registry_(registry), scheduler_(scheduler), wait_poll_(rt.loop), started_at_(acp::iso_time()) {
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
  c.bind<schema::WaitRequest>("_harnessd/runs/wait", schema::decode_wait,
                              [this](schema::WaitRequest req, acp::Reply r) { wait_run(std::move(req), std::move(r)); });
  c.on_request("_harnessd/status", [this](const json&, acp::Reply r) { status(std::move(r)); });
}

Queries::~Queries() { check_waits(true); }

void Queries::wait_run(schema::WaitRequest req, acp::Reply reply) {
  std::optional<RunRecord> run = rt_.store.find_run(req.runId);
  if (!run) {
    return reply.error(RpcError{rpc_code::kResourceNotFound, "Run not found: " + req.runId, {{"runId", req.runId}}});
  }
  if (run->ended()) return answer_ended(*run, std::move(reply));
  Waiter w{req.runId, std::move(reply), std::nullopt};
  if (req.timeoutMs) w.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*req.timeoutMs);
  waiters_.push_back(std::move(w));
  // The ledger is the truth for runs of every process on the state
  // directory, so it is asked again while anyone waits.
  if (!wait_poll_.active()) wait_poll_.start_every(std::chrono::milliseconds(50), [this] { check_waits(false); });
}

void Queries::answer_ended(const RunRecord& run, acp::Reply reply) {
  json result = {{"run", run_json(run)}};
  // A run of a session served here: after the prompt's own answer, which
  // waits for the same record to be on disk.
  if (Session* s = registry_.find(run.sessionId)) {
    s->after_answers([reply = std::move(reply), result = std::move(result)]() mutable { reply.result(std::move(result)); });
    return;
  }
  reply.result(std::move(result));
}

void Queries::check_waits(bool all) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<Waiter> keep;
  for (Waiter& w : waiters_) {
    if (!w.reply.pending()) continue;  // its client is gone
    std::optional<RunRecord> run = rt_.store.find_run(w.run_id);
    const bool timed_out = w.deadline && now >= *w.deadline;
    if (run && run->ended()) {
      // A run of a session served here: after the prompt's own answer,
      // which waits for the same record to be on disk.
      answer_ended(*run, std::move(w.reply));
    } else if (timed_out || all || !run) {
      json result = {{"pending", true}};
      if (run) result["run"] = run_json(*run);
      w.reply.result(std::move(result));
    } else {
      keep.push_back(std::move(w));
    }
  }
  waiters_ = std::move(keep);
  if (waiters_.empty()) wait_poll_.stop();
}

void Queries::status(acp::Reply reply) const {
  json sessions = json::array();
  registry_.for_each_open([&](const std::string& id, const auto& name, const Session& s) {
    sessions.push_back({{"sessionId", id},
                        {"name", name ? json(*name) : json()},
                        {"harness", s.profile().name},
                        {"state", s.state()},
                        {"queueDepth", scheduler_.queued(id)},
                        {"activeRunId", s.active_run_id() ? json(*s.active_run_id()) : json()}});
  });
  json result = {{"pid", ::getpid()},
                 {"startedAt", started_at_},
                 {"uptimeMs", std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - started_)
                                  .count()},
                 {"sessions", std::move(sessions)},
                 {"running", scheduler_.running()},
                 {"queued", scheduler_.total_queued()},
                 // One host on stdio; a server puts its clients here.
                 {"clients", 1}};
  if (rt_.live) {
    result["adapters"] = adapters_json(rt_);
  }
  reply.result(std::move(result));
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
      if (r->worker_host) meta["host"] = *r->worker_host;
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
    if (!s.host().empty()) entry["host"] = s.host();
    sessions.push_back(std::move(entry));
  });
  json result = {{"sessions", std::move(sessions)}, {"running", scheduler_.running()},
                 {"queued", scheduler_.total_queued()}};
  if (rt_.live) {
    result["adapters"] = adapters_json(rt_);
  }
  json harnesses = json::object();
  for (const auto& [name, breaker] : rt_.breakers) harnesses[name] = breaker.status();
  for (const auto& [name, pool] : rt_.warm) harnesses[name]["warm"] = pool->status();
  result["harnesses"] = std::move(harnesses);
  reply.result(std::move(result));
}

}  // namespace harnessd::worker
