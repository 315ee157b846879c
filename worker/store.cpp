// The state directory. Start-up work (recovery included) is synchronous;
// everything after is a job for a writer lane (store_writer.h) whose result
// comes back to the loop. Paths are built only from checked ids.
#include "worker/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <set>
#include <string_view>

#include "acp/log.h"
#include "queue/ids.h"
#include "schema/rpc_error.h"
#include "worker/housekeeping.h"
#include "worker/job_queue.h"
#include "worker/state_dir.h"
#include "worker/run_recording.h"
#include "worker/segment.h"
#include "worker/store_writer.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// True when the daemon instance that owns daemons/<file> is gone: its lock
// file is missing, not a file of ours, or nobody holds the lock (flock
// dies with its process, kill -9 included).
constexpr std::string_view kLockingSuffix = ".locking";

bool instance_dead(int root, const std::string& file) {
  auto fd = open_beneath(root, "daemons/" + file, O_RDONLY, 0, StateAccess::kReadOnly);
  if (!fd) return true;
  return ::flock(fd->get(), LOCK_EX | LOCK_NB) == 0;
}

}  // namespace

bool daemon_instance_alive(int root, const std::string& instance) {
  return acp::is_safe_id(instance) && !instance_dead(root, instance + ".lock");
}

Store::Store(acp::Loop& loop, std::string dir, StoreOptions options)
    : loop_(loop), dir_(std::move(dir)), options_(options), instance_(queue::make_id("d_")) {}

Store::~Store() {
  // A collection under way stops after its chunk.
  retention_stop_ = true;
  if (retention_thread_.joinable()) retention_thread_.join();
  // The writer runs the file jobs still queued (a run's end among them
  // hands its entry over), writes everything queued (callbacks are not
  // run) and tries what waited for space once more; the lanes' files are
  // closed after it stopped.
  if (db_writer_) {
    flush_staged();
  }
  // The sessions this process still holds can be taken at once, without
  // waiting for its lock file to go. Nothing to release (a `harnessd run`
  // closed its one session) costs no transaction.
  if (db_writer_ && (!leased_.empty() || leased_by_name_)) {
    DbWriter::Job job;
    job.apply = [instance = instance_](StateDb& db) { return db.release_leases(instance); };
    db_writer_->push(std::move(job));
  }
  db_writer_.reset();
  lanes_.clear();
  reader_.reset();
  completions_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    ::unlinkat(root_, ("daemons/" + instance_ + ".lock").c_str(), 0);
  }
  if (root_ >= 0) ::close(root_);
}

std::string Store::directory(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty() || dir.front() != '/') dir = acp::default_state_home();  // never relative to the cwd
  return dir;
}

namespace {
constexpr const char* kRetentionLastRun = "retention last applied";

// Whether retention was applied within the hour under the same policy, by
// this process or another: then there is nothing to do (a host that starts
// a harnessd per call pays one indexed read).
bool retention_applied_lately(StateDb& db, const std::string& policy) {
  auto last = db.meta(kRetentionLastRun);
  if (!last || !*last) return false;
  const std::string hour_ago = acp::iso_time(std::chrono::system_clock::now() - std::chrono::hours(1));
  const auto space = (*last)->find(' ');
  return space != std::string::npos && (*last)->substr(space) == policy && (*last)->substr(0, space) > hour_ago;
}
}  // namespace

std::unique_ptr<Store> Store::open(acp::Loop& loop, std::string dir, StoreOptions options) {
  std::unique_ptr<Store> store(new Store(loop, directory(std::move(dir)), options));
  Store& s = *store;
  s.budget_ = std::make_unique<WriteBudget>(options.fail_after_bytes);
  // The directory is opened once; everything after is relative to it and
  // follows no link, so a link planted in it cannot send a write elsewhere.
  auto root = open_state_dir(s.dir_, StateAccess::kOwn);
  if (!root) {
    s.unusable_ = root.error().message;
  } else {
    s.root_ = root->release();
    for (const char* sub : {"runs", "segments", "sessions", "daemons"}) {
      if (auto made = make_dir_beneath(s.root_, sub); !made) {
        s.unusable_ = "cannot use the state directory " + s.dir_ + ": " + made.error().message;
        break;
      }
      // Tightened if others could write to it (make_dir_beneath only checks).
      (void)open_beneath(s.root_, sub, O_RDONLY | O_DIRECTORY);
    }
    if (!s.unusable_) {
      // The lock file appears under its name already locked: created and
      // locked under another name first, then renamed. A process starting
      // beside this one that found it unlocked would take this instance
      // for dead, remove its lock file, and take over its sessions.
      std::string lock = "daemons/" + s.instance_ + ".lock";
      std::string locking = "daemons/" + s.instance_ + std::string(kLockingSuffix);
      auto fd = open_beneath(s.root_, locking, O_RDWR | O_CREAT | O_EXCL, 0600);
      if (!fd) {
        s.unusable_ = "cannot write in the state directory " + s.dir_ + ": " + fd.error().message;
      } else if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
        s.unusable_ = "cannot lock " + locking + " in the state directory " + s.dir_ + ": " + std::strerror(errno);
      } else {
        (void)acp::write_all(fd->get(), std::to_string(::getpid()) + "\n");
        if (::renameat(s.root_, locking.c_str(), s.root_, lock.c_str()) != 0) {
          s.unusable_ = "cannot create " + lock + " in the state directory " + s.dir_ + ": " + std::strerror(errno);
          ::unlinkat(s.root_, locking.c_str(), 0);
        } else {
          s.lock_fd_ = fd->release();
        }
      }
    }
  }
  if (s.unusable_) acp::log::error(*s.unusable_ + "; runs will fail until it is fixed");

  s.completions_ = std::make_unique<WriteCompletions>(loop);
  for (int i = 0; i < kLanes; ++i) {
    s.lanes_.push_back(std::make_unique<StoreWriter>(*s.completions_, s.root_, *s.budget_,
                                                     [&s](std::size_t bytes) { s.written(bytes); }));
  }
  if (!s.unusable_) s.open_database();
  if (!s.unusable_) s.recover();
  // Whether retention is due is asked before the writer thread takes the
  // connection, so that a start with nothing to do costs neither a thread
  // nor another connection.
  const bool retention_due = s.writer_db_ && options.retention.bounded() &&
                             !retention_applied_lately(*s.writer_db_, s.retention_policy());
  if (s.writer_db_) s.db_writer_ = std::make_unique<DbWriter>(*s.completions_, std::move(s.writer_db_));
  if (s.db_writer_ && retention_due) s.start_retention();
  return store;
}

Expected<std::unique_ptr<StateDb>> Store::connect() const {
  Database::Options db_options;
  db_options.full_sync = options_.sync;
  return StateDb::open(dir_, root_, db_options);
}

void Store::open_database() {
  auto opened = connect();
  if (!opened) {
    unusable_ = "cannot use the state database " + dir_ + "/" + StateDb::kFile + ": " + opened.error().message;
    acp::log::error(*unusable_ + "; runs will fail until it is fixed");
    return;
  }
  // An earlier harnessd kept the ledger and session records in files.
  auto imported = (*opened)->import_files(root_);
  if (!imported) {
    acp::log::error("cannot import the ledger and session records of " + dir_ + ": " + imported.error().message);
  } else if (*imported) {
    acp::log::info("imported " + std::to_string((*imported)->ledger_lines) + " ledger lines and " +
                   std::to_string((*imported)->sessions) + " session records into " + StateDb::kFile +
                   "; the files are kept in " + StateDb::kImportedDir + "/");
  }
  // Read now, while the connection is this thread's: the reading one
  // opens at the first read after the start, if any comes.
  if (auto offered = (*opened)->harness_options(); !offered) {
    acp::log::error("cannot read what the harnesses' adapters offer: " + offered.error().message);
  } else {
    harness_options_at_open_ = std::move(*offered);
  }
  writer_db_ = std::move(*opened);
}

std::string Store::retention_policy() const {
  return " keep_days=" + std::to_string(options_.retention.keep_days) +
         " keep_runs=" + std::to_string(options_.retention.keep_runs);
}

void Store::start_retention() {
  retention_thread_ = std::thread([this, policy = retention_policy()] {
    name_this_thread("hd-retention");
    auto db = connect();
    if (!db) {
      acp::log::warn("retention: cannot open the state database: " + db.error().message);
      return;
    }
    if (retention_applied_lately(**db, policy)) return;  // by another process, just now
    if (auto r = (*db)->set_meta(kRetentionLastRun, acp::iso_time() + policy); !r) {
      acp::log::warn("retention: " + r.error().message);
      return;
    }
    auto collected = collect_garbage(
        **db, root_, options_.retention, false, [](const std::string& what) { acp::log::warn("retention: " + what); },
        &retention_stop_);
    if (!collected) {
      acp::log::warn("retention: " + collected.error().message);
    } else if (collected->runs || collected->sessions) {
      acp::log::info("retention: removed " + std::to_string(collected->runs) + " ended run(s) and " +
                     std::to_string(collected->sessions) + " closed session(s), " + std::to_string(collected->bytes) +
                     " bytes");
    }
  });
}

void Store::recover() {
  // Runs left open by a daemon that is gone end as "interrupted", in one
  // transaction: two processes starting at once cannot both end one run. A
  // run of a daemon that still runs (several may share a directory) is
  // left alone.
  int root = root_;
  auto ended = writer_db_->interrupt_orphans(
      [root](const std::string& daemon) { return daemon_instance_alive(root, daemon); }, instance_, acp::iso_time());
  if (!ended) acp::log::error("cannot end the runs of daemons that are gone: " + ended.error().message);
  if (auto dropped = writer_db_->drop_dead_leases(
          [root](const std::string& daemon) { return daemon_instance_alive(root, daemon); });
      !dropped) {
    acp::log::warn("cannot drop the session leases of daemons that are gone: " + dropped.error().message);
  }
  std::map<std::string, std::map<std::string, segment::Run>> segments;  // by session
  for (const LedgerEntry& e : ended ? *ended : std::vector<LedgerEntry>{}) {
    const std::string reason = e.extra.value("reason", "");
    // Every ended run has its result.json, also one that was still queued;
    // one already there (the run ended, the daemon died before the commit)
    // stands. A run of an earlier harnessd gets it in its own folder.
    if (acp::is_safe_id(e.runId) && acp::is_safe_id(e.sessionId)) {
      // Each session's segment is read once, however many of its runs end.
      auto [seg, fresh] = segments.try_emplace(e.sessionId);
      if (fresh) {
        if (auto text = read_beneath(root_, segment::file_of(e.sessionId))) seg->second = segment::read_all(*text);
      }
      const auto run = seg->second.find(e.runId);
      const bool has_result = run != seg->second.end()
                                  ? run->second.files.count("result.json") > 0
                                  : read_run_files(root_, e.runId, "").files.count("result.json") > 0;
      if (!has_result) {
        json result = {{"runId", e.runId}, {"sessionId", e.sessionId}, {"state", run_event::kInterrupted},
                       {"reason", reason}, {"endedAt", e.time}};
        std::string rel = recording_of(root_, e.runId, e.sessionId);
        Expected<void, PathError> w;
        if (rel == run_dir(e.runId)) {
          rel += "/result.json";
          w = replace_file_beneath(root_, rel, result.dump() + "\n", false);
        } else {
          auto fd = open_append(root_, rel);
          Expected<void> appended = fd ? Expected<void>() : Expected<void>(fd.error());
          if (fd) {
            appended = append_whole(*fd, segment::file_line(e.runId, "result.json", result.dump() + "\n", true), rel);
            ::close(*fd);
          }
          if (!appended) w = PathError{EIO, appended.error().message};
        }
        if (!w) acp::log::error("cannot write " + rel + ": " + w.error().message);
      }
    }
    acp::log::warn("run " + e.runId + " of session " + e.sessionId + " was interrupted: " + reason);
  }
  // Lock files of instances that are gone.
  if (auto daemons = open_beneath(root_, "daemons", O_RDONLY | O_DIRECTORY)) {
    int dfd = daemons->get();
    if (DIR* d = ::fdopendir(::fcntl(dfd, F_DUPFD_CLOEXEC, 0))) {
      while (dirent* e = ::readdir(d)) {
        std::string file = e->d_name;
        if (file.size() < 6 || file.compare(file.size() - 5, 5, ".lock") != 0) continue;
        if (file == instance_ + ".lock") continue;
        if (instance_dead(root_, file)) {
          ::unlinkat(dfd, file.c_str(), 0);  // a link is removed, not followed
          // What it said of its harnesses (see Engine::publish_harnesses).
          const std::string instance = file.substr(0, file.size() - 5);
          ::unlinkat(dfd, (instance + ".harnesses.json").c_str(), 0);
        }
      }
      ::rewinddir(d);
      // A lock file a process was killed before naming, once it is old
      // enough that no process can still be between creating and naming it.
      const std::time_t stale_before = std::time(nullptr) - 60;
      while (dirent* e = ::readdir(d)) {
        std::string file = e->d_name;
        if (file.size() <= kLockingSuffix.size() ||
            file.compare(file.size() - kLockingSuffix.size(), kLockingSuffix.size(), kLockingSuffix) != 0) {
          continue;
        }
        struct stat st {};
        if (::fstatat(dfd, file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mtime < stale_before) {
          ::unlinkat(dfd, file.c_str(), 0);
        }
      }
      ::closedir(d);
    }
  }
}

std::string Store::key_of(const std::string& rel) {
  // runs/<id>/... and sessions/<id>.json(l) belong to <id>'s lane.
  auto slash = rel.find('/');
  if (slash == std::string::npos) return rel;
  std::string_view rest = std::string_view(rel).substr(slash + 1);
  return std::string(rest.substr(0, rest.find_first_of("/.")));
}

StoreWriter& Store::lane_for(const std::string& key) {
  return *lanes_[std::hash<std::string>{}(key) % lanes_.size()];
}

void Store::submit(const std::string& key, acp::UniqueFunction<Expected<void>()> work, Done done, std::string run,
                   std::size_t bytes) {
  if (unusable_) {
    // Fail on the loop, never inside the caller's stack.
    std::string why = *unusable_;
    if (done) loop_.post([done = std::move(done), why]() mutable { done(Error{why}); });
    return;
  }
  to_lane(lane_for(key), StoreWriter::Job{std::move(work), std::move(done), std::move(run), bytes});
}

void Store::to_lane(StoreWriter& lane, StoreWriter::Job job) {
  const std::size_t bytes = job.bytes;
  queued_ += bytes;
  lane.mark_used();
  DbWriter::Job writing;
  writing.lazy = job.can_wait && !job.ends_run;
  writing.lane = &lane;
  writing.file = std::move(job);
  to_database(std::move(writing));
  if (bytes) check_pressure();
}

void Store::set_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn) {
  high_water_ = high;
  low_water_ = low < high ? low : high;
  on_pressure_ = std::move(fn);
  check_pressure();
}

// over_ and queued_ are seq_cst atomics, stored before the other is loaded on
// both sides: either the loop sees the writer's decrement, or the writer
// sees over_ and wakes the loop. No drain goes unnoticed.
void Store::check_pressure() {
  if (!on_pressure_ || high_water_ == 0) return;
  if (!over_.load()) {
    if (queued_.load() <= high_water_) return;
    over_.store(true);
    if (queued_.load() <= low_water_) {  // drained meanwhile
      over_.store(false);
      return;
    }
    on_pressure_(true);
  } else if (queued_.load() <= low_water_) {
    over_.store(false);
    on_pressure_(false);
  }
}

void Store::written(std::size_t bytes) {
  std::size_t left = queued_.fetch_sub(bytes) - bytes;
  if (left > low_water_ || !over_.load() || wake_sent_.exchange(true)) return;
  completions_->push(
      [this](Expected<void>) {
        wake_sent_.store(false);
        check_pressure();
      },
      {});
}

namespace {

// A run's files are runs/<runId>/...; their failures mark the run.
bool in_run_folder(const std::string& rel) { return rel.rfind("runs/", 0) == 0; }

}  // namespace

LedgerEntry Store::store_failure(const LedgerEntry& end, const std::string& why) {
  LedgerEntry e = end;
  e.event = run_event::kFailed;
  e.extra = {{"error",
              {{"code", rpc_code::kStoreFailed},
               {"message", "run " + end.runId + " failed: it could not be recorded (" + why + ")"},
               {"data", {{"runId", end.runId}, {"reason", "store"}}}}}};
  return e;
}

void Store::to_database(DbWriter::Job job) {
  if (!db_writer_) {
    // Fail on the loop, never inside the caller's stack.
    std::string why = unusable_.value_or("the state database is not open");
    WriteDone done = job.lane ? std::move(job.file->done) : std::move(job.done);
    if (done) loop_.post([done = std::move(done), why]() mutable { done(Error{why}); });
    return;
  }
  staged_.push_back(std::move(job));
  wake_writer();
}

void Store::flush_staged() {
  if (staged_.empty() || !db_writer_) return;
  if (db_writer_->push_all(staged_)) db_writer_->wake();
}

void Store::wake_writer() {
  // Once the loop has run every callback of this iteration: what it asked
  // for becomes one batch for the writer.
  if (wake_posted_) return;
  wake_posted_ = true;
  loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    wake_posted_ = false;
    flush_staged();
  });
}

void Store::record(LedgerEntry entry, Done done) {
  if (entry.time.empty()) entry.time = acp::iso_time();
  if (entry.daemon.empty()) entry.daemon = instance_;
  std::string run_id = entry.runId;
  auto& unsaved = unsaved_entries_[run_id];
  if (unsaved.empty() && entry.event == run_event::kQueued) unsaved_order_.push_back(run_id);
  if (unsaved.empty()) unsaved.reserve(2);  // queued and started
  unsaved.push_back(entry);
  DbWriter::Job job;
  job.lazy = !is_terminal_event(entry.event);
  job.entry = std::move(entry);
  job.done = [this, run_id = std::move(run_id), done = std::move(done)](Expected<void> r) mutable {
    // Committed: the database has it now. One that waits for space stays
    // here, so reads still see it.
    if (r) forget_unsaved(run_id);
    if (done) done(std::move(r));
  };
  to_database(std::move(job));
}

void Store::forget_unsaved(const std::string& run_id) {
  auto it = unsaved_entries_.find(run_id);
  if (it == unsaved_entries_.end()) return;
  it->second.erase(it->second.begin());
  if (!it->second.empty()) return;
  unsaved_entries_.erase(it);
  // Runs first seen here leave the list once nothing of theirs is unsaved.
  if (unsaved_entries_.empty()) unsaved_order_.clear();
}

void Store::end_run(std::optional<std::string> result_json, LedgerEntry end, bool failure_fails, bool /*sync*/,
                    Done done) {
  if (end.time.empty()) end.time = acp::iso_time();
  if (end.daemon.empty()) end.daemon = instance_;
  const std::string run_id = end.runId;
  // The run's recording is written in its session's lane.
  const std::string key = acp::is_safe_id(end.sessionId) ? end.sessionId : run_id;
  const bool safe_ids = acp::is_safe_id(end.runId) && acp::is_safe_id(end.sessionId);
  std::string seg = safe_ids ? segment::file_of(end.sessionId) : std::string();
  // The entry that ends up in the database. It travels to the writer in
  // its job and comes back here once written, so that it is never copied.
  auto written = std::make_shared<LedgerEntry>(unusable_ && failure_fails ? store_failure(end, *unusable_)
                                                                         : std::move(end));
  Done apply = [this, written, done = std::move(done)](Expected<void> r) mutable {
    // Not committed (it waits for space, or there is no database): reads
    // see it here.
    if (!r && !written->runId.empty()) {
      auto& unsaved = unsaved_entries_[written->runId];
      if (unsaved.empty()) unsaved_order_.push_back(written->runId);
      unsaved.push_back(*written);
    }
    if (done) done(std::move(r));
  };
  if (unusable_ || !db_writer_) return submit(key, nullptr, std::move(apply));
  bool do_sync = options_.sync;
  StoreWriter* w = &lane_for(key);
  DbWriter* db = db_writer_.get();
  // In the lane of the run's segment, after its frames: the result, then
  // the terminal entry. The lane does not wait for its commit, but this
  // job's result is the commit's, and the results of the lane's later jobs
  // reach the loop after it: a barrier on the session, and the host's
  // answer after it, still come after the commit.
  auto hand_over = [w, db, written, failure_fails](Expected<void> first) -> Expected<void> {
    std::optional<std::string> why = w->take_run_failure(written->runId);
    if (!why && !first) why = first.error().message;
    DbWriter::Job job;
    job.entry = std::move(*written);
    if (failure_fails && why) job.entry = store_failure(*job.entry, *why);
    if (failure_fails) {
      // The first reason stands: it is the one the host is told. Only the
      // outcome changes, so the entry at hand serves as well as the one
      // asked for.
      job.fallback = [first_why = why](const LedgerEntry& current, const std::string& db_why) {
        return store_failure(current, first_why.value_or(db_why));
      };
    }
    // On the writer thread, once committed (or kept to wait): read on the
    // loop only after the answer given here.
    job.on_writer = [written, first, answer = w->answer_later()](const Expected<void>& stored, LedgerEntry& entry) {
      *written = std::move(entry);
      answer(first ? stored : first);
    };
    // Committed with the batch whose file jobs this one is.
    db->hand_over(std::move(job));
    return {};  // the run's failures were taken above; the answer is given later
  };
  if (!result_json || !safe_ids) {
    StoreWriter::Job job([hand_over]() mutable { return hand_over({}); }, std::move(apply), run_id);
    job.pure = true;
    job.can_wait = true;
    job.ends_run = true;
    return to_lane(*w, std::move(job));
  }
  // The result's line joins the appends around it (one write), and the
  // hand-over runs once it is written.
  std::string line = segment::file_line(run_id, "result.json", *result_json, true);
  StoreWriter::Job job = StoreWriter::Job::appending(seg, std::move(line), std::move(apply), run_id);
  job.ends_run = true;
  job.then = [w, seg, do_sync, hand_over](Expected<void> first) mutable {
    if (first && do_sync) first = w->sync_file(seg);
    return hand_over(std::move(first));
  };
  to_lane(*w, std::move(job));
}

void Store::save_session(const json& record, Done done) {
  std::string id = record.value("sessionId", "");
  if (!acp::is_safe_id(id)) {
    if (done) loop_.post([done = std::move(done), id]() mutable { done(Error{"unsafe session id " + id}); });
    return;
  }
  UnsavedRecord& unsaved = unsaved_sessions_[id];
  unsaved.record = record;
  ++unsaved.writes;
  DbWriter::Job job;
  job.record = record;
  job.done = [this, id, done = std::move(done)](Expected<void> r) mutable {
    auto it = unsaved_sessions_.find(id);
    if (it != unsaved_sessions_.end() && --it->second.writes == 0 && r) unsaved_sessions_.erase(it);
    if (done) done(std::move(r));
  };
  to_database(std::move(job));
}

void Store::make_dir(std::string rel, Done done) {
  std::string key = key_of(rel);
  StoreWriter* w = &lane_for(key);
  std::string run = done && in_run_folder(rel) ? key : "";
  submit(
      key, [w, rel]() { return w->make_dir(rel); }, std::move(done), std::move(run));
}

void Store::write_file(std::string rel, std::string content, Done done, bool sync) {
  put_file(std::move(rel), std::move(content), std::move(done), sync, /*fresh=*/false);
}

void Store::create_file(std::string rel, std::string content, Done done, bool sync) {
  put_file(std::move(rel), std::move(content), std::move(done), sync, /*fresh=*/true);
}

void Store::put_file(std::string rel, std::string content, Done done, bool sync, bool fresh) {
  std::string key = key_of(rel);
  StoreWriter* w = &lane_for(key);
  bool do_sync = sync && options_.sync;
  std::string run = done && in_run_folder(rel) ? key : "";
  std::size_t bytes = content.size();
  submit(
      key,
      [w, rel, content = std::move(content), do_sync, fresh]() { return w->put_file(rel, content, do_sync, fresh); },
      std::move(done), std::move(run), bytes);
}

std::string Store::recording_path(const std::string& run_id, const std::string& session_id) const {
  return path(recording_of(root_, run_id, session_id));
}

void Store::record_lines(const std::string& session_id, const std::string& run_id, std::string lines, Done done,
                         const void* same) {
  std::string rel = segment::file_of(session_id);
  StoreWriter* w = &lane_for(session_id);
  if (unusable_ || !acp::is_safe_id(session_id)) {
    if (!unusable_) {
      loop_.post([done = std::move(done), session_id]() mutable {
        if (done) done(Error{"unsafe session id " + session_id});
      });
      return;
    }
    submit(session_id, nullptr, std::move(done));
    return;
  }
  std::string run = done ? run_id : std::string();
  StoreWriter::Job job = StoreWriter::Job::appending(std::move(rel), std::move(lines), std::move(done), std::move(run));
  job.same = same;
  to_lane(*w, std::move(job));
}

void Store::append(std::string rel, std::string data, Done done) {
  std::string key = key_of(rel);
  StoreWriter* w = &lane_for(key);
  std::string run = done && in_run_folder(rel) ? key : "";
  if (unusable_) {
    submit(key, nullptr, std::move(done));
    return;
  }
  to_lane(*w, StoreWriter::Job::appending(std::move(rel), std::move(data), std::move(done), std::move(run)));
}

template <typename T>
void Store::read_in_lane(const std::string& key, std::function<Expected<T>()> read,
                         acp::UniqueFunction<void(Expected<T>)> done) {
  auto result = std::make_shared<std::optional<Expected<T>>>();
  acp::UniqueFunction<Expected<void>()> work = [read = std::move(read), result]() -> Expected<void> {
    result->emplace(read());
    return {};
  };
  Done finish = [result, done = std::move(done)](Expected<void> r) mutable {
    if (*result) return done(std::move(**result));
    done(r ? Error{"the read did not run"} : r.error());  // the writer gave up before it
  };
  if (unusable_) {
    // Reading may still work in a read-only directory.
    (void)work();  // what it read is in *result
    loop_.post([finish = std::move(finish)]() mutable { finish({}); });
    return;
  }
  to_lane(lane_for(key), StoreWriter::Job{std::move(work), std::move(finish), {}});
}

void Store::read_file(std::string rel, ReadDone done) {
  std::string key = key_of(rel);
  int root = root_;
  read_in_lane<std::string>(
      key,
      [root, rel]() -> Expected<std::string> {
        if (root < 0) return Error{"cannot read " + rel + ": the state directory could not be opened"};
        auto read = read_beneath(root, rel);
        if (!read) {
          if (read.error().err == ENOENT) return std::string();  // nothing recorded yet
          return path_error("read", rel, read.error());
        }
        return std::move(*read);
      },
      std::move(done));
}

void Store::read_transcript(const std::string& session_id, TranscriptDone done) {
  const std::string rel = transcript_file(session_id);
  int root = root_;
  read_in_lane<transcript::Expanded>(
      key_of(rel),
      [root, rel, session_id]() -> Expected<transcript::Expanded> {
        if (root < 0) return Error{"cannot read " + rel + ": the state directory could not be opened"};
        auto read = read_beneath(root, rel);
        if (!read) {
          if (read.error().err == ENOENT) return transcript::Expanded{};  // nothing recorded yet
          return path_error("read", rel, read.error());
        }
        // The session's runs are in its segment, read once; a run of an
        // earlier harnessd has its own folder.
        std::map<std::string, segment::Run> runs;
        if (auto seg = read_beneath(root, segment::file_of(session_id))) runs = segment::read_all(*seg);
        return transcript::expand(*read, session_id, [root, &runs](const std::string& run_id) -> std::optional<std::string> {
          if (auto it = runs.find(run_id); it != runs.end()) return it->second.files["events.jsonl"];
          auto events = read_beneath(root, run_dir(run_id) + "/events.jsonl");
          if (!events) return std::nullopt;
          return std::move(*events);
        });
      },
      std::move(done));
}

void Store::barrier(const std::string& key, Done done, bool after_end) {
  if (lanes_.empty() || unusable_) {
    loop_.post([done = std::move(done)]() mutable { done({}); });
    return;
  }
  StoreWriter::Job job{[]() -> Expected<void> { return {}; }, std::move(done), {}};
  job.pure = true;
  job.can_wait = after_end;
  to_lane(lane_for(key), std::move(job));
}

void Store::barrier(const std::string& key, const std::string& other, Done done, bool after_end) {
  if (other.empty() || lanes_.empty() || unusable_ || &lane_for(key) == &lane_for(other)) {
    return barrier(key, std::move(done), after_end);
  }
  // Both lanes at once; done when the second reports.
  auto left = std::make_shared<int>(2);
  auto shared = std::make_shared<Done>(std::move(done));
  for (const std::string* k : {&key, &other}) {
    barrier(
        *k,
        [left, shared](Expected<void>) {
          if (--*left == 0) (*shared)({});
        },
        after_end);
  }
}

void Store::barrier_all(Done done) {
  if (lanes_.empty() || unusable_) {
    loop_.post([done = std::move(done)]() mutable { done({}); });
    return;
  }
  // Done when the last lane reports (completions arrive on the loop thread)
  // and then the database writer has committed everything asked before. A
  // lane that was never given a job has nothing to report.
  std::vector<StoreWriter*> started;
  for (auto& lane : lanes_) {
    if (lane->used()) started.push_back(lane.get());
  }
  auto shared = std::make_shared<Done>(std::move(done));
  auto through = [this, shared] {
    DbWriter::Job job;
    job.done = [shared](Expected<void>) { (*shared)({}); };
    to_database(std::move(job));
  };
  if (started.empty()) return through();
  auto left = std::make_shared<std::size_t>(started.size());
  for (StoreWriter* lane : started) {
    to_lane(*lane, StoreWriter::Job{[]() -> Expected<void> { return {}; },
                                    [left, through](Expected<void>) {
                                      if (--*left == 0) through();
                                    },
                                    {}});
  }
}

}  // namespace harnessd::worker
