// The Store's file lanes: each StoreWriter runs its file jobs in the order
// they were asked for, on the thread that writes the state, and hands
// their results back to the loop thread; with them, the file primitives
// every lane writes with.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "acp/loop.h"
#include "acp/unique_function.h"
#include "schema/expected.h"
#include "worker/state_dir.h"

namespace harnessd::worker {

/// What a job reports to when it is done; runs on the loop thread.
using WriteDone = acp::UniqueFunction<void(Expected<void>)>;

/// "cannot <what> <rel>: <the system's words for err>".
Error io_error(const std::string& what, const std::string& rel, int err);

/// "cannot <what> <rel>: <why>"; a `why` that starts with "<rel>: " is not
/// given the path twice.
Error path_error(const std::string& what, const std::string& rel, const PathError& e);

/// Appends `data` to `fd` whole or not at all: a write that fails part-way
/// (disk full) is cut back to the size before it.
/// Appends `data` whole under an flock of the file. With `replaced`: a
/// file no longer linked (a segment compacted and renamed over) is not
/// written, and *replaced says so.
Expected<void> append_whole(int fd, std::string_view data, const std::string& rel, bool* replaced = nullptr);

/// Opens `rel` beneath `root` for appending and returns the descriptor the
/// caller now owns; a last line cut by a crash gets its newline first.
Expected<int> open_append(int root, const std::string& rel);

/// The write budget of StoreOptions::fail_after_bytes, shared by all lanes
/// (and the ledger file); safe to use from any thread.
class WriteBudget {
 public:
  /// `bytes` 0: no limit.
  explicit WriteBudget(std::size_t bytes) : limit_(bytes) {}
  /// Takes `bytes` of the budget, or fails with ENOSPC naming `rel`.
  Expected<void> take(std::size_t bytes, const std::string& rel);

 private:
  std::size_t limit_;
  std::size_t used_ = 0;
  std::mutex mu_;
};

/// Results of finished jobs, handed to the loop thread with
/// Loop::post_from_any_thread. Created and destroyed on the loop thread;
/// push() may be called from any thread. Results that arrive after it is
/// destroyed are dropped unrun, as their callbacks may refer to the Store.
class WriteCompletions {
 public:
  explicit WriteCompletions(acp::Loop& loop) : loop_(loop) {}
  WriteCompletions(const WriteCompletions&) = delete;
  WriteCompletions& operator=(const WriteCompletions&) = delete;

  using Finished = std::vector<std::pair<WriteDone, Expected<void>>>;
  /// Each `done(result)` runs on the loop thread soon after, in order, all
  /// of them from one wake-up of the loop.
  void push(Finished finished);
  void push(WriteDone done, Expected<void> result);

 private:
  acp::Loop& loop_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// One lane of files: runs its jobs in order, a batch at a time, on the
/// thread that writes the state (the database writer, see DbWriter), and
/// hands their results back to the loop in job order. Each file belongs to
/// one lane (a run's files to its run's lane, a session's files to its
/// session's lane), so that lines reach every file in the order asked for,
/// and the lane keeps the files and folders it writes open.
class StoreWriter {
 public:
  struct Job {
    Job() = default;
    Job(acp::UniqueFunction<Expected<void>()> w, WriteDone d, std::string r = {}, std::size_t b = 0)
        : work(std::move(w)), done(std::move(d)), run(std::move(r)), bytes(b) {}
    static Job appending(std::string rel, std::string data, WriteDone done, std::string run) {
      Job job(nullptr, std::move(done), std::move(run), data.size());
      job.append_to = std::move(rel);
      job.data = std::move(data);
      job.can_wait = true;
      return job;
    }

    acp::UniqueFunction<Expected<void>()> work;
    WriteDone done;
    std::string run;        // a failure marks this run as not recorded
    std::size_t bytes = 0;  // counted against the Store's queue
    /// Set instead of `work`: append `data` to the file `append_to`. Appends
    /// to one file that follow each other in the queue are written together,
    /// whole or not at all, with one lock and one write.
    std::string append_to;
    std::string data;
    /// Of an append: appends asked for with the same (not null) value go to
    /// the same file, and their dones do the same (Store::extend_lines).
    const void* same = nullptr;
    /// Of an append: run once `data` is written, given how that went; what
    /// it returns is the job's result.
    acp::UniqueFunction<Expected<void>(Expected<void> written)> then;
    /// `work` writes nothing that later appends must follow (a barrier, a
    /// hand-over to the database writer): it does not cut the appends
    /// around it in two, and may run after those queued behind it are
    /// written. Results still reach the loop in job order.
    bool pure = false;
    /// Nobody waits for this job alone (appends, the end of a run, the
    /// barrier before a run's answer, which waits for that end's commit
    /// anyway): it may wait for company with the database writer's batch
    /// (DbWriter::kLazyHold, kGroupHold).
    bool can_wait = false;
    /// The end of run `run`: its result, then its terminal entry handed to
    /// the database writer.
    bool ends_run = false;
  };

  /// `written(bytes)` is called on the writing thread after each job that
  /// counted `bytes`.
  StoreWriter(WriteCompletions& completions, int root, WriteBudget& budget,
              std::function<void(std::size_t bytes)> written);
  /// Closes the files it kept open; no batch may be running.
  ~StoreWriter();
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;

  /// Loop thread: notes that a job was queued for this lane.
  void mark_used() { used_ = true; }
  /// Loop thread: whether a job was ever queued for this lane.
  bool used() const { return used_; }

  /// The writing thread: runs `batch` (this lane's jobs, in order) and
  /// hands their results to the loop; results a job gives later
  /// (answer_later) hold back those of the jobs after it.
  void run_batch(std::vector<Job>& batch);

  // ---- run on the writing thread only (from inside a job)

  /// What gives the running job's result once it is known (call it once,
  /// from any thread). The job's own return value then only marks its run.
  /// The lane goes on with the next jobs meanwhile; their results reach the
  /// loop after this one all the same, so whoever waits for a job of this
  /// lane (a barrier) still hears of everything queued before it first.
  using Later = std::function<void(Expected<void>)>;
  Later answer_later();
  Expected<void> check_budget(std::size_t bytes, const std::string& rel) { return budget_.take(bytes, rel); }
  /// Appends to `rel`, kept open until close().
  /// fdatasync of a file appended to (opened if it is not).
  Expected<void> sync_file(const std::string& rel);
  Expected<void> append(const std::string& rel, const std::string& data);
  /// Creates the folder `rel` if it is missing, and checks what is there.
  Expected<void> make_dir(const std::string& rel);
  /// Writes the file `rel` whole: a new file (`fresh`: anything already
  /// there is refused) or a replacement through a temporary file.
  Expected<void> put_file(const std::string& rel, std::string_view content, bool sync, bool fresh);
  void close(const std::string& rel);
  /// The first write error of `run` on this lane, forgotten once asked.
  std::optional<std::string> take_run_failure(const std::string& run);

 private:
  /// Runs batch[i] (with the appends and pure jobs right after it);
  /// returns the index of the next job to run.
  std::size_t run_jobs(std::vector<Job>& batch, std::size_t i, WriteCompletions::Finished& finished);
  /// fn() as the job running (answer_later() refers to it), an exception
  /// taken as its error.
  template <class Fn>
  Expected<void> as_current(Job& job, Fn&& fn);
  void finish_job(Job& job, const Expected<void>& result, WriteCompletions::Finished& finished);
  Expected<int> fd_for(const std::string& rel);
  /// The folder `rel_dir` ("" for the state directory) opened on this lane
  /// and kept (bounded), so that the files of a run cost one openat each
  /// instead of a walk from the root and a check of every folder on it.
  Expected<int, PathError> dir_for(const std::string& rel_dir);
  int keep_dir(const std::string& rel_dir, UniqueFd fd);
  /// fn(the folder's descriptor); once more from the root when a kept
  /// folder turns out to be gone (removed or replaced since it was opened).
  template <class Fn>
  auto in_folder(const std::string& rel_dir, Fn&& fn) -> decltype(fn(0));

  /// The results of this lane's jobs, handed to the loop in job order.
  class InOrder;

  std::shared_ptr<InOrder> in_order_;  // shared with what answer_later() returned
  Job* current_ = nullptr;                          // the job running, if any
  WriteCompletions::Finished* finished_ = nullptr;  // results of the batch running
  int root_;
  WriteBudget& budget_;
  std::function<void(std::size_t)> written_;
  std::map<std::string, int> fds_;
  std::map<std::string, int> dirs_;
  std::map<std::string, std::string> failed_runs_;
  std::string last_unheard_;  // the last error of a write nobody waited for
  bool used_ = false;  // loop thread
};

}  // namespace harnessd::worker
