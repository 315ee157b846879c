// The state directory. Start-up work (recovery included) is synchronous;
// everything after is a job for a writer lane (store_writer.h) whose result
// comes back to the loop. Paths are built only from checked ids.
#include "worker/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "acp/log.h"
#include "queue/ids.h"
#include "schema/rpc_error.h"
#include "worker/ledger_file.h"
#include "worker/state_dir.h"
#include "worker/store_writer.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// True when the daemon instance that owns daemons/<file> is gone: its lock
// file is missing, not a file of ours, or nobody holds the lock (flock
// dies with its process, kill -9 included).
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
  lanes_.clear();
  retry_timer_.reset();
  // A last try for ledger lines that waited for space.
  if (ledger_) ledger_->retry();
  completions_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    ::unlinkat(root_, ("daemons/" + instance_ + ".lock").c_str(), 0);
  }
  if (root_ >= 0) ::close(root_);
}

std::unique_ptr<Store> Store::open(acp::Loop& loop, std::string dir, StoreOptions options) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty() || dir.front() != '/') dir = acp::default_state_home();  // never relative to the cwd
  std::unique_ptr<Store> store(new Store(loop, std::move(dir), options));
  Store& s = *store;
  s.budget_ = std::make_unique<WriteBudget>(options.fail_after_bytes);
  // The directory is opened once; everything after is relative to it and
  // follows no link, so a link planted in it cannot send a write elsewhere.
  auto root = open_state_dir(s.dir_, StateAccess::kOwn);
  if (!root) {
    s.unusable_ = root.error().message;
  } else {
    s.root_ = root->release();
    for (const char* sub : {"runs", "sessions", "daemons"}) {
      if (auto made = make_dir_beneath(s.root_, sub); !made) {
        s.unusable_ = "cannot use the state directory " + s.dir_ + ": " + made.error().message;
        break;
      }
      // Tightened if others could write to it (make_dir_beneath only checks).
      (void)open_beneath(s.root_, sub, O_RDONLY | O_DIRECTORY);
    }
    // ledger.jsonl, if there: ours, a regular file, tightened.
    if (!s.unusable_) {
      auto ledger = open_beneath(s.root_, LedgerFile::kRel, O_RDONLY);
      if (!ledger && ledger.error().err != ENOENT) {
        s.unusable_ = "cannot use the state directory " + s.dir_ + ": " + ledger.error().message;
      }
    }
    if (!s.unusable_) {
      std::string lock = "daemons/" + s.instance_ + ".lock";
      auto fd = open_beneath(s.root_, lock, O_RDWR | O_CREAT | O_EXCL, 0600);
      if (!fd) {
        s.unusable_ = "cannot write in the state directory " + s.dir_ + ": " + fd.error().message;
      } else if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
        s.unusable_ = "cannot lock " + lock + " in the state directory " + s.dir_ + ": " + std::strerror(errno);
      } else {
        s.lock_fd_ = fd->release();
        std::string pid = std::to_string(::getpid()) + "\n";
        (void)acp::write_all(s.lock_fd_, pid);
      }
    }
  }
  if (s.unusable_) acp::log::error(*s.unusable_ + "; runs will fail until it is fixed");

  if (s.root_ >= 0) {
    // The ledger, all lifetimes.
    JsonlRead ledger = read_jsonl_beneath(s.root_, LedgerFile::kRel);
    if (!ledger.refused.empty()) acp::log::error(ledger.refused);
    for (std::size_t n : ledger.bad_lines) {
      acp::log::warn("ledger.jsonl: line " + std::to_string(n) + " is not JSON (cut by a crash?); skipped");
    }
    for (const auto& line : ledger.lines) {
      if (auto entry = LedgerEntry::from_json(line)) s.runs_.apply(*entry);
    }
    // Session records.
    if (auto sessions = open_beneath(s.root_, "sessions", O_RDONLY | O_DIRECTORY)) {
      if (DIR* d = ::fdopendir(sessions->release())) {
        while (dirent* e = ::readdir(d)) {
          std::string file = e->d_name;
          if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
          std::string id = file.substr(0, file.size() - 5);
          if (!acp::is_safe_id(id)) continue;
          JsonlRead rec = read_jsonl_beneath(s.root_, "sessions/" + file);
          if (!rec.refused.empty()) {
            acp::log::warn(rec.refused);
            continue;
          }
          if (rec.lines.size() != 1 || !rec.lines[0].is_object()) {
            acp::log::warn("sessions/" + file + " is not a session record; skipped");
            continue;
          }
          if (auto problem = session_record_problem(rec.lines[0])) {
            acp::log::warn("sessions/" + file + " is not a session record harnessd wrote (" + *problem + "); skipped");
            continue;
          }
          s.sessions_[id] = rec.lines[0];
        }
        ::closedir(d);
      }
    }
    // A ledger line cut by a crash gets its newline now, before several
    // lanes append to the file.
    if (ledger.cut && !s.unusable_) {
      if (auto fd = open_append(s.root_, LedgerFile::kRel)) ::close(*fd);
    }
  }
  s.ledger_ = std::make_unique<LedgerFile>(s.root_, *s.budget_);
  s.completions_ = std::make_unique<WriteCompletions>(loop);
  for (int i = 0; i < kLanes; ++i) {
    s.lanes_.push_back(std::make_unique<StoreWriter>(*s.completions_, s.root_, *s.budget_,
                                                     [&s](std::size_t bytes) { s.written(bytes); }));
  }
  // Ledger lines that waited for space are retried every second; the timer
  // does not keep the loop alive.
  s.retry_timer_ = std::make_unique<acp::Timer>(loop);
  s.retry_timer_->start_every(std::chrono::seconds(1), [&s] { s.retry_ledger(); });
  s.retry_timer_->unref();
  if (!s.unusable_) s.recover();
  return store;
}

void Store::retry_ledger() {
  if (unusable_ || !ledger_->has_pending() || !ledger_->queue_retry()) return;
  LedgerFile* ledger = ledger_.get();
  lanes_[0]->push(StoreWriter::Job{[ledger]() -> Expected<void> {
                                           ledger->run_queued_retry();
                                           return {};
                                         },
                                         nullptr, {}});
}

void Store::recover() {
  // Runs left open by a daemon that is gone end as "interrupted". A run of
  // a daemon that still runs (several may share a directory) is left alone.
  std::map<std::string, bool> dead;
  for (const auto& id : std::vector<std::string>(runs_.order())) {
    const RunRecord& r = *runs_.find(id);
    if (r.ended()) continue;
    auto known = dead.find(r.daemon);
    if (known == dead.end()) {
      bool gone = r.daemon.empty() || !acp::is_safe_id(r.daemon) || instance_dead(root_, r.daemon + ".lock");
      known = dead.emplace(r.daemon, gone).first;
    }
    if (!known->second) continue;
    std::string reason = "harnessd stopped before the run ended (daemon " + r.daemon + ")";
    LedgerEntry e;
    e.time = acp::iso_time();
    e.event = run_event::kInterrupted;
    e.runId = r.runId;
    e.sessionId = r.sessionId;
    e.name = r.name;
    e.harness = r.harness;
    e.requestId = r.requestId;
    e.daemon = instance_;
    e.extra = {{"reason", reason}};
    // Every ended run has its result.json: the recording is closed if it
    // was never finished, and made for a run that was still queued. A link
    // planted where the folder or file should be is refused, not followed.
    if (acp::is_safe_id(r.runId)) {
      std::string result_rel = run_dir(r.runId) + "/result.json";
      JsonlRead existing = read_jsonl_beneath(root_, result_rel);
      if (existing.lines.empty()) {
        json result = {{"runId", r.runId}, {"sessionId", r.sessionId}, {"state", run_event::kInterrupted},
                       {"reason", reason}, {"endedAt", e.time}};
        Expected<void, PathError> w = make_dir_beneath(root_, run_dir(r.runId));
        if (w) w = replace_file_beneath(root_, result_rel, result.dump() + "\n", false);
        if (!w) acp::log::error("cannot write " + result_rel + ": " + w.error().message);
      }
    }
    acp::log::warn("run " + r.runId + " of session " + r.sessionId + " was interrupted: " + reason);
    record(std::move(e));
  }
  // Lock files of instances that are gone.
  if (auto daemons = open_beneath(root_, "daemons", O_RDONLY | O_DIRECTORY)) {
    int dfd = daemons->get();
    if (DIR* d = ::fdopendir(::fcntl(dfd, F_DUPFD_CLOEXEC, 0))) {
      while (dirent* e = ::readdir(d)) {
        std::string file = e->d_name;
        if (file.size() < 6 || file.compare(file.size() - 5, 5, ".lock") != 0) continue;
        if (file == instance_ + ".lock") continue;
        if (instance_dead(root_, file)) ::unlinkat(dfd, file.c_str(), 0);  // a link is removed, not followed
      }
      ::closedir(d);
    }
  }
}

std::string Store::key_of(const std::string& rel) {
  // runs/<id>/... and sessions/<id>.json(l) belong to <id>'s lane.
  auto slash = rel.find('/');
  if (slash == std::string::npos) return rel;
  std::string rest = rel.substr(slash + 1);
  auto end = rest.find_first_of("/.");
  return rest.substr(0, end);
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
  queued_ += bytes;
  lane_for(key).push(StoreWriter::Job{std::move(work), std::move(done), std::move(run), bytes});
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

std::string ledger_line(const LedgerEntry& e) {
  return e.to_json().dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

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

void Store::record(LedgerEntry entry, Done done) {
  if (entry.time.empty()) entry.time = acp::iso_time();
  if (entry.daemon.empty()) entry.daemon = instance_;
  runs_.apply(entry);
  bool sync = options_.sync && is_terminal_event(entry.event);
  std::string line = ledger_line(entry);
  std::string key = entry.runId;
  LedgerFile* ledger = ledger_.get();
  // Only a failure somebody hears of marks the run: a line that waits for
  // space is not lost.
  std::string run = done ? key : "";
  std::size_t bytes = line.size();
  submit(key, [ledger, line = std::move(line), sync]() mutable { return ledger->append(std::move(line), sync, nullptr); },
         std::move(done), std::move(run), bytes);
}

void Store::end_run(std::optional<std::string> result_json, LedgerEntry end, bool failure_fails, bool sync,
                    Done done) {
  if (end.time.empty()) end.time = acp::iso_time();
  if (end.daemon.empty()) end.daemon = instance_;
  const std::string run_id = end.runId;
  // The line that ends up in the ledger, for the index once it is written.
  auto written = std::make_shared<LedgerEntry>(unusable_ && failure_fails ? store_failure(end, *unusable_) : end);
  Done apply = [this, written, done = std::move(done)](Expected<void> r) mutable {
    runs_.apply(*written);
    if (done) done(std::move(r));
  };
  if (unusable_) return submit(run_id, nullptr, std::move(apply));
  bool do_sync = sync && options_.sync;
  StoreWriter* w = &lane_for(run_id);
  LedgerFile* ledger = ledger_.get();
  int root = root_;
  submit(
      run_id,
      [w, ledger, root, written, result_json = std::move(result_json), failure_fails, do_sync]() -> Expected<void> {
        const LedgerEntry asked = *written;
        Expected<void> first;
        if (result_json && acp::is_safe_id(asked.runId)) {
          std::string rel = run_dir(asked.runId) + "/result.json";
          if (auto b = w->check_budget(result_json->size(), rel); !b) {
            first = b;
          } else {
            // A run that never started has no folder yet.
            Expected<void, PathError> made = make_dir_beneath(root, run_dir(asked.runId));
            if (made) made = create_file_beneath(root, rel, *result_json, do_sync);
            if (!made) first = path_error("create", rel, made.error());
          }
        }
        std::optional<std::string> why = w->take_run_failure(asked.runId);
        if (!why && !first) why = first.error().message;
        LedgerFile::Fallback fallback;
        if (failure_fails) {
          if (why) *written = store_failure(asked, *why);
          fallback = [written, asked](const std::string& ledger_why) {
            if (written->event != run_event::kFailed || !written->extra.contains("error") ||
                written->extra["error"].value("code", 0) != rpc_code::kStoreFailed) {
              *written = store_failure(asked, ledger_why);
            }
            return ledger_line(*written);
          };
        }
        auto appended = ledger->append(ledger_line(*written), do_sync, fallback);
        if (!first) return first;
        return appended;
      },
      std::move(apply), run_id);
}

void Store::save_session(const json& record, Done done) {
  std::string id = record.value("sessionId", "");
  if (!acp::is_safe_id(id)) {
    if (done) loop_.post([done = std::move(done), id]() mutable { done(Error{"unsafe session id " + id}); });
    return;
  }
  sessions_[id] = record;
  std::string rel = session_file(id);
  std::string content = record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  StoreWriter* w = &lane_for(id);
  int root = root_;
  std::size_t bytes = content.size();
  submit(
      id,
      [w, root, rel, content = std::move(content)]() -> Expected<void> {
        if (auto b = w->check_budget(content.size(), rel); !b) return b;
        if (auto r = replace_file_beneath(root, rel, content, false); !r) return path_error("write", rel, r.error());
        return {};
      },
      std::move(done), "", bytes);
}

const json* Store::session(const std::string& id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

void Store::make_dir(std::string rel, Done done) {
  std::string key = key_of(rel);
  int root = root_;
  std::string run = done && in_run_folder(rel) ? key : "";
  submit(
      key,
      [root, rel]() -> Expected<void> {
        if (auto r = make_dir_beneath(root, rel); !r) return path_error("create", rel, r.error());
        return {};
      },
      std::move(done), std::move(run));
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
  int root = root_;
  std::string run = done && in_run_folder(rel) ? key : "";
  std::size_t bytes = content.size();
  submit(
      key,
      [w, root, rel, content = std::move(content), do_sync, fresh]() -> Expected<void> {
        if (auto b = w->check_budget(content.size(), rel); !b) return b;
        // A fresh file: anything already there (a planted link) is refused.
        auto r = fresh ? create_file_beneath(root, rel, content, do_sync) : replace_file_beneath(root, rel, content, do_sync);
        if (!r) return path_error(fresh ? "create" : "write", rel, r.error());
        return {};
      },
      std::move(done), std::move(run), bytes);
}

void Store::append(std::string rel, std::string data, Done done) {
  std::string key = key_of(rel);
  StoreWriter* w = &lane_for(key);
  std::string run = done && in_run_folder(rel) ? key : "";
  std::size_t bytes = data.size();
  if (unusable_) {
    submit(key, nullptr, std::move(done));
    return;
  }
  queued_ += bytes;
  if (w->push_deferred(StoreWriter::Job::appending(std::move(rel), std::move(data), std::move(done), std::move(run)))) {
    // Woken once the loop has run every callback of this iteration: a
    // burst of frames read at once becomes one batch for the writer.
    to_wake_.push_back(w);
    if (to_wake_.size() == 1) {
      loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.expired()) return;
        for (StoreWriter* lane : to_wake_) lane->wake();
        to_wake_.clear();
      });
    }
  }
  check_pressure();
}

void Store::close_file(std::string rel) {
  if (unusable_) return;
  std::string key = key_of(rel);
  StoreWriter* w = &lane_for(key);
  w->push(StoreWriter::Job{[w, rel = std::move(rel)]() -> Expected<void> {
                             w->close(rel);
                             return {};
                           },
                           nullptr, {}});
}

void Store::read_file(std::string rel, ReadDone done) {
  auto content = std::make_shared<std::string>();
  std::string key = key_of(rel);
  int root = root_;
  acp::UniqueFunction<Expected<void>()> work = [root, rel, content]() -> Expected<void> {
    if (root < 0) return Error{"cannot read " + rel + ": the state directory could not be opened"};
    auto read = read_beneath(root, rel);
    if (!read) {
      if (read.error().err == ENOENT) return {};  // nothing recorded yet
      return path_error("read", rel, read.error());
    }
    *content = std::move(*read);
    return {};
  };
  Done finish = [content, done = std::move(done)](Expected<void> r) mutable {
    if (r) {
      done(std::move(*content));
    } else {
      done(r.error());
    }
  };
  if (unusable_) {
    // Reading may still work in a read-only directory.
    Expected<void> r = work();
    loop_.post([finish = std::move(finish), r]() mutable { finish(r); });
    return;
  }
  lane_for(key).push(StoreWriter::Job{std::move(work), std::move(finish), {}});
}

void Store::barrier(const std::string& key, Done done) {
  if (lanes_.empty() || unusable_) {
    loop_.post([done = std::move(done)]() mutable { done({}); });
    return;
  }
  lane_for(key).push(StoreWriter::Job{[]() -> Expected<void> { return {}; }, std::move(done), {}});
}

void Store::barrier_all(Done done) {
  if (lanes_.empty() || unusable_) {
    loop_.post([done = std::move(done)]() mutable { done({}); });
    return;
  }
  // Done when the last lane reports (completions arrive on the loop thread).
  auto left = std::make_shared<std::size_t>(lanes_.size());
  auto shared = std::make_shared<Done>(std::move(done));
  for (auto& lane : lanes_) {
    lane->push(StoreWriter::Job{[]() -> Expected<void> { return {}; }, [left, shared](Expected<void>) {
                                  if (--*left == 0) (*shared)({});
                                }, {}});
  }
}

}  // namespace harnessd::worker
