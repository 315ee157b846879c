// The state database's schema, its run and session queries, and the import
// of a file-only state directory.
#include "worker/state_db.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "acp/files.h"
#include "acp/json_write.h"
#include "acp/log.h"
#include "schema/json_parse.h"
#include "worker/session_record.h"
#include "worker/state_dir.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Schema steps: step k takes version k to k + 1. Only ever append a step;
// a step only adds.
constexpr const char* kSchema[] = {
    // 1: runs, their transitions, session records.
    R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE runs(
  seq INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL UNIQUE,
  session_id TEXT NOT NULL DEFAULT '',
  name TEXT,
  host_session TEXT,
  harness TEXT NOT NULL DEFAULT '',
  request_id TEXT,
  daemon TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  queued_at TEXT,
  started_at TEXT,
  ended_at TEXT,
  outcome TEXT);
CREATE INDEX runs_by_session ON runs(session_id, seq);
CREATE INDEX runs_open ON runs(daemon) WHERE ended_at IS NULL;
CREATE TABLE transitions(
  run_seq INTEGER NOT NULL REFERENCES runs(seq) ON DELETE CASCADE,
  event TEXT NOT NULL,
  time TEXT NOT NULL,
  entry TEXT NOT NULL,
  terminal INTEGER NOT NULL CHECK (terminal IN (0, 1)));
CREATE INDEX transitions_by_run ON transitions(run_seq);
CREATE UNIQUE INDEX one_end_per_run ON transitions(run_seq) WHERE terminal = 1;
CREATE TABLE sessions(
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name TEXT,
  host_session TEXT,
  closed INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT,
  record TEXT NOT NULL);
CREATE INDEX sessions_by_name ON sessions(name) WHERE name IS NOT NULL;
CREATE INDEX sessions_by_host ON sessions(host_session) WHERE host_session IS NOT NULL;
)sql",
    // 2: which daemon instance serves a session.
    R"sql(
CREATE TABLE leases(
  session_id TEXT PRIMARY KEY,
  name TEXT,
  owner TEXT NOT NULL,
  pid INTEGER NOT NULL,
  since TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX leases_by_name ON leases(name) WHERE name IS NOT NULL;
CREATE INDEX leases_by_owner ON leases(owner);
)sql",
    // 3: what each harness's adapter offered, read at every start without
    // scanning the session records (filled once from them here).
    R"sql(
CREATE TABLE harness_facts(
  harness TEXT PRIMARY KEY,
  adapter_options TEXT NOT NULL,
  updated_at TEXT) WITHOUT ROWID;
INSERT INTO harness_facts(harness, adapter_options, updated_at)
SELECT harness, options, max(updated) FROM (
  SELECT json_extract(record, '$.harness') AS harness, json_extract(record, '$.adapterOptions') AS options,
         updated_at AS updated
  FROM sessions WHERE json_type(record, '$.adapterOptions') = 'array')
WHERE harness IS NOT NULL GROUP BY harness;
)sql",
    // 4: a transition's entry may hold only the event's own fields when its
    // run's row says the rest (see insert_transition); a harnessd that does
    // not know this must not read such entries, hence a step of its own.
    R"sql(
INSERT INTO meta(key, value) VALUES ('transition entries', 'own fields where the run row says the rest')
ON CONFLICT(key) DO NOTHING;
)sql",
    // 5: approvals a host gave "always" (worker/approvals.h).
    R"sql(
CREATE TABLE approvals(
  id INTEGER PRIMARY KEY,
  scope TEXT NOT NULL CHECK (scope IN ('session', 'harness')),
  session_id TEXT,
  harness TEXT NOT NULL,
  action TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
  kind TEXT NOT NULL DEFAULT '',
  command TEXT,
  paths TEXT NOT NULL DEFAULT '[]',
  created_at TEXT NOT NULL,
  run_id TEXT);
CREATE INDEX approvals_by_harness ON approvals(harness, session_id);
)sql",
};

constexpr const char* kImportedKey = "imported pre-sqlite files";

std::optional<std::string> json_text(const json& j) {
  if (j.is_null()) return std::nullopt;
  return acp::json_text(j);
}

json parse_or(const std::optional<std::string>& text, json fallback) {
  if (!text) return fallback;
  auto j = schema::parse_json(*text);
  return j ? std::move(*j) : fallback;
}

std::optional<std::string> string_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

/// Moves `rel` beneath `root` to pre-sqlite/`rel`.
void set_aside(int root, const std::string& rel) {
  if (::renameat(root, rel.c_str(), root, (std::string(StateDb::kImportedDir) + "/" + rel).c_str()) != 0 &&
      errno != ENOENT) {
    acp::log::warn("cannot move " + rel + " into " + StateDb::kImportedDir + "/: " + std::strerror(errno));
  }
}

/// The session record files (sessions/<id>.json) beneath `root`.
std::vector<std::string> session_files(int root) {
  std::vector<std::string> files;
  auto dir = open_beneath(root, "sessions", O_RDONLY | O_DIRECTORY, 0700, StateAccess::kReadOnly);
  if (!dir) return files;
  DIR* d = ::fdopendir(dir->release());
  if (!d) return files;
  while (dirent* e = ::readdir(d)) {
    std::string file = e->d_name;
    if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
    if (!acp::is_safe_id(file.substr(0, file.size() - 5))) continue;
    files.push_back("sessions/" + file);
  }
  ::closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Expected<std::unique_ptr<StateDb>> StateDb::open(const std::string& dir, int dir_fd, Database::Options options) {
  if (auto r = refuse_network_filesystem(dir_fd, "the state directory " + dir); !r) return std::move(r).error();
  auto db = Database::open(dir + "/" + kFile, options);
  if (!db) return std::move(db).error();
  if (!options.read_only) {
    if (auto r = (*db)->migrate(kSchema); !r) return std::move(r).error();
  } else {
    auto version = (*db)->schema_version();
    if (!version) return std::move(version).error();
    if (*version > static_cast<int>(std::size(kSchema))) {
      return Error{dir + "/" + kFile + " has schema version " + std::to_string(*version) +
                   ", newer than this harnessd knows"};
    }
  }
  return std::unique_ptr<StateDb>(new StateDb(std::move(*db)));
}

namespace {

// Only the state, its time and the outcome change, so neither the row's
// other indexes nor its other columns are rewritten: a full upsert sets
// every column, and SQLite then rewrites every index on them.
const std::string kSameRun =
    "run_id = ?1 AND session_id = ?2 AND name IS ?3 AND host_session IS ?4 AND harness = ?5 "
    "AND request_id IS ?6 AND daemon = ?7";
const std::string kStartRow = "UPDATE runs SET state = 'started', started_at = ?8 WHERE " + kSameRun;
const std::string kEndRow =
    "UPDATE runs SET state = ?8, ended_at = ?9, outcome = ?10 WHERE " + kSameRun + " AND ended_at IS NULL";

// Binds ?1..?7 to the run's identity: the columns a run's row is written
// with, in that order, as kSameRun compares them.
void bind_run_identity(Statement& st, const LedgerEntry& e) {
  st.bind_kept(1, e.runId).bind_kept(2, e.sessionId).bind_kept(3, e.name).bind_kept(4, e.hostSession);
  st.bind_kept(5, e.harness).bind(6, json_text(e.requestId)).bind_kept(7, e.daemon);
}

// Binds ?1..?7 to the run's identity, and ?8.. to what a started (its
// time) or terminal entry (its event, time and outcome) changes.
void bind_run_update(Statement& up, const LedgerEntry& e, bool terminal) {
  bind_run_identity(up, e);
  if (terminal) {
    up.bind_kept(8, e.event).bind_kept(9, e.time);
    up.bind(10, e.extra.is_object() ? acp::json_text(e.extra) : std::string("{}"));
  } else {
    up.bind_kept(8, e.time);
  }
}

}  // namespace

Expected<std::optional<std::int64_t>> StateDb::update_known_run(const LedgerEntry& e, bool terminal) {
  // A run this connection wrote is found by its seq, and nothing is read
  // back: RETURNING makes SQLite keep the rows it returns, which costs
  // about as much as the update.
  static const std::string kStartedAt = kStartRow + " AND seq = ?11";
  static const std::string kEndedAt = kEndRow + " AND seq = ?11";
  static const std::string kStartedReturning = kStartRow + " RETURNING seq";
  static const std::string kEndedReturning = kEndRow + " RETURNING seq";
  auto bind = [&](Statement& up) { bind_run_update(up, e, terminal); };
  if (auto known = open_seqs_.find(e.runId); known != open_seqs_.end()) {
    const std::int64_t seq = known->second;
    if (terminal) open_seqs_.erase(known);
    auto st = db_->cached((terminal ? kEndedAt : kStartedAt).c_str());
    if (!st) return std::move(st).error();
    bind(**st);
    (*st)->bind(11, seq);
    if (auto r = (*st)->run(); !r) return Error{"cannot record run " + e.runId + ": " + r.error().message};
    if (db_->changes() == 1) return std::optional<std::int64_t>(seq);
    // Changed meanwhile (by another process): found again below.
  }
  auto st = db_->cached((terminal ? kEndedReturning : kStartedReturning).c_str());
  if (!st) return std::move(st).error();
  Statement& up = **st;
  bind(up);
  auto row = up.step();
  if (!row) return Error{"cannot record run " + e.runId + ": " + row.error().message};
  if (!*row) return std::optional<std::int64_t>();
  std::int64_t seq = up.int64(0);
  up.reset();
  return std::optional<std::int64_t>(seq);
}

Expected<bool> StateDb::apply_one(const LedgerEntry& e) {
  auto seq = apply_row(e);
  if (!seq) return std::move(seq).error();
  if (!*seq) return false;
  return insert_transition(**seq, e, is_terminal_event(e.event));
}

Expected<bool> StateDb::apply_start_before_end(const LedgerEntry& started) {
  auto known = open_seqs_.find(started.runId);
  if (known == open_seqs_.end()) return apply_one(started);
  return insert_transition(known->second, started, false);
}

Expected<bool> StateDb::apply_end_after_start(const LedgerEntry& end, const LedgerEntry& started) {
  static const std::string kStartAndEnd =
      "UPDATE runs SET state = ?8, ended_at = ?9, outcome = ?10, started_at = ?12 WHERE " + kSameRun +
      " AND ended_at IS NULL AND seq = ?11";
  if (auto known = open_seqs_.find(end.runId); known != open_seqs_.end() && is_terminal_event(end.event)) {
    const std::int64_t seq = known->second;
    auto st = db_->cached(kStartAndEnd.c_str());
    if (!st) return std::move(st).error();
    bind_run_update(**st, end, true);
    (*st)->bind(11, seq).bind_kept(12, started.time);
    if (auto r = (*st)->run(); !r) return Error{"cannot record run " + end.runId + ": " + r.error().message};
    if (db_->changes() == 1) {
      open_seqs_.erase(known);
      return insert_transition(seq, end, true);
    }
  }
  // The row did not take both at once (another process changed it): the
  // start's own update, then the end as any end.
  if (auto row = apply_row(started); !row) return std::move(row).error();
  return apply_one(end);
}

Expected<std::optional<std::int64_t>> StateDb::apply_row(const LedgerEntry& e) {
  using Seq = std::optional<std::int64_t>;
  const bool terminal = is_terminal_event(e.event);
  // The usual case first: a later transition of a run whose row already
  // says the same of it (session, names, harness, request, daemon).
  if (terminal || e.event == run_event::kStarted) {
    auto updated = update_known_run(e, terminal);
    if (!updated) return std::move(updated).error();
    if (*updated) return *updated;
  }
  if (e.event == run_event::kQueued) {
    // The usual first entry of a run: a new row, whose seq SQLite gives
    // back without RETURNING (which costs about as much as the insert). A
    // row already there (recovery, another process) takes the upsert below.
    auto insert = db_->cached(R"sql(
INSERT INTO runs(run_id, session_id, name, host_session, harness, request_id, daemon, state, queued_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8)
ON CONFLICT(run_id) DO NOTHING)sql");
    if (!insert) return std::move(insert).error();
    Statement& in = **insert;
    bind_run_identity(in, e);
    in.bind_kept(8, e.time);
    if (auto r = in.run(); !r) return Error{"cannot record run " + e.runId + ": " + r.error().message};
    if (db_->changes() == 1) {
      const std::int64_t seq = db_->last_insert_rowid();
      if (open_seqs_.size() >= 100000) open_seqs_.clear();
      open_seqs_[e.runId] = seq;
      return Seq(seq);
    }
  }
  // The upsert below may change what the row says of the run; transitions
  // that keep only their own fields would then read as the new row.
  if (auto kept = keep_whole_entries(e.runId); !kept) return std::move(kept).error();
  // The run's row and its state in one statement. A second end of a run
  // changes nothing and returns no row; the transition below is refused
  // then, and the unique index on terminal transitions refuses it anyway.
  auto upsert = db_->cached(R"sql(
INSERT INTO runs(run_id, session_id, name, host_session, harness, request_id, daemon, state,
                 queued_at, started_at, ended_at, outcome)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
        CASE WHEN ?8 = 'queued' THEN ?9 END, CASE WHEN ?8 = 'started' THEN ?9 END,
        CASE WHEN ?10 THEN ?9 END, CASE WHEN ?10 THEN ?11 END)
ON CONFLICT(run_id) DO UPDATE SET
  session_id = CASE WHEN excluded.session_id <> '' THEN excluded.session_id ELSE session_id END,
  name = coalesce(excluded.name, name),
  host_session = coalesce(excluded.host_session, host_session),
  harness = CASE WHEN excluded.harness <> '' THEN excluded.harness ELSE harness END,
  request_id = coalesce(excluded.request_id, request_id),
  daemon = CASE WHEN excluded.daemon <> '' THEN excluded.daemon ELSE daemon END,
  state = excluded.state,
  queued_at = coalesce(excluded.queued_at, queued_at),
  started_at = coalesce(excluded.started_at, started_at),
  ended_at = coalesce(excluded.ended_at, ended_at),
  outcome = coalesce(excluded.outcome, outcome)
WHERE NOT (?10 AND runs.ended_at IS NOT NULL)
RETURNING seq)sql");
  if (!upsert) return std::move(upsert).error();
  Statement& up = **upsert;
  bind_run_identity(up, e);
  up.bind_kept(8, e.event).bind_kept(9, e.time);
  up.bind(10, std::int64_t{terminal});
  if (terminal) {
    up.bind(11, e.extra.is_object() ? acp::json_text(e.extra) : std::string("{}"));
  } else {
    up.bind_null(11);
  }
  auto row = up.step();
  if (!row) return Error{"cannot record run " + e.runId + ": " + row.error().message};
  if (!*row) {
    acp::log::error("run " + e.runId + " already ended; its second end (" + e.event + ") is refused");
    return Seq();
  }
  std::int64_t seq = up.int64(0);
  up.reset();
  if (!terminal) {
    // Bounded: runs this process never ends (it may be stopped first).
    if (open_seqs_.size() >= 100000) open_seqs_.clear();
    open_seqs_[e.runId] = seq;
  }
  return Seq(seq);
}

namespace {

// The entry a transition keeps when its run's row says everything else of
// it: the event's own fields. None when the entry carries a common field
// among its own (it then replaces the common one, see to_line()).
std::optional<std::string> own_fields(const LedgerEntry& e) {
  if (!e.extra.is_object()) return std::nullopt;
  if (e.extra.empty()) return std::string("{}");
  for (const auto& [k, v] : e.extra.items()) {
    if (is_common_field(k)) return std::nullopt;
  }
  return acp::json_text(e.extra);
}

// What a transition stored as its own fields is read back from: its
// event and time, and its run's row (LEFT JOINed as r).
constexpr const char* kTransitionColumns =
    "t.event, t.time, t.entry, r.run_id, r.session_id, r.name, r.host_session, r.harness, r.request_id, r.daemon";

// A transition read with kTransitionColumns from column `at` on: a whole
// entry (written before schema step 4, or one its row did not describe) as
// it is, else its own fields completed from the row.
std::optional<LedgerEntry> read_transition(const Statement& st, int at) {
  auto stored = schema::parse_json(st.text(at + 2));
  if (!stored || !stored->is_object()) return std::nullopt;
  if (stored->contains("runId")) return LedgerEntry::from_json(*stored);
  if (st.is_null(at + 3)) return std::nullopt;  // no row to complete it from
  LedgerEntry e;
  e.event = st.text(at);
  e.time = st.text(at + 1);
  e.runId = st.text(at + 3);
  e.sessionId = st.text(at + 4);
  e.name = st.optional_text(at + 5);
  e.hostSession = st.optional_text(at + 6);
  e.harness = st.text(at + 7);
  e.requestId = parse_or(st.optional_text(at + 8), json());
  e.daemon = st.text(at + 9);
  e.extra = std::move(*stored);
  return e;
}

}  // namespace

Expected<bool> StateDb::insert_transition(std::int64_t seq, const LedgerEntry& e, bool terminal) {
  // A terminal transition of a run whose row did not show it ended (a
  // database edited by hand) is refused as a second end.
  auto failed = [&](const Statement& in, const Error& error) -> Expected<bool> {
    if (in.last_code() == SQLITE_CONSTRAINT_UNIQUE) {
      acp::log::error("run " + e.runId + " already ended; its second end (" + e.event + ") is refused");
      return false;
    }
    return Error{"cannot record run " + e.runId + ": " + error.message};
  };
  // Only the event's own fields when the run's row says the rest of the
  // entry, which a read checks first: a third of the bytes and none of the
  // text to build. A row that later says otherwise of the run first gives
  // its earlier transitions their whole entries (keep_whole_entries).
  //
  // A check and an insert of one row, not one INSERT ... SELECT: SQLite
  // treats a statement with a SELECT as one that may write many rows, and
  // copies every page it changes into a statement journal (a fresh 64 KiB
  // block) so that a failure half-way could be undone.
  static const std::string kRowSays = "SELECT 1 FROM runs WHERE " + kSameRun + " AND seq = ?8";
  std::optional<std::string> own = own_fields(e);
  if (own) {
    auto says = db_->cached(kRowSays.c_str());
    if (!says) return std::move(says).error();
    Statement& st = **says;
    bind_run_identity(st, e);
    st.bind(8, seq);
    auto row = st.step();
    if (!row) return Error{"cannot record run " + e.runId + ": " + row.error().message};
    if (!*row) own.reset();
    st.reset();
  }
  auto insert = db_->cached("INSERT INTO transitions(run_seq, event, time, entry, terminal) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!insert) return std::move(insert).error();
  Statement& in = **insert;
  const std::string entry = own ? std::move(*own) : e.to_line();
  in.bind(1, seq).bind_kept(2, e.event).bind_kept(3, e.time).bind_kept(4, entry).bind(5, std::int64_t{terminal});
  if (auto r = in.run(); !r) return failed(in, r.error());
  return true;
}

Expected<void> StateDb::keep_whole_entries(const std::string& run_id) {
  static const std::string kOwn = std::string("SELECT t.rowid, ") + kTransitionColumns +
                                  " FROM runs r JOIN transitions t ON t.run_seq = r.seq WHERE r.run_id = ?1"
                                  " AND json_type(t.entry, '$.runId') IS NULL";
  std::vector<std::pair<std::int64_t, std::string>> whole;
  {
    auto st = db_->cached(kOwn.c_str());
    if (!st) return std::move(st).error();
    (*st)->bind(1, run_id);
    for (;;) {
      auto row = (*st)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      if (auto e = read_transition(**st, 1)) whole.emplace_back((*st)->int64(0), e->to_line());
    }
  }
  auto up = db_->cached("UPDATE transitions SET entry = ?2 WHERE rowid = ?1");
  if (!up) return std::move(up).error();
  for (const auto& [rowid, line] : whole) {
    (*up)->bind(1, rowid).bind_kept(2, line);
    if (auto r = (*up)->run(); !r) return Error{"cannot record run " + run_id + ": " + r.error().message};
  }
  return {};
}

Expected<std::vector<std::string>> StateDb::apply(std::span<const LedgerEntry> entries) {
  std::vector<std::string> refused;
  auto tx = Transaction::begin(*db_);
  if (!tx) return std::move(tx).error();
  for (const auto& e : entries) {
    auto r = apply_one(e);
    if (!r) return std::move(r).error();
    if (!*r) refused.push_back(e.runId);
  }
  if (auto r = tx->commit(); !r) return std::move(r).error();
  return refused;
}

namespace {
constexpr const char* kRunColumns =
    "run_id, session_id, name, host_session, harness, request_id, daemon, state, queued_at, started_at, ended_at, "
    "outcome";
}  // namespace

Expected<std::vector<RunRecord>> StateDb::read_runs(Statement& st) {
  std::vector<RunRecord> out;
  for (;;) {
    auto row = st.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    RunRecord r;
    r.runId = st.text(0);
    r.sessionId = st.text(1);
    r.name = st.optional_text(2);
    r.hostSession = st.optional_text(3);
    r.harness = st.text(4);
    r.requestId = parse_or(st.optional_text(5), json());
    r.daemon = st.text(6);
    r.state = st.text(7);
    r.queuedAt = st.text(8);
    r.startedAt = st.text(9);
    r.endedAt = st.text(10);
    r.outcome = parse_or(st.optional_text(11), json::object());
    r.terminal_entries = st.is_null(10) ? 0 : 1;
    out.push_back(std::move(r));
  }
  return out;
}

Expected<std::optional<RunRecord>> StateDb::find_run(const std::string& run_id) {
  static const std::string sql = std::string("SELECT ") + kRunColumns + " FROM runs WHERE run_id = ?1";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, run_id);
  auto rows = read_runs(**st);
  if (!rows) return std::move(rows).error();
  if (rows->empty()) return std::optional<RunRecord>();
  return std::optional<RunRecord>(std::move(rows->front()));
}

namespace {

constexpr const char* kRunWhere =
    " WHERE (?1 IS NULL OR session_id = ?1)"
    " AND (?2 IS NULL OR session_id = ?2 OR name = ?2 OR host_session = ?2)"
    " AND (?3 IS NULL OR name = ?3) AND (?4 IS NULL OR state = ?4) AND (?5 IS NULL OR queued_at >= ?5)";

void bind_filter(Statement& st, const StateDb::RunFilter& f) {
  st.bind(1, f.session_id).bind(2, f.session_ref).bind(3, f.name).bind(4, f.state).bind(5, f.since);
}

}  // namespace

Expected<std::vector<RunRecord>> StateDb::runs(const RunFilter& filter) {
  // The newest `limit` rows, read newest first and turned around.
  static const std::string sql =
      std::string("SELECT ") + kRunColumns + " FROM runs" + kRunWhere + " ORDER BY seq DESC LIMIT ?6";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  bind_filter(**st, filter);
  (*st)->bind(6, filter.limit ? static_cast<std::int64_t>(filter.limit) : std::int64_t{-1});
  auto rows = read_runs(**st);
  if (!rows) return std::move(rows).error();
  std::reverse(rows->begin(), rows->end());
  return rows;
}

Expected<std::vector<RunRecord>> StateDb::runs() { return runs(RunFilter{}); }

Expected<std::size_t> StateDb::count_runs(const RunFilter& filter) {
  static const std::string sql = std::string("SELECT count(*) FROM runs") + kRunWhere;
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  bind_filter(**st, filter);
  auto row = (*st)->step();
  if (!row) return std::move(row).error();
  std::size_t n = *row ? static_cast<std::size_t>((*st)->int64(0)) : 0;
  (*st)->reset();
  return n;
}

Expected<std::map<std::string, std::map<std::string, int>>> StateDb::run_counts() {
  auto st = db_->cached("SELECT session_id, state, count(*) FROM runs GROUP BY session_id, state");
  if (!st) return std::move(st).error();
  std::map<std::string, std::map<std::string, int>> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    out[(*st)->text(0)][(*st)->text(1)] = static_cast<int>((*st)->int64(2));
  }
  return out;
}

Expected<std::int64_t> StateDb::last_transition() {
  auto st = db_->cached("SELECT coalesce(max(rowid), 0) FROM transitions");
  if (!st) return std::move(st).error();
  auto row = (*st)->step();
  if (!row) return std::move(row).error();
  std::int64_t n = *row ? (*st)->int64(0) : 0;
  (*st)->reset();
  return n;
}

Expected<std::vector<std::pair<std::int64_t, LedgerEntry>>> StateDb::transitions_after(std::int64_t after,
                                                                                       std::size_t limit) {
  static const std::string sql = std::string("SELECT t.rowid, ") + kTransitionColumns +
                                 " FROM transitions t LEFT JOIN runs r ON r.seq = t.run_seq"
                                 " WHERE t.rowid > ?1 ORDER BY t.rowid LIMIT ?2";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, after).bind(2, limit ? static_cast<std::int64_t>(limit) : std::int64_t{-1});
  std::vector<std::pair<std::int64_t, LedgerEntry>> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    if (auto e = read_transition(**st, 1)) out.emplace_back((*st)->int64(0), std::move(*e));
  }
  return out;
}

Expected<std::vector<LedgerEntry>> StateDb::transitions(const std::string& run_id) {
  static const std::string sql = std::string("SELECT ") + kTransitionColumns +
                                 " FROM transitions t JOIN runs r ON r.seq = t.run_seq WHERE r.run_id = ?1"
                                 " ORDER BY t.rowid";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, run_id);
  std::vector<LedgerEntry> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    if (auto e = read_transition(**st, 0)) out.push_back(std::move(*e));
  }
  return out;
}

Expected<std::vector<LedgerEntry>> StateDb::interrupt_orphans(const std::function<bool(const std::string&)>& alive,
                                                             const std::string& instance, const std::string& time) {
  std::vector<LedgerEntry> written;
  auto tx = Transaction::begin(*db_);
  if (!tx) return std::move(tx).error();
  std::vector<std::string> daemons;
  {
    auto st = db_->cached("SELECT DISTINCT daemon FROM runs WHERE ended_at IS NULL");
    if (!st) return std::move(st).error();
    for (;;) {
      auto row = (*st)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      daemons.push_back((*st)->text(0));
    }
  }
  for (const auto& daemon : daemons) {
    if (daemon == instance || (!daemon.empty() && alive(daemon))) continue;
    static const std::string sql =
        std::string("SELECT ") + kRunColumns + " FROM runs WHERE daemon = ?1 AND ended_at IS NULL ORDER BY seq";
    auto st = db_->cached(sql.c_str());
    if (!st) return std::move(st).error();
    (*st)->bind(1, daemon);
    auto open = read_runs(**st);
    if (!open) return std::move(open).error();
    for (const auto& r : *open) {
      LedgerEntry e;
      e.time = time;
      e.event = run_event::kInterrupted;
      e.runId = r.runId;
      e.sessionId = r.sessionId;
      e.name = r.name;
      e.hostSession = r.hostSession;
      e.harness = r.harness;
      e.requestId = r.requestId;
      e.daemon = instance;
      e.extra = {{"reason", "harnessd stopped before the run ended (daemon " + r.daemon + ")"}};
      auto applied = apply_one(e);
      if (!applied) return std::move(applied).error();
      if (*applied) written.push_back(std::move(e));
    }
  }
  if (auto r = tx->commit(); !r) return std::move(r).error();
  return written;
}

namespace {

constexpr const char* kLeaseColumns = "session_id, name, owner, pid, since";

StateDb::Lease read_lease(const Statement& st) {
  return {st.text(0), st.optional_text(1), st.text(2), st.int64(3), st.text(4)};
}

}  // namespace

Expected<std::optional<StateDb::Lease>> StateDb::take_lease(const Lease& me, const Alive& alive) {
  static const std::string sql = std::string("SELECT ") + kLeaseColumns + " FROM leases WHERE session_id = ?1";
  auto held = db_->cached(sql.c_str());
  if (!held) return std::move(held).error();
  (*held)->bind(1, me.session_id);
  auto row = (*held)->step();
  if (!row) return std::move(row).error();
  if (*row) {
    Lease lease = read_lease(**held);
    (*held)->reset();
    if (lease.owner != me.owner && alive(lease.owner)) return std::optional<Lease>(std::move(lease));
  }
  auto put = db_->cached(R"sql(
INSERT INTO leases(session_id, name, owner, pid, since) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT(session_id) DO UPDATE SET name = excluded.name, owner = excluded.owner, pid = excluded.pid,
  since = excluded.since)sql");
  if (!put) return std::move(put).error();
  (*put)->bind(1, me.session_id).bind(2, me.name).bind(3, me.owner).bind(4, me.pid).bind(5, me.since);
  if (auto r = (*put)->run(); !r) return std::move(r).error();
  return std::optional<Lease>{};
}

Expected<StateDb::NameClaim> StateDb::claim_name(const Lease& me, const Alive& alive) {
  if (!me.name) return Error{"claim_name needs a name"};
  // A live lease of the name: that session is being served.
  std::vector<Lease> named;
  {
    static const std::string sql = std::string("SELECT ") + kLeaseColumns + " FROM leases WHERE name = ?1";
    auto st = db_->cached(sql.c_str());
    if (!st) return std::move(st).error();
    (*st)->bind(1, *me.name);
    for (;;) {
      auto row = (*st)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      named.push_back(read_lease(**st));
    }
  }
  for (auto& lease : named) {
    if (lease.owner == me.owner) return NameClaim{lease.session_id, false, std::nullopt};
    if (alive(lease.owner)) return NameClaim{lease.session_id, false, std::move(lease)};
  }
  // The newest open session of that name, from any lifetime.
  auto newest = db_->cached(
      "SELECT id FROM sessions WHERE name = ?1 AND closed = 0 ORDER BY updated_at DESC, seq DESC LIMIT 1");
  if (!newest) return std::move(newest).error();
  (*newest)->bind(1, *me.name);
  auto row = (*newest)->step();
  if (!row) return std::move(row).error();
  NameClaim claim{me.session_id, true, std::nullopt};
  if (*row) {
    claim = {(*newest)->text(0), false, std::nullopt};
    (*newest)->reset();
  }
  Lease mine = me;
  mine.session_id = claim.session_id;
  auto taken = take_lease(mine, alive);
  if (!taken) return std::move(taken).error();
  claim.held = std::move(*taken);
  return claim;
}

Expected<void> StateDb::release_leases(const std::string& owner, const std::string& session_id) {
  auto st = session_id.empty() ? db_->cached("DELETE FROM leases WHERE owner = ?1")
                               : db_->cached("DELETE FROM leases WHERE owner = ?1 AND session_id = ?2");
  if (!st) return std::move(st).error();
  (*st)->bind(1, owner);
  if (!session_id.empty()) (*st)->bind(2, session_id);
  return (*st)->run();
}

Expected<void> StateDb::drop_dead_leases(const Alive& alive) {
  std::vector<std::string> owners;
  {
    auto st = db_->cached("SELECT DISTINCT owner FROM leases");
    if (!st) return std::move(st).error();
    for (;;) {
      auto row = (*st)->step();
      if (!row) return std::move(row).error();
      if (!*row) break;
      owners.push_back((*st)->text(0));
    }
  }
  for (const auto& owner : owners) {
    if (alive(owner)) continue;
    if (auto r = release_leases(owner); !r) return r;
  }
  return {};
}

Expected<std::vector<StateDb::Lease>> StateDb::leases() {
  static const std::string sql = std::string("SELECT ") + kLeaseColumns + " FROM leases ORDER BY session_id";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  std::vector<Lease> all;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    all.push_back(read_lease(**st));
  }
  return all;
}

Expected<std::optional<std::string>> StateDb::meta(const std::string& key) {
  auto st = db_->cached("SELECT value FROM meta WHERE key = ?1");
  if (!st) return std::move(st).error();
  (*st)->bind(1, key);
  auto row = (*st)->step();
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<std::string>{};
  std::optional<std::string> value = (*st)->text(0);
  (*st)->reset();
  return value;
}

Expected<void> StateDb::set_meta(const std::string& key, const std::string& value) {
  auto st = db_->cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  if (!st) return std::move(st).error();
  (*st)->bind(1, key).bind(2, value);
  return (*st)->run();
}

// ---- retention

namespace {

// A run the retention lets go: ?1 the cutoff time, ?2 the count boundary.
constexpr const char* kExpired = "(r.ended_at IS NOT NULL AND (r.ended_at < ?1 OR r.seq <= ?2))";

}  // namespace

Expected<StateDb::Expiry> StateDb::expiry(const std::string& cutoff, std::size_t keep_runs) {
  Expiry e{cutoff, 0};
  if (keep_runs == 0) return e;
  auto st = db_->cached("SELECT seq FROM runs ORDER BY seq DESC LIMIT 1 OFFSET ?1");
  if (!st) return std::move(st).error();
  (*st)->bind(1, static_cast<std::int64_t>(keep_runs));
  auto row = (*st)->step();
  if (!row) return std::move(row).error();
  if (*row) {
    e.boundary = (*st)->int64(0);
    (*st)->reset();
  }
  return e;
}

Expected<std::vector<std::pair<std::int64_t, std::string>>> StateDb::expired_runs(const Expiry& expiry,
                                                                                  std::int64_t after_seq,
                                                                                  std::size_t limit) {
  static const std::string sql =
      std::string("SELECT r.seq, r.run_id FROM runs r WHERE r.seq > ?3 AND ") + kExpired + " ORDER BY r.seq LIMIT ?4";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, expiry.cutoff).bind(2, expiry.boundary).bind(3, after_seq).bind(4, static_cast<std::int64_t>(limit));
  std::vector<std::pair<std::int64_t, std::string>> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    out.emplace_back((*st)->int64(0), (*st)->text(1));
  }
  return out;
}

Expected<std::size_t> StateDb::delete_runs(const std::vector<std::string>& run_ids) {
  auto st = db_->cached("DELETE FROM runs WHERE run_id = ?1 AND ended_at IS NOT NULL");
  if (!st) return std::move(st).error();
  std::size_t n = 0;
  for (const auto& id : run_ids) {
    (*st)->bind(1, id);
    if (auto r = (*st)->run(); !r) return std::move(r).error();
    n += static_cast<std::size_t>(::sqlite3_changes(db_->handle()));
  }
  return n;
}

Expected<std::vector<std::string>> StateDb::expired_sessions(const Expiry& expiry, const std::string& after_id,
                                                             std::size_t limit) {
  static const std::string sql = std::string(
                                     "SELECT s.id FROM sessions s WHERE s.closed = 1 AND s.id > ?3 AND NOT EXISTS "
                                     "(SELECT 1 FROM runs r WHERE r.session_id = s.id AND NOT ") +
                                 kExpired + ") ORDER BY s.id LIMIT ?4";
  auto st = db_->cached(sql.c_str());
  if (!st) return std::move(st).error();
  (*st)->bind(1, expiry.cutoff).bind(2, expiry.boundary).bind(3, after_id).bind(4, static_cast<std::int64_t>(limit));
  std::vector<std::string> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    out.push_back((*st)->text(0));
  }
  return out;
}

Expected<bool> StateDb::delete_session(const std::string& id) {
  auto st = db_->cached(
      "DELETE FROM sessions WHERE id = ?1 AND closed = 1 AND NOT EXISTS (SELECT 1 FROM runs WHERE session_id = ?1)");
  if (!st) return std::move(st).error();
  (*st)->bind(1, id);
  if (auto r = (*st)->run(); !r) return std::move(r).error();
  return ::sqlite3_changes(db_->handle()) > 0;
}

Expected<void> StateDb::save_session(const json& record) {
  auto st = db_->cached(R"sql(
INSERT INTO sessions(id, name, host_session, closed, updated_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT(id) DO UPDATE SET name = excluded.name, host_session = excluded.host_session,
  closed = excluded.closed, updated_at = excluded.updated_at, record = excluded.record)sql");
  if (!st) return std::move(st).error();
  auto id = string_field(record, "sessionId");
  if (!id) return Error{"a session record without a sessionId"};
  (*st)->bind(1, *id).bind(2, string_field(record, "name")).bind(3, string_field(record, "hostSession"));
  auto closed = record.find("closed");
  const bool is_closed = closed != record.end() && closed->is_boolean() && closed->get<bool>();
  (*st)->bind(4, std::int64_t{is_closed}).bind(5, string_field(record, "updatedAt"));
  (*st)->bind(6, record.dump());
  if (auto r = (*st)->run(); !r) return Error{"cannot save session " + *id + ": " + r.error().message};
  // What the harness's adapter offered, for the next start.
  auto harness = string_field(record, "harness");
  auto options = record.find("adapterOptions");
  if (harness && options != record.end() && options->is_array()) {
    auto facts = db_->cached(R"sql(
INSERT INTO harness_facts(harness, adapter_options, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT(harness) DO UPDATE SET adapter_options = excluded.adapter_options, updated_at = excluded.updated_at
WHERE excluded.updated_at IS NULL OR harness_facts.updated_at IS NULL OR excluded.updated_at >= harness_facts.updated_at)sql");
    if (!facts) return std::move(facts).error();
    (*facts)->bind(1, *harness).bind(2, options->dump()).bind(3, string_field(record, "updatedAt"));
    if (auto r = (*facts)->run(); !r) return Error{"cannot save what harness " + *harness + " offered: " + r.error().message};
  }
  return {};
}

Expected<std::optional<json>> StateDb::session(const std::string& id) {
  auto st = db_->cached("SELECT record FROM sessions WHERE id = ?1");
  if (!st) return std::move(st).error();
  (*st)->bind(1, id);
  auto row = (*st)->step();
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<json>();
  auto j = schema::parse_json((*st)->text(0));
  (*st)->reset();
  if (!j) return Error{"the stored record of session " + id + " is not JSON"};
  return std::optional<json>(std::move(*j));
}

namespace {

// Reads the `col`th column of each row as a session record.
Expected<std::vector<json>> read_records(Statement& st, int col) {
  std::vector<json> out;
  for (;;) {
    auto row = st.step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    if (auto j = schema::parse_json(st.text(col))) {
      out.push_back(std::move(*j));
    } else {
      acp::log::warn("the stored record of session " + st.text(0) + " is not JSON; skipped");
    }
  }
  return out;
}

}  // namespace

Expected<std::vector<json>> StateDb::sessions() {
  auto st = db_->cached("SELECT id, record FROM sessions ORDER BY seq");
  if (!st) return std::move(st).error();
  return read_records(**st, 1);
}

Expected<std::vector<json>> StateDb::sessions_named(const std::string& name) {
  auto st = db_->cached("SELECT id, record FROM sessions WHERE name = ?1 OR host_session = ?1 ORDER BY seq");
  if (!st) return std::move(st).error();
  (*st)->bind(1, name);
  return read_records(**st, 1);
}

Expected<std::vector<json>> StateDb::sessions_after(const std::string& after_id, std::size_t limit) {
  auto st = db_->cached("SELECT id, record FROM sessions WHERE id > ?1 ORDER BY id LIMIT ?2");
  if (!st) return std::move(st).error();
  (*st)->bind(1, after_id).bind(2, limit ? static_cast<std::int64_t>(limit) : std::int64_t{-1});
  return read_records(**st, 1);
}

Expected<std::map<std::string, json>> StateDb::harness_options() {
  auto st = db_->cached("SELECT harness, adapter_options FROM harness_facts");
  if (!st) return std::move(st).error();
  std::map<std::string, json> out;
  for (;;) {
    auto row = (*st)->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    if (auto j = schema::parse_json((*st)->text(1)); j && j->is_array()) out[(*st)->text(0)] = std::move(*j);
  }
  return out;
}

Expected<std::optional<StateDb::Imported>> StateDb::import_files(int root) {
  {
    // Imported once: later starts look no further than this (and a ledger
    // left by a crash between the import and the move, which goes aside).
    auto done = db_->cached("SELECT 1 FROM meta WHERE key = ?1");
    if (!done) return std::move(done).error();
    (*done)->bind(1, kImportedKey);
    auto row = (*done)->step();
    if (!row) return std::move(row).error();
    (*done)->reset();
    if (*row) {
      struct stat st {};
      if (::fstatat(root, "ledger.jsonl", &st, AT_SYMLINK_NOFOLLOW) == 0) {
        (void)make_dir_beneath(root, kImportedDir);
        set_aside(root, "ledger.jsonl");
      }
      return std::optional<Imported>();
    }
  }
  std::vector<std::string> sessions = session_files(root);
  JsonlRead ledger = read_jsonl_beneath(root, "ledger.jsonl");
  if (!ledger.refused.empty()) return Error{"cannot import " + ledger.refused};

  Imported report;
  auto tx = Transaction::begin(*db_);
  if (!tx) return std::move(tx).error();
  auto done = db_->cached("SELECT value FROM meta WHERE key = ?1");
  if (!done) return std::move(done).error();
  (*done)->bind(1, kImportedKey);
  auto row = (*done)->step();
  if (!row) return std::move(row).error();
  const bool already = *row;
  (*done)->reset();
  if (!already) {
    report.bad_lines = ledger.bad_lines.size();
    for (std::size_t n : ledger.bad_lines) {
      acp::log::warn("ledger.jsonl: line " + std::to_string(n) + " is not JSON (cut by a crash?); not imported");
    }
    for (const auto& line : ledger.lines) {
      auto entry = LedgerEntry::from_json(line);
      if (!entry) {
        ++report.bad_lines;
        continue;
      }
      auto applied = apply_one(*entry);
      if (!applied) return std::move(applied).error();
      ++report.ledger_lines;
      if (!*applied) ++report.second_ends;
    }
    for (const auto& rel : sessions) {
      JsonlRead rec = read_jsonl_beneath(root, rel);
      std::optional<std::string> problem;
      if (!rec.refused.empty()) {
        problem = rec.refused;
      } else if (rec.lines.size() != 1 || !rec.lines[0].is_object()) {
        problem = "not one JSON object";
      } else {
        problem = session_record_problem(rec.lines[0]);
      }
      if (problem) {
        acp::log::warn(rel + " is not a session record harnessd wrote (" + *problem + "); not imported (kept in " +
                       kImportedDir + "/)");
        continue;
      }
      if (auto r = save_session(rec.lines[0]); !r) return std::move(r).error();
      ++report.sessions;
    }
    auto mark = db_->cached("INSERT INTO meta(key, value) VALUES (?1, ?2)");
    if (!mark) return std::move(mark).error();
    (*mark)->bind(1, kImportedKey).bind(2, acp::iso_time());
    if (auto r = (*mark)->run(); !r) return std::move(r).error();
  }
  if (auto r = tx->commit(); !r) return std::move(r).error();

  // Committed: the old files go aside (kept). A crash before this point
  // imports nothing twice: the mark above says it is done.
  if (ledger.missing && sessions.empty()) return std::optional<Imported>();  // a new state directory
  if (auto made = make_dir_beneath(root, kImportedDir); !made) {
    acp::log::warn("cannot make " + std::string(kImportedDir) + "/: " + made.error().message);
    return std::optional<Imported>(report);
  }
  (void)make_dir_beneath(root, std::string(kImportedDir) + "/sessions");
  set_aside(root, "ledger.jsonl");
  for (const auto& rel : sessions) set_aside(root, rel);
  if (already) return std::optional<Imported>();
  return std::optional<Imported>(report);
}

}  // namespace harnessd::worker
