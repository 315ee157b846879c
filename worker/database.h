// Database: a thin RAII layer over one SQLite connection, with the rules
// harnessd keeps for its state database built in: opened without following
// a link, WAL, every write transaction BEGIN IMMEDIATE, a bounded busy
// handler of our own that logs long waits, a schema version in the file and
// additive migrations only. It is deliberately small: prepared statements
// that reset themselves, errors as values, nothing that throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "schema/expected.h"

struct sqlite3;
struct sqlite3_stmt;

namespace harnessd::worker {

/// Refuses a directory on a network filesystem (NFS, SMB/CIFS, AFS, Ceph,
/// 9p, Lustre, GFS2, OCFS2...): SQLite's locks are not reliable there and
/// two machines could both believe they own a run. `fd` is the directory.
Expected<void> refuse_network_filesystem(int fd, const std::string& what);

class Statement {
 public:
  Statement() = default;
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are 1-based, as in SQL. Text is copied by SQLite.
  Statement& bind(int i, std::int64_t v);
  Statement& bind(int i, std::string_view v);
  Statement& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Statement& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Statement& bind(int i, const std::optional<std::string>& v);
  /// Text that stays alive and unchanged until this statement's step is
  /// done (a field of the value being written): SQLite reads it in place
  /// instead of copying it. Never a temporary.
  Statement& bind_kept(int i, std::string_view v);
  Statement& bind_kept(int i, const std::string& v) { return bind_kept(i, std::string_view(v)); }
  Statement& bind_kept(int i, const std::optional<std::string>& v);
  Statement& bind_kept(int i, std::string&& v) = delete;
  Statement& bind_kept(int i, std::optional<std::string>&& v) = delete;
  Statement& bind_null(int i);

  /// One step: true while a row is there to read, false when done. After
  /// done (or an error) the statement is reset and its bindings cleared,
  /// ready for the next use.
  Expected<bool> step();
  /// step() for statements that return no row.
  Expected<void> run();

  // Columns are 0-based, as in SQLite.
  bool is_null(int col) const;
  std::int64_t int64(int col) const;
  std::string text(int col) const;
  std::optional<std::string> optional_text(int col) const;

  /// Resets early (a query read only partly) and clears the bindings.
  void reset();
  /// SQLite's extended result code of the last failed step (0 if none).
  int last_code() const { return last_code_; }

 private:
  friend class Database;
  Statement(sqlite3_stmt* stmt, sqlite3* db) : stmt_(stmt), db_(db) {}
  sqlite3_stmt* stmt_ = nullptr;
  sqlite3* db_ = nullptr;
  int last_code_ = 0;
};

class Database {
 public:
  struct Options {
    bool read_only = false;
    /// How long a writer waits for another process's lock before the
    /// statement fails with "database is locked". 0: does not wait.
    std::chrono::milliseconds busy_limit{10000};
    /// synchronous = FULL (every commit survives power loss) instead of
    /// NORMAL (every commit survives a crash of the process).
    bool full_sync = false;
  };

  /// Opens (creating it 0600 unless read-only) the database file at
  /// `path`. The file must not be a symbolic link. WAL is switched on.
  static Expected<std::unique_ptr<Database>> open(const std::string& path, Options options);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  /// Runs one or more statements that return no rows.
  Expected<void> exec(std::string_view sql);
  /// A statement prepared once and kept for this connection's life: `sql`
  /// must be a string literal (it is the cache key, by address).
  Expected<Statement*> cached(const char* sql);
  /// Runs a cached statement that returns no rows (BEGIN, COMMIT...), with
  /// no parse after the first time.
  Expected<void> exec_cached(const char* sql);
  Expected<Statement> prepare(std::string_view sql);

  std::int64_t changes() const;
  std::int64_t last_insert_rowid() const;
  /// Times the busy handler gave up, and the longest wait it saw (ms).
  std::uint64_t busy_failures() const { return busy_failures_; }

  /// The schema version kept in the file (PRAGMA user_version).
  Expected<int> schema_version();
  /// Brings the schema to `steps.size()`: step k (0-based) takes version k
  /// to k + 1. Steps only add (tables, columns, indexes). All the missing
  /// steps run in one IMMEDIATE transaction. A file newer than the steps
  /// known here is refused, naming both versions.
  Expected<void> migrate(std::span<const char* const> steps);

  const std::string& path() const { return path_; }
  sqlite3* handle() const { return db_; }

  /// Calls `fn` on the committing thread after each commit of this
  /// connection, with the number of frames the WAL holds. The checkpoint
  /// SQLite makes after a commit that leaves kAutoCheckpointFrames or more
  /// is off from then on: whoever set `fn` checkpoints.
  void on_commit(std::function<void(int frames)> fn);
  /// A commit that leaves this many WAL frames or more is followed by a
  /// checkpoint, as SQLite does by default, unless on_commit() is set.
  static constexpr int kAutoCheckpointFrames = 1000;
  /// WAL frames from which a connection that wrote empties the WAL when it
  /// closes (if nobody else is in the way). A shorter WAL stays for the
  /// next process, which reads it back when it opens the database (about
  /// 5 us a frame) instead of this one syncing both files now (1-2 ms on
  /// a disk). A `harnessd run` adds about 20.
  static constexpr int kCloseCheckpointFrames = 64;
  /// A PASSIVE checkpoint: copies into the database what no reader still
  /// needs, without waiting for any lock. The WAL starts over at the next
  /// write once everything was copied.
  Expected<void> checkpoint();
  /// Copies the whole WAL into the database and empties the WAL file, if
  /// no other connection is in the way right now (no wait: false then).
  Expected<bool> checkpoint_and_truncate_now();

 private:
  Database() = default;
  static int on_busy(void* self, int attempts) noexcept;
  static int on_wal(void* self, sqlite3* db, const char* name, int frames) noexcept;
  Error error(std::string_view what) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  Options options_;
  std::chrono::steady_clock::time_point busy_since_{};
  bool busy_logged_ = false;
  std::uint64_t busy_failures_ = 0;
  struct Cache;
  std::unique_ptr<Cache> cache_;
  std::function<void(int)> on_commit_;
  int wal_frames_ = 0;  // after this connection's last commit
};

/// A read transaction (BEGIN, deferred): every read until its end sees the
/// same snapshot of the database, whatever other connections commit
/// meanwhile. Needed when one answer is built from several queries.
class ReadSnapshot {
 public:
  explicit ReadSnapshot(Database& db);
  ~ReadSnapshot();
  ReadSnapshot(const ReadSnapshot&) = delete;
  ReadSnapshot& operator=(const ReadSnapshot&) = delete;

 private:
  Database& db_;
  bool open_;
};

/// A write transaction: BEGIN IMMEDIATE (the write lock is taken at once,
/// so it never fails half-way for want of it); rolled back on destruction
/// unless committed.
class Transaction {
 public:
  static Expected<Transaction> begin(Database& db);
  ~Transaction();
  Transaction(Transaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Expected<void> commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
};

}  // namespace harnessd::worker
