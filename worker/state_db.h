// StateDb: the indexed half of the state directory, one SQLite file
// (state.db) holding what is queried: every run's transitions and its
// summary row, and the session records. "Exactly one terminal state per
// run" is a unique index here, so no code path can write a second end.
// What people read (recordings, transcripts) stays files beside it.
//
// Every method runs on the thread that owns the StateDb; writes happen in
// short IMMEDIATE transactions, so several harnessd processes can share one
// state directory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "schema/expected.h"
#include "worker/database.h"
#include "worker/ledger.h"

namespace harnessd::worker {

class StateDb {
 public:
  static constexpr const char* kFile = "state.db";
  /// Where the files of an earlier, file-only state directory are moved once
  /// imported (kept, never deleted).
  static constexpr const char* kImportedDir = "pre-sqlite";

  /// Opens (creating and migrating) `<dir>/state.db`. `dir_fd` is the state
  /// directory, checked not to be on a network filesystem.
  static Expected<std::unique_ptr<StateDb>> open(const std::string& dir, int dir_fd, Database::Options options);

  Database& db() { return *db_; }

  // ---- runs
  /// Writes `entries` in one transaction. A second terminal entry of a run
  /// is refused by the database; its run id is returned (and logged), the
  /// other entries are written.
  Expected<std::vector<std::string>> apply(std::span<const LedgerEntry> entries);
  /// One entry inside the caller's transaction: false when the database
  /// refused it as a second end.
  Expected<bool> apply_one(const LedgerEntry& entry);
  /// A run's started entry whose end follows in the same transaction
  /// (apply_end_after_start): its transition now, its row with the end, in
  /// one update. As apply_one() for a run this connection does not know
  /// (did not write, or saw end) by then.
  Expected<bool> apply_start_before_end(const LedgerEntry& started);
  Expected<bool> apply_end_after_start(const LedgerEntry& end, const LedgerEntry& started);
  Expected<std::optional<RunRecord>> find_run(const std::string& run_id);

  struct RunFilter {
    std::optional<std::string> session_id;
    /// A session's id, name or host's name (the command line's --session).
    std::optional<std::string> session_ref;
    std::optional<std::string> name;
    std::optional<std::string> state;  // the run's last event
    std::optional<std::string> since;  // queued at or after (ISO 8601)
    std::size_t limit = 0;  // 0: all; otherwise the newest `limit`, still oldest first
  };
  /// Runs in the order they were first recorded.
  Expected<std::vector<RunRecord>> runs(const RunFilter& filter);
  Expected<std::vector<RunRecord>> runs();
  /// How many runs match (`limit` ignored).
  Expected<std::size_t> count_runs(const RunFilter& filter);
  /// Run counts by session and state.
  Expected<std::map<std::string, std::map<std::string, int>>> run_counts();
  /// The number of the newest transition (0: none yet).
  Expected<std::int64_t> last_transition();
  /// Transitions recorded after the one numbered `after` (0: from the
  /// first), oldest first, at most `limit`, with their numbers.
  Expected<std::vector<std::pair<std::int64_t, LedgerEntry>>> transitions_after(std::int64_t after,
                                                                                 std::size_t limit);
  /// A run's transitions as ledger entries, oldest first.
  Expected<std::vector<LedgerEntry>> transitions(const std::string& run_id);
  /// Ends with `interrupted` every open run whose daemon instance is not
  /// `alive`, in one transaction (two processes starting after a crash
  /// cannot both end one run). Returns the entries written.
  Expected<std::vector<LedgerEntry>> interrupt_orphans(const std::function<bool(const std::string&)>& alive,
                                                       const std::string& instance, const std::string& time);

  // ---- sessions
  Expected<void> save_session(const nlohmann::json& record);
  Expected<std::optional<nlohmann::json>> session(const std::string& id);
  /// Every session record, oldest first.
  Expected<std::vector<nlohmann::json>> sessions();
  /// The records whose name or host's name is `name`.
  Expected<std::vector<nlohmann::json>> sessions_named(const std::string& name);
  /// Records by id after `after_id` (in id order), at most `limit`.
  Expected<std::vector<nlohmann::json>> sessions_after(const std::string& after_id, std::size_t limit);
  /// For each harness, the adapter options of its newest record that has
  /// them (what its adapter offered).
  Expected<std::map<std::string, nlohmann::json>> harness_options();

  // ---- who serves a session
  /// A session's lease: the daemon instance serving it. A lease is good for
  /// as long as its instance lives (it holds its lock file), so nothing
  /// renews it and a dead holder's lease is simply taken over.
  struct Lease {
    std::string session_id;
    std::optional<std::string> name;
    std::string owner;  // daemon instance
    std::int64_t pid = 0;
    std::string since;
  };
  using Alive = std::function<bool(const std::string& instance)>;
  /// Takes the lease of `me.session_id` for `me.owner`, unless another
  /// instance that is `alive` holds it: that lease is returned and nothing
  /// changes. Runs inside the caller's transaction.
  Expected<std::optional<Lease>> take_lease(const Lease& me, const Alive& alive);
  struct NameClaim {
    std::string session_id;
    bool created = false;  // no open session had the name: `me.session_id`, leased now
    std::optional<Lease> held;  // set: a live other instance serves it
  };
  /// Which session serves the name `*me.name` for `me.owner`: the session
  /// a live lease of the name points at (held, unless ours), else the
  /// newest open session of that name (leased now), else `me.session_id`
  /// (created, leased now). Runs inside the caller's transaction, which must
  /// be a write transaction so that two processes cannot both create it.
  Expected<NameClaim> claim_name(const Lease& me, const Alive& alive);
  /// Drops the lease of `session_id` if `owner` holds it (empty id: every
  /// lease of `owner`).
  Expected<void> release_leases(const std::string& owner, const std::string& session_id = "");
  /// Drops the leases of instances that are not `alive`.
  Expected<void> drop_dead_leases(const Alive& alive);
  /// Every lease, by session id.
  Expected<std::vector<Lease>> leases();

  // ---- small facts (the meta table)
  Expected<std::optional<std::string>> meta(const std::string& key);
  Expected<void> set_meta(const std::string& key, const std::string& value);

  // ---- retention
  /// What a retention lets go: runs that ended before `cutoff` (ISO 8601;
  /// empty: no time bound) or that are not among the newest `keep_runs`
  /// (0: no count bound). A run that has not ended never is.
  struct Expiry {
    std::string cutoff;
    std::int64_t boundary = 0;  // runs numbered up to this one are past keep_runs
  };
  Expected<Expiry> expiry(const std::string& cutoff, std::size_t keep_runs);
  /// Expired runs numbered after `after_seq`, oldest first, at most `limit`.
  Expected<std::vector<std::pair<std::int64_t, std::string>>> expired_runs(const Expiry& expiry,
                                                                           std::int64_t after_seq, std::size_t limit);
  /// Deletes the rows (and transitions) of these runs, if they ended.
  Expected<std::size_t> delete_runs(const std::vector<std::string>& run_ids);
  /// Closed sessions whose every run is expired (or that have none), by id
  /// after `after_id`, at most `limit`.
  Expected<std::vector<std::string>> expired_sessions(const Expiry& expiry, const std::string& after_id,
                                                      std::size_t limit);
  /// Deletes a session's record if it is closed and has no run left.
  Expected<bool> delete_session(const std::string& id);

  // ---- an earlier state directory
  struct Imported {
    std::size_t ledger_lines = 0;
    std::size_t bad_lines = 0;
    std::size_t second_ends = 0;
    std::size_t sessions = 0;
  };
  /// Imports ledger.jsonl and sessions/*.json found beneath `root` in one
  /// transaction, then moves them into pre-sqlite/. Nothing to import:
  /// nullopt. Safe to repeat after a crash half-way (what was imported is
  /// not imported twice).
  Expected<std::optional<Imported>> import_files(int root);

 private:
  explicit StateDb(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  Expected<std::vector<RunRecord>> read_runs(Statement& st);
  /// A started or terminal entry of a run whose row matches it in all but
  /// its state: the row's seq, or none (no such row, it differs, or it
  /// has ended) for the full upsert to decide.
  Expected<std::optional<std::int64_t>> update_known_run(const LedgerEntry& e, bool terminal);
  Expected<bool> insert_transition(std::int64_t seq, const LedgerEntry& e, bool terminal);
  /// Gives the run's transitions that keep only their own fields their
  /// whole entries, as the row says them now: before a change of the row.
  Expected<void> keep_whole_entries(const std::string& run_id);
  /// The run's row as `e` leaves it: its seq, or none when the database
  /// refused `e` as a second end (logged).
  Expected<std::optional<std::int64_t>> apply_row(const LedgerEntry& e);

  std::unique_ptr<Database> db_;
  /// The seq of each run this connection wrote and has not seen end.
  std::unordered_map<std::string, std::int64_t> open_seqs_;
};

}  // namespace harnessd::worker
