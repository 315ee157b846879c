// close, prune and forget: the command line changing the state directory.
// Every path is opened beneath the directory's descriptor, following no
// link (state_dir.h).
#include "worker/housekeeping.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "worker/database.h"
#include "worker/inspect.h"
#include "worker/inspect_text.h"
#include "worker/ledger.h"
#include "worker/session_record.h"
#include "worker/state_dir.h"
#include "worker/segment.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Parses "90s", "30m", "12h", "7d" (or plain seconds) into milliseconds.
std::optional<long long> parse_duration_ms(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  double n = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || n < 0) return std::nullopt;
  std::string unit(end);
  double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : -1;
  if (scale < 0) return std::nullopt;
  return static_cast<long long>(n * scale * 1000);
}

Expected<void> write_closed(StateDb& db, SessionRecord record) {
  record.closed = true;
  record.updated_at = acp::iso_time();
  return db.save_session(record.to_json());
}

// The state directory and its database, for a command that changes them.
struct Opened {
  UniqueFd root;
  std::unique_ptr<StateDb> db;  // nullptr: nothing recorded
};
Expected<Opened> open_for_change(const std::string& state_dir, bool dry_run) {
  auto root = open_state_dir(state_dir, dry_run ? StateAccess::kReadOnly : StateAccess::kOwn);
  if (!root) return Error{root.error().message};
  Opened out;
  out.root = std::move(*root);
  auto db = open_state_db(state_dir, out.root.get());
  if (!db) return std::move(db).error();
  out.db = std::move(*db);
  return out;
}

// What stops a session record from being closed or forgotten from the
// shell: a daemon that serves it (it would write the record again). The
// session's lease says which one; a record of a state directory that has
// no lease for it says which daemon wrote it last.
class Servers {
 public:
  explicit Servers(const Opened& opened) : root_(opened.root.get()) {
    if (!opened.db) return;
    auto leases = opened.db->leases();
    if (!leases) return;
    for (auto& lease : *leases) leases_.emplace(lease.session_id, std::move(lease));
  }
  /// "instance (pid N)" of the live daemon serving `record`, if any.
  std::optional<std::string> of(const SessionRecord& record) const {
    if (auto it = leases_.find(record.session_id); it != leases_.end()) {
      const StateDb::Lease& lease = it->second;
      if (daemon_instance_alive(root_, lease.owner)) return lease.owner + " (pid " + std::to_string(lease.pid) + ")";
      return std::nullopt;
    }
    if (record.daemon.empty() || !daemon_instance_alive(root_, record.daemon)) return std::nullopt;
    return record.daemon;
  }

 private:
  int root_;
  std::map<std::string, StateDb::Lease> leases_;
};

}  // namespace

int close_command(const std::string& state_dir, const std::string& target) {
  auto opened = open_for_change(state_dir, false);
  if (!opened) {
    std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
    return 1;
  }
  const Servers servers(*opened);
  std::map<std::string, SessionRecord> records;
  if (opened->db) records = session_records(*opened->db);
  // An id, or the name (or host's name) of open sessions.
  std::vector<std::string> matches;
  if (records.count(target)) {
    matches.push_back(target);
  } else {
    for (const auto& [id, r] : records) {
      bool named = r.name == target || r.host_session == target;
      if (named && !r.closed) matches.push_back(id);
    }
  }
  if (matches.empty()) {
    std::fprintf(stderr, "harnessd: no open session has the id, name or host name '%s'\n", target.c_str());
    return 1;
  }
  int code = 0;
  for (const auto& id : matches) {
    const SessionRecord& r = records[id];
    if (r.closed) {
      print_line(id + " was already closed");
      continue;
    }
    if (auto daemon = servers.of(r)) {
      std::fprintf(stderr, "harnessd: %s is served by running daemon %s; close it there (session/close)\n",
                   id.c_str(), daemon->c_str());
      code = 1;
      continue;
    }
    if (auto w = write_closed(*opened->db, r); !w) {
      std::fprintf(stderr, "harnessd: %s\n", w.error().message.c_str());
      code = 1;
      continue;
    }
    print_line("closed " + id);
  }
  return code;
}

int prune_command(const std::string& state_dir, const std::optional<std::string>& older_than, bool dry_run) {
  std::optional<long long> age;
  if (older_than) {
    age = parse_duration_ms(*older_than);
    if (!age) {
      std::fprintf(stderr, "harnessd: --older-than '%s' is not a duration (90s, 30m, 12h, 7d)\n", older_than->c_str());
      return 2;
    }
  }
  if (::access(state_dir.c_str(), F_OK) != 0 && errno == ENOENT) return 0;  // nothing recorded, nothing to prune
  auto opened = open_for_change(state_dir, dry_run);
  if (!opened) {
    std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
    return 1;
  }
  const long long now = iso_ms(acp::iso_time());
  int code = 0, pruned = 0;
  std::map<std::string, SessionRecord> records;
  if (opened->db) records = session_records(*opened->db);
  const Servers servers(*opened);
  for (const auto& [id, r] : records) {
    if (r.closed || servers.of(r)) continue;
    long long updated = iso_ms(r.updated_at);
    if (age && updated >= 0 && now - updated < *age) continue;
    std::string idle = updated < 0 ? "" : " (idle " + duration_words(now - updated) + ")";
    if (dry_run) {
      print_line("would close " + id + idle);
      ++pruned;
      continue;
    }
    if (auto w = write_closed(*opened->db, r); !w) {
      std::fprintf(stderr, "harnessd: %s\n", w.error().message.c_str());
      code = 1;
      continue;
    }
    print_line("closed " + id + idle);
    ++pruned;
  }
  if (pruned == 0) std::fprintf(stderr, "harnessd: no open session to prune\n");
  return code;
}

namespace {

// The sessions `target` names: its id, else every session (open or
// closed) whose name or host's name it is.
std::vector<std::string> sessions_named(const std::map<std::string, SessionRecord>& records,
                                        const std::string& target) {
  if (records.count(target)) return {target};
  std::vector<std::string> ids;
  for (const auto& [id, r] : records) {
    if (r.name == target || r.host_session == target) ids.push_back(id);
  }
  return ids;
}

// What a bridge remembers of the adapter's session, one file per bridge.
std::vector<std::string> bridge_files(int root, const std::string& adapter_session) {
  std::vector<std::string> files;
  if (!acp::is_safe_id(adapter_session)) return files;
  auto dir = open_beneath(root, "bridges", O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
  if (!dir) return files;
  if (DIR* d = ::fdopendir(dir->release())) {
    while (dirent* e = ::readdir(d)) {
      std::string bridge = e->d_name;
      if (!acp::is_safe_id(bridge)) continue;
      std::string rel = "bridges/" + bridge + "/" + adapter_session + ".json";
      if (open_beneath(root, rel, O_RDONLY, 0, StateAccess::kReadOnly)) files.push_back(rel);
    }
    ::closedir(d);
  }
  return files;
}

}  // namespace

int forget_command(const std::string& state_dir, const std::string& target, bool dry_run) {
  auto opened = open_for_change(state_dir, dry_run);
  if (!opened) {
    std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
    return 1;
  }
  const UniqueFd& root = opened->root;
  std::map<std::string, SessionRecord> records;
  if (opened->db) records = session_records(*opened->db);
  std::vector<std::string> ids = sessions_named(records, target);
  if (ids.empty()) {
    std::fprintf(stderr, "harnessd: no session has the id, name or host name '%s'\n", target.c_str());
    return 1;
  }
  if (ids.size() > 1) {
    std::string list;
    for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
    std::fprintf(stderr, "harnessd: several sessions are called '%s' (%s); forget them by id\n", target.c_str(),
                 list.c_str());
    return 1;
  }
  const std::string id = ids.front();
  SessionRecord record = records[id];
  if (auto daemon = Servers(*opened).of(record)) {
    std::fprintf(stderr, "harnessd: %s is served by running daemon %s; close it there (session/close) first\n",
                 id.c_str(), daemon->c_str());
    return 1;
  }
  // Its runs' folders, then the transcript and what bridges keep for it.
  StateDb::RunFilter of_session;
  of_session.session_id = id;
  auto runs_of = opened->db->runs(of_session);
  if (!runs_of) {
    std::fprintf(stderr, "harnessd: %s\n", runs_of.error().message.c_str());
    return 1;
  }
  std::vector<std::string> doomed;
  for (const RunRecord& r : *runs_of) {
    const std::string& run_id = r.runId;
    if (!acp::is_safe_id(run_id)) continue;
    if (!r.ended() && daemon_instance_alive(root.get(), r.daemon)) {
      std::fprintf(stderr, "harnessd: run %s of %s is still running (daemon %s); wait for it to end\n",
                   run_id.c_str(), id.c_str(), r.daemon.c_str());
      return 1;
    }
    doomed.push_back(Store::run_dir(run_id));
  }
  const std::size_t runs = doomed.size();
  doomed.push_back(segment::file_of(id));
  doomed.push_back(Store::transcript_file(id));
  for (auto& rel : bridge_files(root.get(), record.adapter_session_id.value_or(""))) doomed.push_back(std::move(rel));
  if (dry_run) {
    for (const auto& rel : doomed) {
      struct stat st {};
      if (::fstatat(root.get(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        print_line("would remove " + state_dir + "/" + rel);
      }
    }
    print_line("would clear the summary, oneshot history and MCP servers of " + id + "'s record and close it");
    return 0;
  }
  std::uint64_t bytes = 0;
  int code = 0;
  for (const auto& rel : doomed) {
    if (auto removed = remove_beneath(root.get(), rel, &bytes); !removed) {
      std::fprintf(stderr, "harnessd: cannot remove %s\n", removed.error().message.c_str());
      code = 1;
    }
  }
  // The record stays (its id, harness, times), without content.
  record.summary.reset();
  record.history = json::array();
  record.mcp_servers = json::array();
  record.adapter_session_id.reset();
  if (auto w = write_closed(*opened->db, record); !w) {
    std::fprintf(stderr, "harnessd: %s\n", w.error().message.c_str());
    code = 1;
  }
  print_line("forgot " + id + ": " + std::to_string(runs) + " run recording(s) and the transcript, " +
             std::to_string(bytes) + " bytes; its ledger lines stay");
  return code;
}

Expected<std::uint64_t> compact_segment(int root, const std::string& session_id, const std::set<std::string>& gone) {
  const std::string rel = segment::file_of(session_id);
  const std::string leaf = session_id + ".jsonl", tmp_leaf = session_id + ".jsonl.compact";
  auto folder = open_beneath(root, "segments", O_RDONLY | O_DIRECTORY);
  if (!folder) return folder.error().err == ENOENT ? Expected<std::uint64_t>(0) : Expected<std::uint64_t>(Error{folder.error().message});
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto opened = open_beneath(root, rel, O_RDWR);
    if (!opened) {
      if (opened.error().err == ENOENT) return 0;
      return Error{"cannot compact " + opened.error().message};
    }
    const int fd = opened->get();
    // Appends hold this lock too; one that waited for it finds the file
    // unlinked and writes to the new one.
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno != EINTR) return Error{"cannot lock " + rel + ": " + std::strerror(errno)};
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) return Error{"cannot compact " + rel + ": " + std::strerror(errno)};
    if (st.st_nlink == 0) continue;  // compacted by another process meanwhile
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < text.size()) {
      ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Error{"cannot read " + rel + ": " + std::strerror(n < 0 ? errno : EIO)};
      got += static_cast<std::size_t>(n);
    }
    std::string kept;
    kept.reserve(text.size());
    // A tag stands for its run up to where it is declared again, so the
    // lines keep their order.
    segment::each_line(text, [&](std::string_view line, std::string_view run) {
      if (run.empty() || !gone.count(std::string(run))) kept.append(line);
    });
    if (kept.size() == text.size()) return 0;
    ::unlinkat(folder->get(), tmp_leaf.c_str(), 0);  // one left by a crash
    auto written = create_file_in(folder->get(), tmp_leaf, "segments/" + tmp_leaf, kept, true);
    if (!written) return Error{"cannot compact " + rel + ": " + written.error().message};
    if (::renameat(folder->get(), tmp_leaf.c_str(), folder->get(), leaf.c_str()) != 0) {
      int err = errno;
      ::unlinkat(folder->get(), tmp_leaf.c_str(), 0);
      return Error{"cannot compact " + rel + ": " + std::strerror(err)};
    }
    return text.size() - kept.size();
  }
  return Error{"cannot compact " + rel + ": it kept being replaced"};
}

Expected<Collected> collect_garbage(StateDb& db, int root, const Retention& retention, bool dry_run,
                                    const std::function<void(const std::string&)>& said,
                                    const std::atomic<bool>* stop) {
  Collected done;
  if (!retention.bounded()) return done;
  const std::string cutoff =
      retention.keep_days > 0
          ? acp::iso_time(std::chrono::system_clock::now() - std::chrono::hours(24) * retention.keep_days)
          : std::string();
  auto expiry = db.expiry(cutoff, retention.keep_runs);
  if (!expiry) return std::move(expiry).error();
  constexpr std::size_t kChunk = 500;
  auto stopped = [&] { return stop && stop->load(); };
  auto remove = [&](const std::string& rel) {
    if (dry_run) {
      const bool there = open_beneath(root, rel, O_RDONLY, 0, StateAccess::kReadOnly) ||
                         open_beneath(root, rel, O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
      if (there) said("would remove " + rel);
      return;
    }
    if (auto removed = remove_beneath(root, rel, &done.bytes); !removed) {
      ++done.problems;
      said("cannot remove " + removed.error().message);
    }
  };
  // Runs: their folders, then their rows, a chunk at a time. At least one
  // chunk of each kind is done, even when asked to stop.
  for (std::int64_t after = 0;;) {
    auto chunk = db.expired_runs(*expiry, after, kChunk);
    if (!chunk) return std::move(chunk).error();
    if (chunk->empty()) break;
    std::vector<std::string> ids;
    std::map<std::string, std::set<std::string>> by_session;  // the runs' lines to drop from each segment
    for (const auto& [seq, id] : *chunk) {
      after = seq;
      if (!acp::is_safe_id(id)) continue;
      remove(Store::run_dir(id));
      if (auto found = db.find_run(id); found && *found && acp::is_safe_id((*found)->sessionId)) {
        by_session[(*found)->sessionId].insert(id);
        if (dry_run) said("would remove run " + id + " from " + segment::file_of((*found)->sessionId));
      }
      ids.push_back(id);
    }
    for (const auto& [session_id, gone] : by_session) {
      if (dry_run) continue;
      auto compacted = compact_segment(root, session_id, gone);
      if (!compacted) {
        ++done.problems;
        said(compacted.error().message);
      } else {
        done.bytes += *compacted;
      }
    }
    if (dry_run) {
      done.runs += ids.size();
    } else {
      auto tx = Transaction::begin(db.db());
      if (!tx) return std::move(tx).error();
      auto deleted = db.delete_runs(ids);
      if (!deleted) return std::move(deleted).error();
      if (auto r = tx->commit(); !r) return std::move(r).error();
      done.runs += *deleted;
    }
    if (stopped()) break;
  }
  // Closed sessions with no run left.
  for (std::string after;;) {
    auto chunk = db.expired_sessions(*expiry, after, kChunk);
    if (!chunk) return std::move(chunk).error();
    if (chunk->empty()) break;
    std::vector<std::string> ids;
    for (const auto& id : *chunk) {
      after = id;
      if (!acp::is_safe_id(id)) continue;
      std::optional<std::string> adapter_session;
      if (auto stored = db.session(id); stored && *stored) {
        if (auto record = SessionRecord::from_json(**stored)) adapter_session = record->adapter_session_id;
      }
      remove(Store::transcript_file(id));
      remove(segment::file_of(id));
      for (const auto& rel : bridge_files(root, adapter_session.value_or(""))) remove(rel);
      if (dry_run) said("would drop the record of session " + id);
      ids.push_back(id);
    }
    if (dry_run) {
      done.sessions += ids.size();
    } else {
      auto tx = Transaction::begin(db.db());
      if (!tx) return std::move(tx).error();
      for (const auto& id : ids) {
        auto deleted = db.delete_session(id);
        if (!deleted) return std::move(deleted).error();
        if (*deleted) ++done.sessions;
      }
      if (auto r = tx->commit(); !r) return std::move(r).error();
    }
    if (stopped()) break;
  }
  return done;
}

int gc_command(const std::string& state_dir, const Retention& retention, bool dry_run) {
  auto opened = open_for_change(state_dir, dry_run);
  if (!opened) {
    std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
    return 1;
  }
  if (!opened->db) return 0;  // nothing recorded
  if (!retention.bounded()) {
    std::fprintf(stderr, "harnessd: [daemon] retention keeps everything (keep_days = 0, keep_runs = 0)\n");
    return 0;
  }
  auto collected = collect_garbage(*opened->db, opened->root.get(), retention, dry_run,
                                   [&](const std::string& what) { print_line(what); });
  if (!collected) {
    std::fprintf(stderr, "harnessd: %s\n", collected.error().message.c_str());
    return 1;
  }
  const std::string bounds = "older than " + std::to_string(retention.keep_days) + " days or beyond the newest " +
                             std::to_string(retention.keep_runs) + " runs";
  print_line(std::string(dry_run ? "would remove " : "removed ") + std::to_string(collected->runs) +
             " ended run(s) " + bounds + " and " + std::to_string(collected->sessions) +
             " closed session(s) with no run left" +
             (dry_run ? "" : ", " + std::to_string(collected->bytes) + " bytes"));
  return collected->problems ? 1 : 0;
}

}  // namespace harnessd::worker
