// The SQLite connection, its statements and transactions.
#include "worker/database.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "acp/log.h"
#include "worker/wal_gather.h"

namespace harnessd::worker {

namespace {

/// Filesystems whose locks SQLite cannot rely on (values from linux/magic.h
/// and the filesystems' own headers).
const char* network_filesystem_name(unsigned long type) {
  switch (type) {
    case 0x6969: return "NFS";
    case 0x517B: return "SMB";
    case 0xFF534D42: return "CIFS";
    case 0xFE534D42: return "SMB2";
    case 0x5346414F:
    case 0x6B414653: return "AFS";
    case 0x00C36400: return "Ceph";
    case 0x01021997: return "9p";
    case 0x73757245: return "Coda";
    case 0x564C: return "NCP";
    case 0x0BD00BD0: return "Lustre";
    case 0x01161970: return "GFS2";
    case 0x7461636F: return "OCFS2";
    default: return nullptr;
  }
}

}  // namespace

Expected<void> refuse_network_filesystem(int fd, const std::string& what) {
  struct statfs st {};
  if (::fstatfs(fd, &st) != 0) return Error{"cannot inspect the filesystem of " + what + ": " + std::strerror(errno)};
  if (const char* name = network_filesystem_name(static_cast<unsigned long>(st.f_type))) {
    return Error{what + " is on a network filesystem (" + name +
                 "), where file locks cannot be trusted; give harnessd a state directory on a local disk "
                 "(--state-dir or XDG_STATE_HOME)"};
  }
  return {};
}

// ---- Statement

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement::Statement(Statement&& other) noexcept : stmt_(other.stmt_), db_(other.db_), last_code_(other.last_code_) {
  other.stmt_ = nullptr;
}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    stmt_ = other.stmt_;
    db_ = other.db_;
    last_code_ = other.last_code_;
    other.stmt_ = nullptr;
  }
  return *this;
}

Statement& Statement::bind(int i, std::int64_t v) {
  sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Statement& Statement::bind(int i, std::string_view v) {
  sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind(int i, const std::optional<std::string>& v) { return v ? bind(i, *v) : bind_null(i); }

Statement& Statement::bind_kept(int i, std::string_view v) {
  // step() and reset() clear the bindings, so nothing points at the text
  // once the caller's step is over.
  sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  return *this;
}

Statement& Statement::bind_kept(int i, const std::optional<std::string>& v) {
  return v ? bind_kept(i, std::string_view(*v)) : bind_null(i);
}

Statement& Statement::bind_null(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

Expected<bool> Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) {
    reset();
    return false;
  }
  last_code_ = sqlite3_extended_errcode(db_);
  std::string why = sqlite3_errmsg(db_);
  reset();
  return Error{why};
}

Expected<void> Statement::run() {
  auto r = step();
  if (!r) return std::move(r).error();
  if (*r) reset();
  return {};
}

bool Statement::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

std::int64_t Statement::int64(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (!p) return {};
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
}

std::optional<std::string> Statement::optional_text(int col) const {
  if (is_null(col)) return std::nullopt;
  return text(col);
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

// ---- Database

struct Database::Cache {
  std::map<const char*, Statement> statements;
};

namespace {
// Set once, before SQLite initialises itself at the first open. SQLite
// keeps memory statistics by default, taking a process-wide mutex around
// every allocation it makes; nothing of ours reads them.
void configure_sqlite() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    // No bulk allocation of page slots when a connection opens: SQLite
    // would write a header into each of its 20 slots at once, touching 88
    // KiB that a short-lived connection mostly never uses (about 20 page
    // faults per connection). Slots are then allocated as pages are read.
    (void)sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
  });
  install_wal_gathering();
}
}  // namespace

Expected<std::unique_ptr<Database>> Database::open(const std::string& path, Options options) {
  configure_sqlite();
  std::unique_ptr<Database> d(new Database());
  d->path_ = path;
  d->options_ = options;
  d->cache_ = std::make_unique<Cache>();
  struct stat before {};
  bool existed = ::lstat(path.c_str(), &before) == 0;
  if (existed && S_ISLNK(before.st_mode)) {
    return Error{path + " is a symbolic link; refused (harnessd follows no link in its state directory)"};
  }
  int flags = SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  flags |= options.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &d->db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = d->db_ ? sqlite3_errmsg(d->db_) : sqlite3_errstr(rc);
    return Error{"cannot open " + path + ": " + why};
  }
  // Created here: as private as everything else in the state directory
  // (the WAL and shared-memory files take the database file's mode).
  if (!options.read_only && (!existed || (before.st_mode & 077) != 0)) {
    ::chmod(path.c_str(), 0600);
    if (existed) acp::log::warn(path + " could be used by other users; tightened to 0600");
  }
  sqlite3_extended_result_codes(d->db_, 1);
  sqlite3_busy_handler(d->db_, &Database::on_busy, d.get());
  // Closing the last connection does not copy the WAL back: ~Database
  // decides (kCloseCheckpointFrames), which needs the WAL's length from
  // the hook, which takes SQLite's own checkpoints over (on_wal).
  sqlite3_db_config(d->db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  if (!options.read_only) sqlite3_wal_hook(d->db_, &Database::on_wal, d.get());
  if (!options.read_only) {
    // Switching a new database to WAL needs its exclusive lock, and SQLite
    // answers "database is locked" at once instead of calling the busy
    // handler: several processes opening a new state directory together
    // wait here, within the same bound.
    const auto since = std::chrono::steady_clock::now();
    for (int attempt = 0;; ++attempt) {
      auto mode = d->prepare("PRAGMA journal_mode = WAL");
      if (!mode) return std::move(mode).error();
      auto row = mode->step();
      if (!row) {
        const int code = mode->last_code() & 0xff;
        if ((code == SQLITE_BUSY || code == SQLITE_LOCKED) &&
            std::chrono::steady_clock::now() - since < options.busy_limit) {
          std::this_thread::sleep_for(std::chrono::microseconds(50 << std::min(attempt, 8)));
          continue;
        }
        return Error{"cannot switch " + path + " to WAL: " + row.error().message};
      }
      std::string got = *row ? mode->text(0) : "";
      mode->reset();
      if (got != "wal") return Error{"cannot switch " + path + " to WAL (the journal mode stays " + got + ")"};
      break;
    }
  }
  if (auto r = d->exec(options.full_sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL"); !r) {
    return std::move(r).error();
  }
  // SQLite's own checkpoints (every 1,000 pages) stay on unless on_commit()
  // takes them over: a WAL left alone grows without bound.
  if (auto r = d->exec("PRAGMA foreign_keys = ON"); !r) return std::move(r).error();
  return d;
}

Database::~Database() {
  if (db_ && !options_.read_only && wal_frames_ >= kCloseCheckpointFrames) {
    if (auto r = checkpoint_and_truncate_now(); !r) acp::log::warn(r.error().message);
  }
  cache_.reset();  // statements first: sqlite3_close refuses while any is open
  if (db_) sqlite3_close(db_);
}

int Database::on_busy(void* self, int attempts) noexcept {
  auto* d = static_cast<Database*>(self);
  auto now = std::chrono::steady_clock::now();
  if (attempts == 0) {
    d->busy_since_ = now;
    d->busy_logged_ = false;
  }
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - d->busy_since_);
  if (waited >= d->options_.busy_limit) {
    ++d->busy_failures_;
    acp::log::warn(d->path_ + ": gave up waiting for another process's lock after " +
                   std::to_string(waited.count()) + " ms");
    return 0;
  }
  if (!d->busy_logged_ && waited >= std::chrono::seconds(1)) {
    d->busy_logged_ = true;
    acp::log::info(d->path_ + ": waiting for another process's lock (" + std::to_string(waited.count()) + " ms)");
  }
  // Short sleeps first: the usual holder commits within a millisecond.
  int shift = attempts < 8 ? attempts : 8;
  std::this_thread::sleep_for(std::chrono::microseconds(50 << shift));
  return 1;
}

int Database::on_wal(void* self, sqlite3* db, const char* name, int frames) noexcept {
  auto* d = static_cast<Database*>(self);
  d->wal_frames_ = frames;
  if (d->on_commit_) {
    d->on_commit_(frames);
  } else if (frames >= kAutoCheckpointFrames) {
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return SQLITE_OK;
}

void Database::on_commit(std::function<void(int frames)> fn) { on_commit_ = std::move(fn); }

Expected<void> Database::checkpoint() {
  int wal_frames = 0, copied = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, &copied);
  // Busy: another connection checkpoints right now; the next try does it.
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) return error("checkpoint");
  return {};
}

Expected<bool> Database::checkpoint_and_truncate_now() {
  sqlite3_busy_handler(db_, nullptr, nullptr);
  int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  sqlite3_busy_handler(db_, &Database::on_busy, this);
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) return false;
  if (rc != SQLITE_OK) return error("checkpoint");
  return true;
}

Error Database::error(std::string_view what) const {
  return Error{path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_)};
}

Expected<void> Database::exec(std::string_view sql) {
  std::string text(sql);
  char* message = nullptr;
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    std::string why = message ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    return Error{path_ + ": " + why};
  }
  return {};
}

Expected<Statement> Database::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                         nullptr) != SQLITE_OK) {
    return error("cannot prepare \"" + std::string(sql.substr(0, 60)) + "\"");
  }
  return Statement(stmt, db_);
}

Expected<Statement*> Database::cached(const char* sql) {
  auto it = cache_->statements.find(sql);
  if (it != cache_->statements.end()) return &it->second;
  auto made = prepare(sql);
  if (!made) return std::move(made).error();
  return &cache_->statements.emplace(sql, std::move(*made)).first->second;
}

Expected<void> Database::exec_cached(const char* sql) {
  auto st = cached(sql);
  if (!st) return std::move(st).error();
  if (auto r = (*st)->run(); !r) return Error{path_ + ": " + r.error().message};
  return {};
}

std::int64_t Database::changes() const { return sqlite3_changes64(db_); }

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

Expected<int> Database::schema_version() {
  auto st = prepare("PRAGMA user_version");
  if (!st) return std::move(st).error();
  auto row = st->step();
  if (!row) return std::move(row).error();
  int v = *row ? static_cast<int>(st->int64(0)) : 0;
  st->reset();
  return v;
}

Expected<void> Database::migrate(std::span<const char* const> steps) {
  // Up to date (every open but the first): no write lock is taken.
  if (auto current = schema_version(); current && *current == static_cast<int>(steps.size())) return {};
  auto tx = Transaction::begin(*this);
  if (!tx) return std::move(tx).error();
  auto version = schema_version();
  if (!version) return std::move(version).error();
  const int known = static_cast<int>(steps.size());
  if (*version > known) {
    return Error{path_ + " has schema version " + std::to_string(*version) + ", newer than this harnessd knows (" +
                 std::to_string(known) + "); use the harnessd that wrote it, or a newer one"};
  }
  if (*version == known) return tx->commit();
  for (int v = *version; v < known; ++v) {
    if (auto r = exec(steps[static_cast<std::size_t>(v)]); !r) {
      return Error{"cannot bring " + path_ + " to schema version " + std::to_string(v + 1) + ": " + r.error().message};
    }
  }
  if (auto r = exec("PRAGMA user_version = " + std::to_string(known)); !r) return std::move(r).error();
  return tx->commit();
}

// ---- ReadSnapshot

ReadSnapshot::ReadSnapshot(Database& db) : db_(db), open_(static_cast<bool>(db.exec("BEGIN"))) {}

ReadSnapshot::~ReadSnapshot() {
  if (open_) (void)db_.exec("COMMIT");
}

// ---- Transaction

Expected<Transaction> Transaction::begin(Database& db) {
  if (auto r = db.exec_cached("BEGIN IMMEDIATE"); !r) return std::move(r).error();
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_) (void)db_->exec_cached("ROLLBACK");
}

Expected<void> Transaction::commit() {
  Database* db = db_;
  db_ = nullptr;
  if (auto r = db->exec_cached("COMMIT"); !r) {
    // A failed COMMIT (SQLITE_BUSY excepted) leaves the transaction open.
    if (!sqlite3_get_autocommit(db->handle())) (void)db->exec("ROLLBACK");
    return r;
  }
  return {};
}

}  // namespace harnessd::worker
