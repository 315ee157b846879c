// DbWriter: the one thread that writes the state: the database, and the
// files of the Store's lanes (StoreWriter). Ledger entries, session records
// and file jobs queued while the loop runs one iteration reach it with one
// wake-up; the batch's file jobs are run first, lane by lane in order, then
// its entries (with the ends of runs those file jobs handed over) are
// written in one transaction (group commit); results go back to the loop
// in one batch. Only this thread ever waits for the database's lock
// (another process writing), so the loop never does.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/job_queue.h"
#include "worker/ledger.h"
#include "worker/state_db.h"
#include "worker/store_writer.h"

namespace harnessd::worker {

class DbWriter {
 public:
  /// Given an entry and why it could not be written, the entry to keep (and write
  /// later) instead: a terminal entry becomes the store failure the host
  /// was told of.
  using Fallback = std::function<LedgerEntry(const LedgerEntry& entry, const std::string& why)>;

  struct Job {
    std::optional<LedgerEntry> entry;      // a transition to record, or
    std::optional<nlohmann::json> record;  // a session record to save, or
    /// statements of the caller's, inside the batch's transaction (run again
    /// alone if the batch fails); or none of these: a barrier.
    std::function<Expected<void>(StateDb&)> apply;
    /// For a run's terminal entry: what to write instead once a write of
    /// the run failed (an earlier one that somebody heard of, or this one).
    Fallback fallback;
    WriteDone done;  // on the loop thread, with the write's result
    /// On the writer thread, once written (or kept to wait): the result and
    /// the entry that was written or kept, which it may take.
    std::function<void(const Expected<void>&, LedgerEntry&)> on_writer;
    /// Nobody waits for this write (a run's queued or started entry; reads
    /// of this process see it before it is committed): a batch of only such
    /// jobs waits up to kLazyHold for the next batch, so that both share one
    /// commit. Anything else queued meanwhile ends that wait (it may still
    /// wait for company itself: kGroupHold).
    bool lazy = false;
    /// Or a job of the file lane `lane`, run on this thread before the
    /// batch's transaction (its `lazy` is set when it can wait).
    StoreWriter* lane = nullptr;
    std::optional<StoreWriter::Job> file;
  };

  /// How long a batch of lazy jobs waits for company.
  static constexpr std::chrono::microseconds kLazyHold{2000};
  /// How long a batch with the end of a run (its host waits for the
  /// commit) waits for company while other runs of this process are open:
  /// their ends are likely to come soon, and one commit for several ends
  /// costs about what one costs. A run that ends alone is not held.
  static constexpr std::chrono::microseconds kGroupHold{1000};
  /// A batch this large is written without waiting for more.
  static constexpr std::size_t kGroupMax = 256;
  /// After a wait that brought no other end, that many ends are not held
  /// (1, then twice as many after each such wait, up to this).
  static constexpr int kMaxGroupSkips = 64;
  /// WAL frames past which the checkpoint thread copies them into the
  /// database (SQLite's own default, which would run on the writer).
  static constexpr int kCheckpointFrames = 1000;
  /// WAL frames past which the writer checkpoints itself: in a stream of
  /// commits the thread's checkpoints never catch up with the end of the
  /// WAL, and only a checkpoint between two commits lets it start over.
  static constexpr int kInlineCheckpointFrames = 2 * kCheckpointFrames;

  /// At most this many entries wait for the database to take writes again
  /// (a full disk); past it the oldest is dropped, logged.
  static constexpr std::size_t kMaxPending = 100000;

  /// Starts the thread, which owns `db` from now on. The checkpoint thread
  /// and its connection start when the first checkpoint is due.
  DbWriter(WriteCompletions& completions, std::unique_ptr<StateDb> db);
  /// Writes what is queued (callbacks are not run), tries the waiting
  /// entries once more, stops the thread and closes the database.
  ~DbWriter();
  DbWriter(const DbWriter&) = delete;
  DbWriter& operator=(const DbWriter&) = delete;

  /// Queues `job` (any thread) and wakes the thread.
  void push(Job job) { queue_.push(std::move(job)); }
  /// Queues every job of `jobs` at once (see JobQueue::push_all); true
  /// when the caller must call wake().
  bool push_all(std::vector<Job>& jobs) { return queue_.push_all(jobs); }
  void wake() { queue_.wake(); }

  /// This thread only (from a file job): `job` joins the batch being
  /// written, in its transaction.
  void hand_over(Job job) { handed_.push_back(std::move(job)); }

 private:
  void run();
  /// Runs the file jobs of `batch`, each lane's in order, and leaves the
  /// database jobs in it, followed by those the file jobs handed over.
  void run_files(std::vector<Job>& batch);
  /// Writes `batch` (after the entries still waiting) in one transaction;
  /// if that fails, each on its own, so one bad entry fails alone.
  void write(std::vector<Job>& batch, WriteCompletions::Finished& finished);
  /// How a ledger entry of the batch is written: alone, or as the start
  /// or end of a run that starts and ends in the batch.
  enum class Pairing { kNone, kStartBeforeEnd, kEndAfterStart };
  Expected<void> write_one(Job& job, Pairing pairing = Pairing::kNone, const LedgerEntry* started = nullptr);
  /// Fills partner_: for each started entry of `batch` whose run's end
  /// follows in it, the index of that end, and the other way round.
  void pair_starts_with_ends(const std::vector<Job>& batch);
  static constexpr std::size_t kNoPartner = static_cast<std::size_t>(-1);
  std::vector<std::size_t> partner_;  // pair_starts_with_ends(), kept from batch to batch
  void finish(Job& job, Expected<void> result, WriteCompletions::Finished& finished);
  /// How long `batch` may wait for more jobs since it was taken.
  std::chrono::microseconds hold_for(const std::vector<Job>& batch) const;
  /// Waits `left` (of a hold of `hold`) for more jobs and adds them to
  /// `batch`; only a job that would end the hold early wakes the thread
  /// (see JobQueue::hold). False when nothing came.
  bool wait_for_company(std::vector<Job>& batch, std::chrono::microseconds hold, std::chrono::microseconds left);
  /// Keeps open_runs_ up to date with the entries of batch[from...];
  /// returns how many of them end a run.
  std::size_t note_runs(const std::vector<Job>& batch, std::size_t from);
  /// The checkpoint thread: a PASSIVE checkpoint each time the writer's
  /// commits have grown the WAL past kCheckpointFrames, so that neither a
  /// commit nor the host's answer after it waits for one (a checkpoint
  /// syncs the WAL and the database file). It opens its connection first;
  /// without one, checkpoints stay on the writer.
  void checkpoints();
  void keep_pending(LedgerEntry entry);
  Expected<void> write_pending();

  WriteCompletions& completions_;
  std::unique_ptr<StateDb> db_;
  std::deque<LedgerEntry> pending_;  // writer thread only
  std::vector<Job> handed_;          // writer thread only: see hand_over()
  /// Writer thread only: each lane's file jobs of the batch being written,
  /// lanes in the order they first appear (kept, so that batches reuse
  /// their room).
  std::vector<std::pair<StoreWriter*, std::vector<StoreWriter::Job>>> lanes_;
  /// Runs with an entry that could not be written and somebody heard of
  /// it: their terminal entry becomes the store failure.
  std::map<std::string, std::string> failed_runs_;

  /// Runs with an entry written here and no end yet (writer thread only).
  std::unordered_set<std::string> open_runs_;
  /// During a hold for the ends of other runs: those still open, kept by
  /// the pushing threads under the queue's lock (see wait_for_company).
  std::unordered_set<std::string> waited_runs_;

  // Writer thread only; logged when the writer stops.
  std::size_t commits_ = 0;
  std::size_t jobs_written_ = 0;
  std::size_t group_waits_ = 0;  // batches with an end held for company (kGroupHold)
  int group_skips_ = 0;          // ends still to commit without a wait
  int group_backoff_ = 1;        // skips after the next fruitless wait
  std::size_t file_jobs_ = 0;    // jobs run for the file lanes

  JobQueue<Job> queue_;
  std::thread thread_;

  std::unique_ptr<Database> checkpoint_db_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;  // guarded by checkpoint_mu_
  bool checkpoint_stop_ = false;    // guarded by checkpoint_mu_
  std::size_t checkpoints_done_ = 0;  // checkpoint thread only, read once it stopped
  std::size_t inline_checkpoints_ = 0;  // writer thread only
  int asked_at_ = 0;  // writer thread only: WAL frames when a checkpoint was last asked for
  std::thread checkpoint_thread_;  // started on the writer thread, joined after it
  std::atomic<bool> checkpoint_unavailable_{false};  // its connection could not be opened
};

}  // namespace harnessd::worker
