// The state directory. Start-up work (recovery included) is synchronous;
// everything after runs on one writer thread whose results come back to the
// loop through a uv_async handle. Paths are built only from checked ids.
#include "worker/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "acp/log.h"
#include "queue/ids.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

std::string errno_text(int err) { return std::strerror(err); }

Error io_error(const std::string& what, const std::string& rel, int err) {
  return Error{"cannot " + what + " " + rel + ": " + errno_text(err)};
}

Expected<void> write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{errno_text(errno)};
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

// mkdir -p with 0700 for the directories it creates.
bool make_dirs(const std::string& path) {
  std::string partial;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) return false;
  }
  return true;
}

Expected<void> write_file_now(const std::string& full, const std::string& rel, std::string_view content, bool sync) {
  std::string tmp = full + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("create", rel, errno);
  auto w = write_all(fd, content);
  if (w && sync && ::fdatasync(fd) != 0) w = Error{errno_text(errno)};
  ::close(fd);
  if (!w) {
    ::unlink(tmp.c_str());
    return Error{"cannot write " + rel + ": " + w.error().message};
  }
  if (::rename(tmp.c_str(), full.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return io_error("replace", rel, err);
  }
  return {};
}

// Opens for appending; a last line cut by a crash gets its newline first.
Expected<int> open_append(const std::string& full, const std::string& rel) {
  int fd = ::open(full.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("open", rel, errno);
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    int rfd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
    char last = '\n';
    if (rfd >= 0) {
      if (::pread(rfd, &last, 1, st.st_size - 1) != 1) last = '\n';
      ::close(rfd);
    }
    if (last != '\n') {
      log::warn(rel + ": the last line was cut short (a crash?); it is left alone and skipped when read");
      if (auto w = write_all(fd, "\n"); !w) {
        ::close(fd);
        return Error{"cannot write " + rel + ": " + w.error().message};
      }
    }
  }
  return fd;
}

// True when the daemon instance that owns `lock` is gone: its lock file is
// missing or nobody holds the lock (flock dies with its process, kill -9
// included).
bool instance_dead(const std::string& lock) {
  int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return true;
  bool dead = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  return dead;
}

}  // namespace

std::string default_state_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg == '/') return std::string(xdg) + "/harnessd";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.local/state/harnessd";
}

bool is_safe_id(const std::string& id) {
  if (id.empty() || id.size() > 100) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

// ---------------------------------------------------------------- writer threads

// Results of finished jobs, handed to the loop thread through one uv_async
// handle shared by all lanes.
struct Store::Completions {
  explicit Completions(Loop& loop) {
    auto* a = new uv_async_t;
    uv_async_init(loop.get(), a, &Completions::on_async);
    a->data = this;
    async.reset(a);
    // Completions must not keep the loop alive on their own; the daemon
    // waits for the store explicitly (barrier_all) before it exits.
    uv_unref(reinterpret_cast<uv_handle_t*>(a));
  }

  void push(Done done, Expected<void> result) {
    std::lock_guard<std::mutex> lock(mu);
    ready.emplace_back(std::move(done), std::move(result));
    uv_async_send(async.get());
  }

  static void on_async(uv_async_t* a) noexcept {
    auto* self = static_cast<Completions*>(a->data);
    if (!self) return;
    std::vector<std::pair<Done, Expected<void>>> batch;
    {
      std::lock_guard<std::mutex> lock(self->mu);
      batch.swap(self->ready);
    }
    for (auto& [done, result] : batch) {
      try {
        done(std::move(result));
      } catch (const std::exception& e) {
        log::error(std::string("store callback failed: ") + e.what());
      }
    }
  }

  std::mutex mu;
  std::vector<std::pair<Done, Expected<void>>> ready;
  UvHandle<uv_async_t> async;
};

// One writer thread: runs its jobs in order. Each file belongs to one lane
// (a run's files and ledger lines to its run's lane, a session's files to
// its session's lane), so per-file order holds while a slow filesystem's
// latency overlaps across lanes.
struct Store::Writer {
  struct Job {
    UniqueFunction<Expected<void>()> work;
    Done done;
    std::size_t bytes = 0;  // counted in Store::queued_
  };

  Writer(Store& owner, Completions& done_channel, std::string dir_path, StoreOptions opts, std::size_t* budget_used,
         std::mutex* budget_mu)
      : store(owner),
        completions(done_channel),
        dir(std::move(dir_path)),
        options(opts),
        used(budget_used),
        used_mu(budget_mu) {
    thread = std::thread([this] { run(); });
  }

  ~Writer() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_one();
    thread.join();
    for (auto& [rel, fd] : fds) ::close(fd);
  }

  void push(Job job) {
    {
      std::lock_guard<std::mutex> lock(mu);
      jobs.push_back(std::move(job));
    }
    cv.notify_one();
  }

  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (jobs.empty()) return;  // stopping, and everything done
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      Expected<void> result;
      try {
        result = job.work();
      } catch (const std::exception& e) {
        result = Error{e.what()};
      }
      if (job.done) completions.push(std::move(job.done), std::move(result));
      if (job.bytes) store.written(job.bytes);
    }
  }

  // ---- run on the writer thread only
  Expected<void> check_budget(std::size_t bytes, const std::string& rel) {
    if (!options.fail_after_bytes) return {};
    std::lock_guard<std::mutex> lock(*used_mu);
    if (*used + bytes > options.fail_after_bytes) return io_error("write", rel, ENOSPC);
    *used += bytes;
    return {};
  }

  Expected<int> fd_for(const std::string& rel) {
    auto it = fds.find(rel);
    if (it != fds.end()) return it->second;
    if (fds.size() >= 256) {  // bounded: reopen on demand
      for (auto& [r, fd] : fds) ::close(fd);
      fds.clear();
    }
    auto fd = open_append(dir + "/" + rel, rel);
    if (!fd) return fd.error();
    fds.emplace(rel, *fd);
    return *fd;
  }

  Expected<void> append(const std::string& rel, const std::string& data, bool sync = false) {
    if (auto b = check_budget(data.size(), rel); !b) return b;
    auto fd = fd_for(rel);
    if (!fd) return fd.error();
    if (auto w = write_all(*fd, data); !w) return Error{"cannot write " + rel + ": " + w.error().message};
    if (sync && ::fdatasync(*fd) != 0) return io_error("sync", rel, errno);
    return {};
  }

  void close(const std::string& rel) {
    auto it = fds.find(rel);
    if (it == fds.end()) return;
    ::close(it->second);
    fds.erase(it);
  }

  Store& store;
  Completions& completions;
  std::string dir;
  StoreOptions options;
  std::size_t* used;
  std::mutex* used_mu;
  std::map<std::string, int> fds;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;
  bool stopping = false;
  std::thread thread;
};

// ---------------------------------------------------------------- the store

Store::Store(Loop& loop, std::string dir, StoreOptions options)
    : loop_(loop), dir_(std::move(dir)), options_(options), instance_(queue::make_id("d_")) {}

Store::~Store() {
  lanes_.clear();
  completions_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    ::unlink(path("daemons/" + instance_ + ".lock").c_str());
  }
}

std::unique_ptr<Store> Store::open(Loop& loop, std::string dir, StoreOptions options) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty() || dir.front() != '/') dir = default_state_dir();  // never relative to the cwd
  std::unique_ptr<Store> store(new Store(loop, std::move(dir), options));
  Store& s = *store;
  if (!make_dirs(s.dir_) || !make_dirs(s.path("runs")) || !make_dirs(s.path("sessions")) ||
      !make_dirs(s.path("daemons"))) {
    s.unusable_ = "cannot create the state directory " + s.dir_ + ": " + errno_text(errno);
  } else {
    std::string lock = s.path("daemons/" + s.instance_ + ".lock");
    s.lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s.lock_fd_ < 0 || ::flock(s.lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      s.unusable_ = "cannot write in the state directory " + s.dir_ + ": " + errno_text(errno);
    } else {
      std::string pid = std::to_string(::getpid()) + "\n";
      (void)write_all(s.lock_fd_, pid);
    }
  }
  if (s.unusable_) log::error(*s.unusable_ + "; runs will fail until it is fixed");

  // The ledger, all lifetimes.
  JsonlRead ledger = read_jsonl(s.path("ledger.jsonl"));
  for (std::size_t n : ledger.bad_lines) {
    log::warn("ledger.jsonl: line " + std::to_string(n) + " is not JSON (cut by a crash?); skipped");
  }
  for (const auto& line : ledger.lines) {
    if (auto entry = LedgerEntry::from_json(line)) s.runs_.apply(*entry);
  }
  // Session records.
  if (DIR* d = ::opendir(s.path("sessions").c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string file = e->d_name;
      if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
      std::string id = file.substr(0, file.size() - 5);
      if (!is_safe_id(id)) continue;
      JsonlRead rec = read_jsonl(s.path("sessions/" + file));
      if (rec.lines.size() != 1 || !rec.lines[0].is_object()) {
        log::warn("sessions/" + file + " is not a session record; skipped");
        continue;
      }
      s.sessions_[id] = rec.lines[0];
    }
    ::closedir(d);
  }
  // A ledger line cut by a crash gets its newline now, before several
  // lanes append to the file.
  if (ledger.cut && !s.unusable_) {
    log::warn("ledger.jsonl: the last line was cut short (a crash?); it is left alone and skipped when read");
    int fd = ::open(s.path("ledger.jsonl").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
      (void)write_all(fd, "\n");
      ::close(fd);
    }
  }
  s.completions_ = std::make_unique<Completions>(loop);
  for (int i = 0; i < kLanes; ++i) {
    s.lanes_.push_back(std::make_unique<Writer>(s, *s.completions_, s.dir_, options, &s.budget_used_, &s.budget_mu_));
  }
  if (!s.unusable_) s.recover();
  return store;
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
      bool gone = r.daemon.empty() || !is_safe_id(r.daemon) || instance_dead(path("daemons/" + r.daemon + ".lock"));
      known = dead.emplace(r.daemon, gone).first;
    }
    if (!known->second) continue;
    std::string reason = "harnessd stopped before the run ended (daemon " + r.daemon + ")";
    LedgerEntry e;
    e.time = iso_time();
    e.event = run_event::kInterrupted;
    e.runId = r.runId;
    e.sessionId = r.sessionId;
    e.name = r.name;
    e.harness = r.harness;
    e.requestId = r.requestId;
    e.daemon = instance_;
    e.extra = {{"reason", reason}};
    // Close the recording if the run had one and it was never finished.
    struct stat st {};
    if (is_safe_id(r.runId) && ::stat(path(run_dir(r.runId)).c_str(), &st) == 0 &&
        read_jsonl(path(run_dir(r.runId) + "/result.json")).lines.empty()) {
      json result = {{"runId", r.runId}, {"sessionId", r.sessionId}, {"state", run_event::kInterrupted},
                     {"reason", reason}, {"endedAt", e.time}};
      auto w = write_file_now(path(run_dir(r.runId) + "/result.json"), run_dir(r.runId) + "/result.json",
                              result.dump() + "\n", false);
      if (!w) log::error(w.error().message);
    }
    log::warn("run " + r.runId + " of session " + r.sessionId + " was interrupted: " + reason);
    record(std::move(e));
  }
  // Lock files of instances that are gone.
  if (DIR* d = ::opendir(path("daemons").c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string file = e->d_name;
      if (file.size() < 6 || file.compare(file.size() - 5, 5, ".lock") != 0) continue;
      if (file == instance_ + ".lock") continue;
      if (instance_dead(path("daemons/" + file))) ::unlink(path("daemons/" + file).c_str());
    }
    ::closedir(d);
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

Store::Writer& Store::lane_for(const std::string& key) {
  return *lanes_[std::hash<std::string>{}(key) % lanes_.size()];
}

void Store::submit(const std::string& key, UniqueFunction<Expected<void>()> work, Done done, std::size_t bytes) {
  if (unusable_) {
    // Fail on the loop, never inside the caller's stack.
    std::string why = *unusable_;
    if (done) loop_.post([done = std::move(done), why]() mutable { done(Error{why}); });
    return;
  }
  queued_ += bytes;
  lane_for(key).push(Writer::Job{std::move(work), std::move(done), bytes});
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

void Store::record(LedgerEntry entry, Done done) {
  if (entry.time.empty()) entry.time = iso_time();
  if (entry.daemon.empty()) entry.daemon = instance_;
  runs_.apply(entry);
  bool sync = options_.sync && is_terminal_event(entry.event);
  std::string line = entry.to_json().dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::string key = entry.runId;
  Writer* w = &lane_for(key);
  std::size_t bytes = line.size();
  submit(
      key, [w, line = std::move(line), sync]() { return w->append("ledger.jsonl", line, sync); }, std::move(done),
      bytes);
}

void Store::save_session(const json& record, Done done) {
  std::string id = record.value("sessionId", "");
  if (!is_safe_id(id)) {
    if (done) loop_.post([done = std::move(done), id]() mutable { done(Error{"unsafe session id " + id}); });
    return;
  }
  sessions_[id] = record;
  std::string rel = session_file(id);
  std::string full = path(rel);
  std::string content = record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  Writer* w = &lane_for(id);
  std::size_t bytes = content.size();
  submit(
      id,
      [w, full, rel, content = std::move(content)]() -> Expected<void> {
        if (auto b = w->check_budget(content.size(), rel); !b) return b;
        return write_file_now(full, rel, content, false);
      },
      std::move(done), bytes);
}

const json* Store::session(const std::string& id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

void Store::make_dir(std::string rel, Done done) {
  std::string full = path(rel);
  std::string key = key_of(rel);
  submit(
      key,
      [full, rel]() -> Expected<void> {
        if (::mkdir(full.c_str(), 0700) != 0 && errno != EEXIST) return io_error("create", rel, errno);
        return {};
      },
      std::move(done));
}

void Store::write_file(std::string rel, std::string content, Done done, bool sync) {
  std::string full = path(rel);
  std::string key = key_of(rel);
  Writer* w = &lane_for(key);
  bool do_sync = sync && options_.sync;
  std::size_t bytes = content.size();
  submit(
      key,
      [w, full, rel, content = std::move(content), do_sync]() -> Expected<void> {
        if (auto b = w->check_budget(content.size(), rel); !b) return b;
        return write_file_now(full, rel, content, do_sync);
      },
      std::move(done), bytes);
}

void Store::create_file(std::string rel, std::string content, Done done, bool sync) {
  std::string full = path(rel);
  std::string key = key_of(rel);
  Writer* w = &lane_for(key);
  bool do_sync = sync && options_.sync;
  std::size_t bytes = content.size();
  submit(
      key,
      [w, full, rel, content = std::move(content), do_sync]() -> Expected<void> {
        if (auto b = w->check_budget(content.size(), rel); !b) return b;
        int fd = ::open(full.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) return io_error("create", rel, errno);
        auto r = write_all(fd, content);
        if (r && do_sync && ::fdatasync(fd) != 0) r = Error{errno_text(errno)};
        ::close(fd);
        if (!r) return Error{"cannot write " + rel + ": " + r.error().message};
        return {};
      },
      std::move(done), bytes);
}

void Store::append(std::string rel, std::string data, Done done) {
  std::string key = key_of(rel);
  Writer* w = &lane_for(key);
  std::size_t bytes = data.size();
  submit(
      key, [w, rel = std::move(rel), data = std::move(data)]() { return w->append(rel, data); }, std::move(done),
      bytes);
}

void Store::close_file(std::string rel) {
  if (unusable_) return;
  std::string key = key_of(rel);
  Writer* w = &lane_for(key);
  w->push(Writer::Job{[w, rel = std::move(rel)]() -> Expected<void> {
                        w->close(rel);
                        return {};
                      },
                      nullptr});
}

void Store::read_file(std::string rel, ReadDone done) {
  auto content = std::make_shared<std::string>();
  std::string full = path(rel);
  std::string key = key_of(rel);
  UniqueFunction<Expected<void>()> work = [full, rel, content]() -> Expected<void> {
    int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return {};  // nothing recorded yet
      return io_error("read", rel, errno);
    }
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) content->append(buf, static_cast<std::size_t>(n));
    ::close(fd);
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
  lane_for(key).push(Writer::Job{std::move(work), std::move(finish)});
}

void Store::barrier(const std::string& key, Done done) {
  if (lanes_.empty() || unusable_) {
    loop_.post([done = std::move(done)]() mutable { done({}); });
    return;
  }
  lane_for(key).push(Writer::Job{[]() -> Expected<void> { return {}; }, std::move(done)});
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
    lane->push(Writer::Job{[]() -> Expected<void> { return {}; }, [left, shared](Expected<void>) {
                             if (--*left == 0) (*shared)({});
                           }});
  }
}

}  // namespace harnessd::worker
