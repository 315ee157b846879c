// The writer lanes and their file primitives. Everything here but the
// completions' callbacks runs on writer threads; paths are built by
// the Store from checked ids and opened beneath its directory.
#include "worker/store_writer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#include "acp/files.h"
#include "acp/log.h"

namespace harnessd::worker {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// A relative path cut before its last name: "a/b/c" is {"a/b", "c"}, "c"
// is {"", "c"}. Named members, not a pair: lambdas below capture them.
struct Split {
  std::string dir;
  std::string leaf;
  // The last name is one that can be created: not empty, "." or "..".
  bool plain() const { return !leaf.empty() && leaf != "." && leaf != ".."; }
};

Split split_leaf(const std::string& rel) {
  std::size_t slash = rel.rfind('/');
  if (slash == std::string::npos) return {std::string(), rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

}  // namespace

Error io_error(const std::string& what, const std::string& rel, int err) {
  return Error{"cannot " + what + " " + rel + ": " + errno_text(err)};
}

Error path_error(const std::string& what, const std::string& rel, const PathError& e) {
  if (e.message.rfind(rel + ": ", 0) == 0) return Error{"cannot " + what + " " + e.message};
  return Error{"cannot " + what + " " + rel + ": " + e.message};
}

// No half line stays for the next line to be glued onto. flock keeps other
// daemons sharing the file out of the window between the size and the
// truncate.
Expected<void> append_whole(int fd, std::string_view data, const std::string& rel, bool* replaced) {
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) return io_error("lock", rel, errno);
  }
  struct stat st {};
  int err = ::fstat(fd, &st) != 0 ? errno : 0;
  if (!err && st.st_nlink == 0 && replaced) {
    // Compacted meanwhile (see segment.h): the path names a new file now.
    ::flock(fd, LOCK_UN);
    *replaced = true;
    return {};
  }
  if (!err) {
    err = acp::write_all(fd, data);
    if (err && ::ftruncate(fd, st.st_size) != 0) {
      acp::log::error("cannot cut " + rel + " back after a failed write: " + errno_text(errno));
    }
  }
  ::flock(fd, LOCK_UN);
  if (err) return io_error("write", rel, err);
  return {};
}

// A file opened for appends, its last line completed if a crash cut it.
Expected<int> ready_to_append(UniqueFd opened, const std::string& rel) {
  int fd = opened.get();
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    char last = '\n';
    if (::pread(fd, &last, 1, st.st_size - 1) != 1) last = '\n';
    if (last != '\n') {
      acp::log::warn(rel + ": the last line was cut short (a crash?); it is left alone and skipped when read");
      if (auto w = append_whole(fd, "\n", rel); !w) return w.error();
    }
  }
  return opened.release();
}

Expected<int> open_append(int root, const std::string& rel) {
  auto opened = open_beneath(root, rel, O_RDWR | O_CREAT | O_APPEND, 0600);
  if (!opened) return path_error("open", rel, opened.error());
  return ready_to_append(std::move(*opened), rel);
}

// ---------------------------------------------------------------- budget

Expected<void> WriteBudget::take(std::size_t bytes, const std::string& rel) {
  if (!limit_) return {};
  std::lock_guard<std::mutex> lock(mu_);
  if (used_ + bytes > limit_) return io_error("write", rel, ENOSPC);
  used_ += bytes;
  return {};
}

// ---------------------------------------------------------------- completions

void WriteCompletions::push(Finished finished) {
  // Completions must not keep the loop alive on their own; the daemon
  // waits for the store explicitly (barrier_all) before it exits.
  loop_.post_from_any_thread([alive = std::weak_ptr<bool>(alive_), finished = std::move(finished)]() mutable {
    for (auto& [done, result] : finished) {
      if (alive.expired()) return;  // a callback destroyed the Store
      try {
        done(std::move(result));
      } catch (const std::exception& e) {
        acp::log::error(std::string("store callback failed: ") + e.what());
      }
    }
  });
}

void WriteCompletions::push(WriteDone done, Expected<void> result) {
  Finished one;
  one.emplace_back(std::move(done), std::move(result));
  push(std::move(one));
}

// ---------------------------------------------------------------- one lane

// Results wait here only behind one that a job gives later; otherwise
// they go straight to the loop. Any thread: the lane adds, whoever holds a
// Later gives.
class StoreWriter::InOrder {
 public:
  explicit InOrder(WriteCompletions& completions) : completions_(completions) {}

  void add(WriteCompletions::Finished finished) {
    if (finished.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_.empty()) {
      completions_.push(std::move(finished));
      return;
    }
    for (auto& [done, result] : finished) waiting_.push_back({std::move(done), std::move(result)});
  }

  std::uint64_t later(WriteDone done) {
    std::lock_guard<std::mutex> lock(mu_);
    waiting_.push_back({std::move(done), std::nullopt});
    return first_ + waiting_.size() - 1;
  }

  void give(std::uint64_t ticket, Expected<void> result) {
    std::lock_guard<std::mutex> lock(mu_);
    waiting_[ticket - first_].result = std::move(result);
    WriteCompletions::Finished ready;
    while (!waiting_.empty() && waiting_.front().result) {
      ready.emplace_back(std::move(waiting_.front().done), std::move(*waiting_.front().result));
      waiting_.pop_front();
      ++first_;
    }
    // Under the lock: results of this lane reach the loop's queue in order.
    if (!ready.empty()) completions_.push(std::move(ready));
  }

 private:
  struct Slot {
    WriteDone done;
    std::optional<Expected<void>> result;  // none yet: given later
  };
  WriteCompletions& completions_;
  std::mutex mu_;
  std::deque<Slot> waiting_;
  std::uint64_t first_ = 0;  // the ticket of waiting_.front()
};

StoreWriter::StoreWriter(WriteCompletions& completions, int root, WriteBudget& budget,
                         std::function<void(std::size_t bytes)> written)
    : in_order_(std::make_shared<InOrder>(completions)),
      root_(root),
      budget_(budget),
      written_(std::move(written)) {}

StoreWriter::Later StoreWriter::answer_later() {
  if (!current_ || !current_->done) return [](Expected<void>) {};
  // What finished before this job reaches the loop before it.
  in_order_->add(std::move(*finished_));
  finished_->clear();
  std::uint64_t ticket = in_order_->later(std::move(current_->done));
  current_->done = nullptr;
  return [in_order = in_order_, ticket](Expected<void> result) { in_order->give(ticket, std::move(result)); };
}

StoreWriter::~StoreWriter() {
  for (auto& [rel, fd] : fds_) ::close(fd);
  for (auto& [rel, fd] : dirs_) ::close(fd);
}

void StoreWriter::run_batch(std::vector<Job>& batch) {
  WriteCompletions::Finished finished;
  finished_ = &finished;
  for (std::size_t i = 0; i < batch.size();) i = run_jobs(batch, i, finished);
  finished_ = nullptr;
  batch.clear();
  in_order_->add(std::move(finished));
}

template <class Fn>
Expected<void> StoreWriter::as_current(Job& job, Fn&& fn) {
  Expected<void> result;
  current_ = &job;
  try {
    result = fn();
  } catch (const std::exception& e) {
    result = Error{e.what()};
  }
  current_ = nullptr;
  return result;
}

std::size_t StoreWriter::run_jobs(std::vector<Job>& batch, std::size_t i, WriteCompletions::Finished& finished) {
  const auto joins = [](const Job& job) { return !job.append_to.empty() || job.pure; };
  Job& first = batch[i];
  if (!joins(first)) {
    finish_job(first, as_current(first, [&] { return first.work(); }), finished);
    return i + 1;
  }
  // The appends up to the next job that writes on its own, file by file:
  // the lines of one file keep their order, and each file takes one write
  // (bounded, so a flood is still written in pieces that the disk takes at
  // once). A run's events and its session's transcript interleave line by
  // line in a stream of updates, and every turn adds a barrier and a
  // run's end between them; grouping them makes two writes of what would
  // be thousands.
  constexpr std::size_t kMaxCoalesced = 1u << 20;
  std::size_t end = i;
  while (end < batch.size() && joins(batch[end])) ++end;
  // The appends of each file, in order; files in the order they first appear.
  std::vector<std::vector<std::size_t>> by_file;
  std::map<std::string_view, std::size_t> file_at;
  for (std::size_t k = i; k < end; ++k) {
    if (batch[k].append_to.empty()) continue;
    auto [it, added] = file_at.try_emplace(batch[k].append_to, by_file.size());
    if (added) by_file.emplace_back();
    by_file[it->second].push_back(k);
  }
  std::vector<Expected<void>> results(end - i);
  std::string data;
  for (const auto& jobs : by_file) {
    const std::string& file = batch[jobs.front()].append_to;
    for (std::size_t from = 0; from < jobs.size();) {
      std::size_t to = from + 1;
      std::size_t size = batch[jobs[from]].data.size();
      while (to < jobs.size() && size + batch[jobs[to]].data.size() <= kMaxCoalesced) size += batch[jobs[to++]].data.size();
      Expected<void> result;
      if (to == from + 1) {
        result = append(file, batch[jobs[from]].data);
      } else {
        data.clear();
        data.reserve(size);
        for (std::size_t m = from; m < to; ++m) data += batch[jobs[m]].data;
        result = append(file, data);
      }
      for (std::size_t m = from; m < to; ++m) results[jobs[m] - i] = result;
      from = to;
    }
  }
  for (std::size_t k = i; k < end; ++k) {
    Job& job = batch[k];
    Expected<void> result = std::move(results[k - i]);
    if (job.pure) {
      result = as_current(job, [&] { return job.work(); });
    } else if (job.then) {
      result = as_current(job, [&] { return job.then(std::move(result)); });
    }
    finish_job(job, result, finished);
  }
  return end;
}

void StoreWriter::finish_job(Job& job, const Expected<void>& result, WriteCompletions::Finished& finished) {
  if (!result && !job.run.empty()) {
    if (failed_runs_.size() >= 4096) failed_runs_.clear();  // bounded; a run's end normally takes its entry
    failed_runs_.try_emplace(job.run, result.error().message);
  }
  if (job.done) {
    finished.emplace_back(std::move(job.done), result);
  } else if (!result && result.error().message != last_unheard_) {
    // Nobody waits for this write (a transcript line): say it once.
    last_unheard_ = result.error().message;
    acp::log::error(last_unheard_);
  }
  if (job.bytes) written_(job.bytes);
}

Expected<int> StoreWriter::fd_for(const std::string& rel) {
  auto it = fds_.find(rel);
  if (it != fds_.end()) return it->second;
  if (fds_.size() >= 256) {  // bounded: reopen on demand
    for (auto& [r, fd] : fds_) ::close(fd);
    fds_.clear();
  }
  const Split at = split_leaf(rel);
  auto opened =
      in_folder(at.dir, [&](int parent) { return open_in(parent, at.leaf, rel, O_RDWR | O_CREAT | O_APPEND, 0600); });
  if (!opened) return path_error("open", rel, opened.error());
  auto fd = ready_to_append(std::move(*opened), rel);
  if (!fd) return fd.error();
  fds_.emplace(rel, *fd);
  return *fd;
}

template <class Fn>
auto StoreWriter::in_folder(const std::string& rel_dir, Fn&& fn) -> decltype(fn(0)) {
  for (int attempt = 0;; ++attempt) {
    auto parent = dir_for(rel_dir);
    if (!parent) return parent.error();
    auto r = fn(*parent);
    // Creating in a folder that was removed answers ENOENT. Walked again
    // from the root, the folder is found if it is back, or what is there
    // now is named (a link planted in its place is refused as such).
    if (r || attempt == 1 || rel_dir.empty() || r.error().err != ENOENT) return r;
    for (auto& [d, fd] : dirs_) ::close(fd);
    dirs_.clear();
  }
}

Expected<int, PathError> StoreWriter::dir_for(const std::string& rel_dir) {
  if (rel_dir.empty()) return root_;
  if (auto it = dirs_.find(rel_dir); it != dirs_.end()) return it->second;
  const Split at = split_leaf(rel_dir);
  if (!at.plain()) return PathError{EINVAL, rel_dir + " is not a plain relative path"};
  auto parent = dir_for(at.dir);
  if (!parent) return parent.error();
  // Folders on the way are checked, never changed.
  auto opened = open_in(*parent, at.leaf, rel_dir, O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
  if (!opened) return opened.error();
  return keep_dir(rel_dir, std::move(*opened));
}

int StoreWriter::keep_dir(const std::string& rel_dir, UniqueFd fd) {
  constexpr std::size_t kMaxDirs = 32;  // a few live runs' folders per lane
  if (auto it = dirs_.find(rel_dir); it != dirs_.end()) {
    ::close(it->second);
    dirs_.erase(it);
  }
  if (dirs_.size() >= kMaxDirs) {
    for (auto& [r, open] : dirs_) ::close(open);
    dirs_.clear();
  }
  int kept = fd.release();
  dirs_.emplace(rel_dir, kept);
  return kept;
}

Expected<void> StoreWriter::make_dir(const std::string& rel) {
  const Split at = split_leaf(rel);
  if (!at.plain()) return Error{"cannot create " + rel + ": not a plain relative path"};
  auto made = in_folder(at.dir, [&](int parent) { return make_dir_in(parent, at.leaf, rel); });
  if (!made) return path_error("create", rel, made.error());
  keep_dir(rel, std::move(*made));
  return {};
}

Expected<void> StoreWriter::put_file(const std::string& rel, std::string_view content, bool sync, bool fresh) {
  if (auto b = check_budget(content.size(), rel); !b) return b;
  const char* what = fresh ? "create" : "write";
  const Split at = split_leaf(rel);
  if (!at.plain()) return Error{std::string("cannot ") + what + " " + rel + ": not a plain relative path"};
  // A fresh file: anything already there (a planted link) is refused.
  auto r = in_folder(at.dir, [&](int parent) {
    return fresh ? create_file_in(parent, at.leaf, rel, content, sync)
                 : replace_file_in(parent, at.leaf, rel, content, sync);
  });
  if (!r) return path_error(what, rel, r.error());
  return {};
}

Expected<void> StoreWriter::append(const std::string& rel, const std::string& data) {
  if (auto b = check_budget(data.size(), rel); !b) return b;
  auto fd = fd_for(rel);
  if (!fd) return fd.error();
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool replaced = false;
    auto w = append_whole(*fd, data, rel, &replaced);
    if (!replaced) return w;
    close(rel);
    fd = fd_for(rel);
    if (!fd) return fd.error();
  }
  return Error{"cannot write " + rel + ": it was replaced three times while being written"};
}

Expected<void> StoreWriter::sync_file(const std::string& rel) {
  auto fd = fd_for(rel);
  if (!fd) return fd.error();
  if (::fdatasync(*fd) != 0) return io_error("sync", rel, errno);
  return {};
}

void StoreWriter::close(const std::string& rel) {
  auto it = fds_.find(rel);
  if (it == fds_.end()) return;
  ::close(it->second);
  fds_.erase(it);
}

std::optional<std::string> StoreWriter::take_run_failure(const std::string& run) {
  auto it = failed_runs_.find(run);
  if (it == failed_runs_.end()) return std::nullopt;
  std::string why = std::move(it->second);
  failed_runs_.erase(it);
  return why;
}

}  // namespace harnessd::worker
