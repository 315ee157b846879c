// Store: harnessd's state directory (ledger, session records and
// transcripts, run recordings). Opening it (recovery included) is done once
// at start-up, before the loop runs; after that writes happen on a few
// writer threads ("lanes": all writes to one file go through one lane, in
// the order they were asked for) and report back on the loop thread, so
// the event loop never waits on the disk.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "worker/session_record.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "schema/expected.h"
#include "worker/ledger.h"

namespace harnessd::worker {

class LedgerFile;
class StoreWriter;
class WriteBudget;
class WriteCompletions;

struct StoreOptions {
  /// fdatasync result.json and terminal ledger lines (survives power loss,
  /// costs milliseconds per run). Off by default: written lines survive any
  /// crash of harnessd itself.
  bool sync = false;
  /// For tests of a store write error without a small filesystem: every
  /// write fails with ENOSPC once this many bytes were written (0: never).
  /// A full disk and its return are tested on a real tmpfs.
  std::size_t fail_after_bytes = 0;
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
  /// others can write to them), takes this daemon's instance lock, reads
  /// the ledger and the session records, and ends every run left open by a
  /// daemon that is no longer running with "interrupted". Problems reading
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
  /// This daemon's instance id (written on every ledger line).
  const std::string& instance() const { return instance_; }
  /// Why the directory cannot be written, if it cannot.
  const std::optional<std::string>& unusable() const { return unusable_; }

  // ---- the ledger
  /// Applies `entry` to the index now and appends it to ledger.jsonl. A
  /// line that cannot be written (disk full) leaves the file as it was and
  /// is kept, in order, to be written before the next line or by a retry
  /// every second once space returns. A failure reported to `done` also
  /// marks the run as not recorded (see end_run).
  void record(LedgerEntry entry, Done done = nullptr);
  /// Ends a run: creates runs/<runId>/result.json (when `result_json` is
  /// set; the folder is made if the run never had one), then appends the
  /// terminal `end` line. With `failure_fails`, a write error of this run
  /// (this one, or an earlier write of the run that reported to a caller)
  /// turns the terminal line into `failed` with the store error (-32016,
  /// reason "store"), which is what the host is answered. The index gets
  /// the line that was written, before `done` runs.
  void end_run(std::optional<std::string> result_json, LedgerEntry end, bool failure_fails, bool sync, Done done);
  const RunIndex& runs() const { return runs_; }

  // ---- session records
  /// Saves the record (atomically replacing sessions/<id>.json).
  void save_session(const nlohmann::json& record, Done done = nullptr);
  const nlohmann::json* session(const std::string& id) const;
  const std::map<std::string, nlohmann::json>& sessions() const { return sessions_; }

  // ---- files, relative to the directory
  void make_dir(std::string rel, Done done);
  /// Writes a whole file atomically (temporary file, then rename), 0600.
  void write_file(std::string rel, std::string content, Done done, bool sync = false);
  /// Appends to a file kept open until close_file(). A file whose last line
  /// was cut by a crash gets a newline first, so the cut line stays alone.
  void append(std::string rel, std::string data, Done done = nullptr);
  /// Writes a whole file in place (no rename): for files written once into
  /// a fresh run folder. A crash may leave it cut short.
  void create_file(std::string rel, std::string content, Done done, bool sync = false);
  void close_file(std::string rel);
  void read_file(std::string rel, ReadDone done);
  /// `done` runs once every write of `key` (a run or session id) asked for
  /// before has finished.
  void barrier(const std::string& key, Done done);
  /// `done` runs once every write asked for before has finished.
  void barrier_all(Done done);

  /// Backpressure: `fn(true)` once the bytes waiting in the lanes pass
  /// `high` (the disk is slower than what feeds it), `fn(false)` once they
  /// are back to `low`. Runs on the loop thread.
  void set_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn);
  /// Bytes of writes asked for and not yet done.
  std::size_t queued_bytes() const { return queued_.load(); }

  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }
  static std::string run_dir(const std::string& run_id) { return "runs/" + run_id; }
  static std::string session_file(const std::string& id) { return "sessions/" + id + ".json"; }
  static std::string transcript_file(const std::string& id) { return "sessions/" + id + ".jsonl"; }

  /// The terminal line written instead of `end` when the run could not be
  /// recorded: `failed`, with the error the host gets.
  static LedgerEntry store_failure(const LedgerEntry& end, const std::string& why);

 private:
  static constexpr int kLanes = 4;
  Store(acp::Loop& loop, std::string dir, StoreOptions options);
  void recover();
  static std::string key_of(const std::string& rel);
  StoreWriter& lane_for(const std::string& key);
  /// `run`: the run whose recording fails with this job (see end_run).
  /// `bytes`: what the job writes, counted against the high-water mark.
  /// write_file (`fresh` false) and create_file (`fresh` true).
  void put_file(std::string rel, std::string content, Done done, bool sync, bool fresh);
  void submit(const std::string& key, acp::UniqueFunction<Expected<void>()> work, Done done, std::string run = "",
              std::size_t bytes = 0);
  void check_pressure();
  /// Writer threads: `bytes` of the queue were written.
  void written(std::size_t bytes);
  void retry_ledger();

  acp::Loop& loop_;
  std::string dir_;
  StoreOptions options_;
  std::string instance_;
  std::optional<std::string> unusable_;
  int root_ = -1;     // the state directory, opened once
  int lock_fd_ = -1;  // daemons/<instance>.lock, flock'ed
  RunIndex runs_;
  std::map<std::string, nlohmann::json> sessions_;
  std::unique_ptr<WriteBudget> budget_;
  std::unique_ptr<LedgerFile> ledger_;
  std::atomic<std::size_t> queued_{0};
  std::atomic<bool> over_{false};
  std::atomic<bool> wake_sent_{false};
  std::size_t high_water_ = 0;
  std::atomic<std::size_t> low_water_{0};  // read by the writer threads
  std::function<void(bool)> on_pressure_;
  std::unique_ptr<WriteCompletions> completions_;
  std::vector<std::unique_ptr<StoreWriter>> lanes_;
  std::unique_ptr<acp::Timer> retry_timer_;
  /// Lanes given appends this loop iteration while idle, woken together.
  std::vector<StoreWriter*> to_wake_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace harnessd::worker
