// The store's reads (runs and session records: the database's rows merged
// with what this process has not committed yet) and the session leases.
#include <unistd.h>

#include <set>
#include <utility>

#include "acp/files.h"
#include "acp/log.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

StateDb::Lease Store::lease_for(std::string id, std::optional<std::string> name) const {
  return {std::move(id), std::move(name), instance_, static_cast<std::int64_t>(::getpid()), acp::iso_time()};
}

namespace {

// A job for the writer thread whose result `done` gets on the loop (no
// `done`: the result is dropped).
template <class T>
DbWriter::Job job_with_result(std::function<Expected<T>(StateDb&)> work,
                              acp::UniqueFunction<void(Expected<T>)> done) {
  auto outcome = std::make_shared<Expected<T>>(Error{"not done"});
  DbWriter::Job job;
  job.apply = [work = std::move(work), outcome](StateDb& db) -> Expected<void> {
    *outcome = work(db);
    if (!*outcome) return Error{outcome->error().message};
    return {};
  };
  if (done) {
    job.done = [outcome, done = std::move(done)](Expected<void> r) mutable {
      if (!r) return done(std::move(r).error());
      done(std::move(*outcome));
    };
  }
  return job;
}

}  // namespace

void Store::claim(std::function<Expected<Claim>(StateDb&)> decide, ClaimDone done) {
  // Decided on the writer thread, in its write transaction: two processes
  // asking at once are served one after the other.
  to_database(job_with_result<Claim>(std::move(decide), std::move(done)));
}

void Store::with_database(std::function<Expected<json>(StateDb&)> work, DatabaseDone done) {
  to_database(job_with_result<json>(std::move(work), std::move(done)));
}

void Store::claim_session(std::string id, std::optional<std::string> name, ClaimDone done) {
  leased_.insert(id);
  int root = root_;
  claim(
      [me = lease_for(id, std::move(name)), root](StateDb& db) -> Expected<Claim> {
        auto held = db.take_lease(me, [root](const std::string& i) { return daemon_instance_alive(root, i); });
        if (!held) return std::move(held).error();
        return Claim{me.session_id, false, std::move(*held)};
      },
      std::move(done));
}

void Store::claim_name(std::string name, std::string new_id, ClaimDone done) {
  leased_by_name_ = true;  // the lease may end up on another session's id
  int root = root_;
  claim(
      [me = lease_for(std::move(new_id), std::move(name)), root](StateDb& db) -> Expected<Claim> {
        auto named = db.claim_name(me, [root](const std::string& i) { return daemon_instance_alive(root, i); });
        if (!named) return std::move(named).error();
        return Claim{named->session_id, named->created, std::move(named->held)};
      },
      std::move(done));
}

void Store::release_session(std::string id) {
  leased_.erase(id);
  if (!db_writer_) return;
  DbWriter::Job job;
  job.apply = [instance = instance_, id = std::move(id)](StateDb& db) { return db.release_leases(instance, id); };
  to_database(std::move(job));
}

std::map<std::string, StateDb::Lease> Store::leases() {
  std::map<std::string, StateDb::Lease> live;
  StateDb* reader = this->reader();
  if (!reader) return live;
  auto all = reader->leases();
  if (!all) {
    acp::log::error("cannot read the session leases: " + all.error().message);
    return live;
  }
  for (auto& lease : *all) {
    if (lease.owner != instance_ && !daemon_instance_alive(root_, lease.owner)) continue;
    std::string id = lease.session_id;
    live.emplace(std::move(id), std::move(lease));
  }
  return live;
}

std::optional<RunRecord> Store::find_run(const std::string& run_id) {
  std::optional<RunRecord> run;
  if (StateDb* reader = this->reader()) {
    auto stored = reader->find_run(run_id);
    if (!stored) acp::log::error("cannot read run " + run_id + ": " + stored.error().message);
    if (stored && *stored) run = std::move(**stored);
  }
  if (auto it = unsaved_entries_.find(run_id); it != unsaved_entries_.end()) {
    if (!run) run.emplace();
    for (const auto& e : it->second) run->apply(e);
  }
  return run;
}

Store::RunPage Store::list_runs(const StateDb::RunFilter& filter) {
  RunPage page;
  // One snapshot for every query below: the writer thread commits while
  // they run, and a run committed between two of them would be counted as
  // in the database yet missing from its rows.
  std::optional<ReadSnapshot> snapshot;
  StateDb* reader = this->reader();
  if (reader) snapshot.emplace(reader->db());
  if (reader) {
    auto rows = reader->runs(filter);
    auto total = reader->count_runs(filter);
    if (!rows || !total) {
      acp::log::error("cannot list runs: " + (rows ? total.error().message : rows.error().message));
    } else {
      page.runs = std::move(*rows);
      page.total = *total;
    }
  }
  if (unsaved_entries_.empty()) return page;
  auto matches = [&filter](const RunRecord& r) {
    if (filter.session_id && r.sessionId != *filter.session_id) return false;
    if (filter.session_ref && r.sessionId != *filter.session_ref && r.name != *filter.session_ref &&
        r.hostSession != *filter.session_ref) {
      return false;
    }
    if (filter.name && r.name != *filter.name) return false;
    if (filter.state && r.state != *filter.state) return false;
    if (filter.since && r.queuedAt < *filter.since) return false;
    return true;
  };
  // Rows the database has, brought up to date; then runs it has not seen.
  std::set<std::string> seen;
  std::vector<RunRecord> runs;
  for (auto& r : page.runs) {
    seen.insert(r.runId);
    if (auto it = unsaved_entries_.find(r.runId); it != unsaved_entries_.end()) {
      for (const auto& e : it->second) r.apply(e);
      if (!matches(r)) {
        --page.total;
        continue;
      }
    }
    runs.push_back(std::move(r));
  }
  for (const auto& id : unsaved_order_) {
    if (seen.count(id)) continue;
    auto it = unsaved_entries_.find(id);
    if (it == unsaved_entries_.end()) continue;
    auto stored = find_run(id);
    if (!stored || !matches(*stored)) continue;
    // A row the database has but outside this page is already counted.
    if (reader) {
      auto in_db = reader->find_run(id);
      if (in_db && *in_db) continue;
    }
    runs.push_back(std::move(*stored));
    ++page.total;
  }
  if (filter.limit && runs.size() > filter.limit) runs.erase(runs.begin(), runs.end() - static_cast<long>(filter.limit));
  page.runs = std::move(runs);
  return page;
}

std::optional<json> Store::session(const std::string& id) {
  if (auto it = unsaved_sessions_.find(id); it != unsaved_sessions_.end()) return it->second.record;
  StateDb* reader = this->reader();
  if (!reader) return std::nullopt;
  auto stored = reader->session(id);
  if (!stored) {
    acp::log::error("cannot read session " + id + ": " + stored.error().message);
    return std::nullopt;
  }
  return std::move(*stored);
}

namespace {

std::string record_id(const json& record) {
  auto it = record.find("sessionId");
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::vector<json> Store::sessions_named(const std::string& name) {
  std::map<std::string, json> found;
  if (StateDb* reader = this->reader()) {
    auto stored = reader->sessions_named(name);
    if (!stored) acp::log::error("cannot read sessions: " + stored.error().message);
    for (auto& r : stored ? *stored : std::vector<json>{}) {
      std::string id = record_id(r);  // before the move: the assignment takes its right side first
      found[id] = std::move(r);
    }
  }
  // Records saved here and not yet committed are newer.
  for (const auto& [id, unsaved] : unsaved_sessions_) {
    const json& r = unsaved.record;
    bool named = (r.contains("name") && r["name"] == name) || (r.contains("hostSession") && r["hostSession"] == name);
    if (named) {
      found[id] = r;
    } else {
      found.erase(id);
    }
  }
  std::vector<json> out;
  for (auto& [id, r] : found) out.push_back(std::move(r));
  return out;
}

std::vector<json> Store::sessions_after(const std::string& after_id, std::size_t limit) {
  std::map<std::string, json> found;
  if (StateDb* reader = this->reader()) {
    // Enough rows that the records only this process has cannot push the
    // page short.
    auto stored = reader->sessions_after(after_id, limit ? limit + unsaved_sessions_.size() : 0);
    if (!stored) acp::log::error("cannot read sessions: " + stored.error().message);
    for (auto& r : stored ? *stored : std::vector<json>{}) {
      std::string id = record_id(r);  // before the move: the assignment takes its right side first
      found[id] = std::move(r);
    }
  }
  for (const auto& [id, unsaved] : unsaved_sessions_) {
    if (id > after_id) found[id] = unsaved.record;
  }
  std::vector<json> out;
  for (auto& [id, r] : found) {
    if (limit && out.size() == limit) break;
    out.push_back(std::move(r));
  }
  return out;
}

std::map<std::string, json> Store::harness_options() { return std::exchange(harness_options_at_open_, {}); }

StateDb* Store::reader() {
  if (reader_ || unusable_ || !db_writer_) return reader_.get();
  auto opened = connect();
  if (!opened) {
    acp::log::error("cannot read the state database " + dir_ + "/" + StateDb::kFile + ": " + opened.error().message);
    return nullptr;
  }
  reader_ = std::move(*opened);
  return reader_.get();
}


}  // namespace harnessd::worker
