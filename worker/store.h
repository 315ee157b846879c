// Store: harnessd's state directory (ledger, session records and
// transcripts, run recordings). Opening it (recovery included) is done once
// at start-up, before the loop runs; after that writes happen on a few
// writer threads ("lanes": all writes to one file go through one lane, in
// the order they were asked for) and report back on the loop thread, so
// the event loop never waits on the disk.
#pragma once

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "worker/session_record.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "schema/expected.h"
#include "worker/config.h"
#include "worker/db_writer.h"
#include "worker/ledger.h"
#include "worker/state_db.h"
#include "worker/transcript.h"

namespace harnessd::worker {

class StoreWriter;
class WriteBudget;
class WriteCompletions;

struct StoreOptions {
  /// fdatasync result.json, and commit the state database with
  /// synchronous = FULL (survives power loss, costs milliseconds per run).
  /// Off by default: what was committed survives any crash of harnessd
  /// itself.
  bool sync = false;
  /// For tests of a store write error without a small filesystem: every
  /// write fails with ENOSPC once this many bytes were written (0: never).
  /// A full disk and its return are tested on a real tmpfs.
  std::size_t fail_after_bytes = 0;
  /// Applied in the background after start (at most once an hour across
  /// the processes sharing the directory); none by default.
  Retention retention{0, 0};
};

/// True while the daemon instance `instance` runs on the state directory
/// open at `root` (it holds daemons/<instance>.lock).
bool daemon_instance_alive(int root, const std::string& instance);

class Store {
 public:
  using Done = acp::UniqueFunction<void(Expected<void>)>;
  using ReadDone = acp::UniqueFunction<void(Expected<std::string>)>;

  /// Creates the directory if needed (0700), opens it (never through a
  /// link; it and its folders must be this user's, and are tightened if
  /// others can write to them), takes this daemon's instance lock, opens
  /// the state database (importing the ledger and session records of an
  /// earlier, file-only state directory once), and ends every run left open
  /// by a daemon that is no longer running with "interrupted", in one
  /// transaction. Nothing of the history is read into memory. Problems reading
  /// individual lines are logged, not fatal; an unusable directory (another
  /// user's, a link, not writable) is an error only for writes, so the
  /// daemon can still serve (and fail runs with a clear error). Every later
  /// file operation is relative to the directory's descriptor and follows
  /// no link.
  static std::unique_ptr<Store> open(acp::Loop& loop, std::string dir, StoreOptions options = {});
  /// Finishes queued writes (their callbacks do not run) and stops the thread.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& dir() const { return dir_; }
  /// The directory open() uses for `dir`: without trailing slashes, and
  /// the default one for an empty or relative path.
  static std::string directory(std::string dir);
  /// This daemon's instance id (written on every ledger line).
  const std::string& instance() const { return instance_; }
  /// Why the directory cannot be written, if it cannot.
  const std::optional<std::string>& unusable() const { return unusable_; }

  // ---- the ledger (state.db)
  /// Records `entry` in the state database (with the other writes of this
  /// loop iteration, in one transaction). Queries see it at once. An entry
  /// that cannot be written (disk full) waits, in order, and is written by a
  /// retry every second once space returns. A failure reported to `done`
  /// also marks the run as not recorded (see end_run).
  void record(LedgerEntry entry, Done done = nullptr);
  /// Ends a run: appends its result.json to its session's segment (when
  /// `result_json` is set), then commits the terminal entry; `done` runs
  /// after that commit. With `failure_fails`,
  /// a write error of this run (this one, or an earlier write of the run
  /// that reported to a caller) turns the terminal entry into `failed` with
  /// the store error (-32016, reason "store"), which is what the host is
  /// answered. `sync` is kept for callers; [daemon] fsync applies to every
  /// commit (synchronous = FULL).
  void end_run(std::optional<std::string> result_json, LedgerEntry end, bool failure_fails, bool sync, Done done);

  /// A run as recorded, with what this process recorded and has not yet
  /// committed.
  std::optional<RunRecord> find_run(const std::string& run_id);
  struct RunPage {
    std::vector<RunRecord> runs;  // oldest first
    std::size_t total = 0;        // every match, past the limit too
  };
  RunPage list_runs(const StateDb::RunFilter& filter);

  // ---- session records (state.db)
  /// Saves the record; reads see it at once.
  void save_session(const nlohmann::json& record, Done done = nullptr);
  std::optional<nlohmann::json> session(const std::string& id);
  /// The records whose name or host's name is `name`.
  std::vector<nlohmann::json> sessions_named(const std::string& name);
  /// Records in id order after `after_id`, at most `limit`.
  std::vector<nlohmann::json> sessions_after(const std::string& after_id, std::size_t limit);
  /// For each harness, what its adapter offered, from its newest record,
  /// as the store read it when it opened. Handed out once (the engine
  /// takes it at its start and keeps it up to date itself).
  std::map<std::string, nlohmann::json> harness_options();

  // ---- who serves a session (leases in state.db)
  /// One process serves a session at a time, across every process on the
  /// directory: a session is served under a lease held for as long as the
  /// process lives.
  struct Claim {
    std::string session_id;
    bool created = false;  // claim_name: no open session had the name
    /// Set: another live harnessd process serves the session; nothing was
    /// taken.
    std::optional<StateDb::Lease> held;
  };
  using ClaimDone = acp::UniqueFunction<void(Expected<Claim>)>;
  /// Takes the lease of session `id` for this process. `done` runs on the
  /// loop once decided (null: a new session's id, which no other process
  /// can know yet). An error means there is no database to decide with.
  void claim_session(std::string id, std::optional<std::string> name, ClaimDone done);
  /// The session to serve under `name` (see StateDb::claim_name), leased
  /// for this process unless another live one holds it.
  void claim_name(std::string name, std::string new_id, ClaimDone done);
  /// Gives up this process's lease of the session.
  void release_session(std::string id);
  using DatabaseDone = acp::UniqueFunction<void(Expected<nlohmann::json>)>;
  /// Runs `work` on the database's thread, in its write transaction, behind
  /// what was queued before; `done` gets its result on the loop.
  void with_database(std::function<Expected<nlohmann::json>(StateDb&)> work, DatabaseDone done);
  /// Every lease held by a live process, by session id.
  std::map<std::string, StateDb::Lease> leases();

  // ---- recordings (segments/<sessionId>.jsonl, see segment.h)
  /// Appends segment lines of run `run_id` to its session's segment, in the
  /// session's lane (after everything asked for before in that lane). A
  /// failure reported to `done` fails the run (see end_run).
  /// `same`: appends that share it (a recording's) go to the same segment
  /// with dones that do the same; see extend_lines().
  void record_lines(const std::string& session_id, const std::string& run_id, std::string lines, Done done,
                    const void* same = nullptr);
  /// When one of the last kMergeReach jobs asked for in this loop
  /// iteration is an append of record_lines() with `same` (not null),
  /// `write(data)` appends more lines to its data and returns true: a
  /// run's frames become one job per iteration, with no job, copy or done
  /// of their own. False otherwise: the caller records its lines as usual.
  /// The lines may so be written before jobs asked for after that append:
  /// lines of other runs (a run's lines are read back by its tag, in their
  /// own order), another file, a barrier (which then waits for more than it
  /// must), never after anything.
  template <class Write>
  bool extend_lines(const void* same, Write&& write) {
    if (!same) return false;
    const std::size_t reach = std::min(staged_.size(), kMergeReach);
    for (std::size_t back = 1; back <= reach; ++back) {
      DbWriter::Job& job = staged_[staged_.size() - back];
      if (!job.file || job.file->same != same) continue;
      std::string& data = job.file->data;
      const std::size_t before = data.size();
      write(data);
      const std::size_t added = data.size() - before;
      job.file->bytes += added;
      queued_ += added;
      if (added) check_pressure();
      return true;
    }
    return false;
  }
  static constexpr std::size_t kMergeReach = 8;

  // ---- files, relative to the directory
  void make_dir(std::string rel, Done done);
  /// Writes a whole file atomically (temporary file, then rename), 0600.
  void write_file(std::string rel, std::string content, Done done, bool sync = false);
  /// Appends to a file the lane keeps open (a bounded set). A file whose last line
  /// was cut by a crash gets a newline first, so the cut line stays alone.
  void append(std::string rel, std::string data, Done done = nullptr);
  /// Writes a whole file in place (no rename): for files written once into
  /// a fresh run folder. A crash may leave it cut short.
  void create_file(std::string rel, std::string content, Done done, bool sync = false);
  void read_file(std::string rel, ReadDone done);
  /// A session's transcript as its host got it (transcript::expand: the
  /// runs' events it points at are read too), read in the session's lane.
  using TranscriptDone = acp::UniqueFunction<void(Expected<transcript::Expanded>)>;
  void read_transcript(const std::string& session_id, TranscriptDone done);
  /// `done` runs once every write of `key` (a run or session id) asked for
  /// before has finished. `after_end`: the barrier follows the end of a run
  /// (end_run) whose commit its caller waits for anyway, so it may wait
  /// with that end for company (DbWriter::kGroupHold).
  void barrier(const std::string& key, Done done, bool after_end = false);
  /// The same for the writes of both keys (a run and its session).
  void barrier(const std::string& key, const std::string& other, Done done, bool after_end = false);
  /// `done` runs once every write asked for before has finished.
  void barrier_all(Done done);

  /// Backpressure: `fn(true)` once the bytes waiting in the lanes pass
  /// `high` (the disk is slower than what feeds it), `fn(false)` once they
  /// are back to `low`. Runs on the loop thread.
  void set_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn);
  /// Bytes of writes asked for and not yet done.
  std::size_t queued_bytes() const { return queued_.load(); }

  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }
  /// Where a person finds the run's recording (see recording_of).
  std::string recording_path(const std::string& run_id, const std::string& session_id) const;
  /// A run's own folder: the files its prompt gives the harness to read, and
  /// the whole recording of a run of an earlier harnessd.
  static std::string run_dir(const std::string& run_id) { return "runs/" + run_id; }
  static std::string transcript_file(const std::string& id) { return "sessions/" + id + ".jsonl"; }

  /// The terminal line written instead of `end` when the run could not be
  /// recorded: `failed`, with the error the host gets.
  static LedgerEntry store_failure(const LedgerEntry& end, const std::string& why);

 private:
  static constexpr int kLanes = 4;
  Store(acp::Loop& loop, std::string dir, StoreOptions options);
  void open_database();
  /// A connection of this store's to the state database (the writer's, the
  /// reader's, retention's), with its options.
  Expected<std::unique_ptr<StateDb>> connect() const;
  /// Starts the background collection of what retention lets go.
  /// The retention policy as the database notes when it was last applied.
  std::string retention_policy() const;
  void start_retention();
  StateDb::Lease lease_for(std::string id, std::optional<std::string> name) const;
  void claim(std::function<Expected<Claim>(StateDb&)> decide, ClaimDone done);
  void recover();
  static std::string key_of(const std::string& rel);
  StoreWriter& lane_for(const std::string& key);
  /// `run`: the run whose recording fails with this job (see end_run).
  /// `bytes`: what the job writes, counted against the high-water mark.
  /// write_file (`fresh` false) and create_file (`fresh` true).
  /// Runs `read` in `key`'s lane (at once when the directory is not
  /// writable: reading may still work) and hands its result to `done`.
  template <typename T>
  void read_in_lane(const std::string& key, std::function<Expected<T>()> read,
                    acp::UniqueFunction<void(Expected<T>)> done);
  void put_file(std::string rel, std::string content, Done done, bool sync, bool fresh);
  void submit(const std::string& key, acp::UniqueFunction<Expected<void>()> work, Done done, std::string run = "",
              std::size_t bytes = 0);
  /// Queues `job` (its bytes counted) for `lane`: the writer runs it, in
  /// the lane's order, and is woken once this loop iteration is done.
  void to_lane(StoreWriter& lane, StoreWriter::Job job);
  /// Queues a database job; the writer is woken once this loop iteration
  /// is done.
  void to_database(DbWriter::Job job);
  void wake_writer();
  /// Hands the staged jobs to the writer, waking it if it waits.
  void flush_staged();
  /// The oldest unsaved entry of `run_id` was committed.
  void forget_unsaved(const std::string& run_id);
  void check_pressure();
  /// Writer threads: `bytes` of the queue were written.
  void written(std::size_t bytes);

  acp::Loop& loop_;
  std::string dir_;
  StoreOptions options_;
  std::string instance_;
  std::optional<std::string> unusable_;
  int root_ = -1;     // the state directory, opened once
  int lock_fd_ = -1;  // daemons/<instance>.lock, flock'ed
  /// The connection for reads on the loop thread (WAL: never waits for a
  /// writer), opened at the first read: a `harnessd run` in a new session
  /// reads nothing after the start, and opening one costs 0.3-0.5 ms.
  /// Null when it cannot be opened (logged; reads then see only what this
  /// process has not committed yet).
  StateDb* reader();
  /// Read at open through the writing connection, before the writer
  /// thread takes it; handed out once by harness_options().
  std::map<std::string, nlohmann::json> harness_options_at_open_;
  std::unique_ptr<StateDb> reader_;
  /// The writing connection, until the writer thread takes it.
  std::unique_ptr<StateDb> writer_db_;
  std::unique_ptr<DbWriter> db_writer_;
  /// What this process recorded and the database has not committed yet,
  /// oldest first per run; reads apply it over the database's rows. A run
  /// has a few at most: a vector, which allocates once for them, where a
  /// deque would allocate a block for each.
  std::map<std::string, std::vector<LedgerEntry>> unsaved_entries_;
  std::vector<std::string> unsaved_order_;  // runs first seen here, in order
  struct UnsavedRecord {
    nlohmann::json record;
    int writes = 0;
  };
  std::map<std::string, UnsavedRecord> unsaved_sessions_;
  /// Sessions whose lease this process asked for and has not released; a
  /// claim by name may lease another session than the one asked for, so
  /// after one the final release always runs.
  std::set<std::string> leased_;
  bool leased_by_name_ = false;
  std::unique_ptr<WriteBudget> budget_;
  std::atomic<std::size_t> queued_{0};
  std::atomic<bool> over_{false};
  std::atomic<bool> wake_sent_{false};
  std::size_t high_water_ = 0;
  std::atomic<std::size_t> low_water_{0};  // read by the writer threads
  std::function<void(bool)> on_pressure_;
  std::unique_ptr<WriteCompletions> completions_;
  std::vector<std::unique_ptr<StoreWriter>> lanes_;
  /// The writer is to be woken once this loop iteration is done.
  bool wake_posted_ = false;
  /// Jobs asked for in this loop iteration: they reach the writer's queue
  /// together, under one lock, when the iteration is done (flush_staged).
  std::vector<DbWriter::Job> staged_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::thread retention_thread_;
  std::atomic<bool> retention_stop_{false};
};

}  // namespace harnessd::worker
