// The SQLite layer and the state database: the rules it is opened with,
// migrations, the lock between processes, one end per run enforced by the
// database itself, recovery in one transaction, and the import of a state
// directory written before the database existed (a fixture).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "acp/files.h"
#include "daemon_process.h"
#include "worker/database.h"
#include "worker/ledger.h"
#include "worker/state_db.h"
#include "worker/state_dir.h"

using namespace harnessd;
using namespace harnessd::worker;
using harnessd::test::TempDir;
using harnessd::test::read_file;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

LedgerEntry entry(const std::string& run, const std::string& event, const std::string& daemon = "d_one",
                  const std::string& session = "sess_a") {
  LedgerEntry e;
  e.time = acp::iso_time();
  e.event = event;
  e.runId = run;
  e.sessionId = session;
  e.harness = "fake";
  e.requestId = 7;
  e.daemon = daemon;
  if (event == run_event::kCompleted) e.extra = {{"stopReason", "end_turn"}};
  return e;
}

std::unique_ptr<StateDb> open_db(const std::string& dir) {
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(root);
  auto db = StateDb::open(dir, root.get(), {});
  INFO((db ? "" : db.error().message));
  REQUIRE(db);
  return std::move(*db);
}

}  // namespace

TEST_CASE("the database file is private, in WAL mode, and never opened through a link", "[state_db]") {
  TempDir dir;
  auto db = Database::open(dir.path() + "/a.db", {});
  REQUIRE(db);
  struct stat st {};
  REQUIRE(::stat((dir.path() + "/a.db").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto mode = (*db)->prepare("PRAGMA journal_mode");
  REQUIRE(mode);
  REQUIRE(*mode->step());
  CHECK(mode->text(0) == "wal");
  mode->reset();

  REQUIRE(::symlink((dir.path() + "/a.db").c_str(), (dir.path() + "/link.db").c_str()) == 0);
  auto through_link = Database::open(dir.path() + "/link.db", {});
  REQUIRE_FALSE(through_link);
  CHECK_THAT(through_link.error().message, Catch::Contains("link.db"));
}

TEST_CASE("migrations run once, only forward, and a newer file is refused", "[state_db]") {
  TempDir dir;
  const std::string path = dir.path() + "/m.db";
  constexpr const char* one[] = {"CREATE TABLE a(x)"};
  constexpr const char* two[] = {"CREATE TABLE a(x)", "ALTER TABLE a ADD COLUMN y"};
  {
    auto db = Database::open(path, {});
    REQUIRE(db);
    REQUIRE((*db)->migrate(one));
    CHECK(*(*db)->schema_version() == 1);
    REQUIRE((*db)->migrate(one));  // nothing to do: "CREATE TABLE a" again would fail
    REQUIRE((*db)->migrate(two));
    CHECK(*(*db)->schema_version() == 2);
    REQUIRE((*db)->exec("INSERT INTO a(x, y) VALUES (1, 2)"));
  }
  auto db = Database::open(path, {});
  REQUIRE(db);
  auto refused = (*db)->migrate(one);
  REQUIRE_FALSE(refused);
  CHECK_THAT(refused.error().message, Catch::Contains("schema version 2") && Catch::Contains("(1)"));
}

TEST_CASE("a transaction that is not committed leaves nothing behind", "[state_db]") {
  TempDir dir;
  auto db = Database::open(dir.path() + "/t.db", {});
  REQUIRE(db);
  REQUIRE((*db)->exec("CREATE TABLE a(x)"));
  {
    auto tx = Transaction::begin(**db);
    REQUIRE(tx);
    REQUIRE((*db)->exec("INSERT INTO a VALUES (1)"));
  }
  {
    auto tx = Transaction::begin(**db);
    REQUIRE(tx);
    REQUIRE((*db)->exec("INSERT INTO a VALUES (2)"));
    REQUIRE(tx->commit());
  }
  auto st = (*db)->prepare("SELECT group_concat(x) FROM a");
  REQUIRE(st);
  REQUIRE(*st->step());
  CHECK(st->text(0) == "2");
  st->reset();
}

namespace {

std::string one_text(Database& db, const char* sql) {
  auto st = db.prepare(sql);
  REQUIRE(st);
  auto row = st->step();
  REQUIRE(row);
  REQUIRE(*row);
  std::string text = st->text(0);
  st->reset();
  return text;
}

}  // namespace

// The WAL's frames are gathered in memory and written at the commit
// (worker/wal_gather.cpp). A tiny page cache makes SQLite write frames
// before the commit (a spill), and rewrite some of them in place.
TEST_CASE("a transaction's WAL frames reach the file whole, spilled, rewritten or rolled back", "[state_db][wal]") {
  TempDir dir;
  const std::string path = dir.path() + "/w.db";

  SECTION("spilled and rewritten frames survive the WAL's recovery by the next opener") {
    // Written by a process that ends without closing, as a crash would: the
    // WAL stays as the commit left it, not checkpointed.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      auto db = Database::open(path, {});
      bool ok = db && (*db)->exec("PRAGMA cache_size = 10") && (*db)->exec("CREATE TABLE a(x)");
      auto tx = Transaction::begin(**db);
      ok = ok && tx &&
           (*db)->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
                       "INSERT INTO a SELECT zeroblob(2000) FROM n");
      // Pages the spill wrote to the WAL change again: their frames are
      // rewritten in place, and the checksums after them written again.
      ok = ok && (*db)->exec("UPDATE a SET x = zeroblob(2100) WHERE rowid <= 40") && tx->commit();
      ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    REQUIRE(fs::file_size(path + "-wal") > 600 * 1024);
    // The first opener rebuilds the WAL's index from the file and checks
    // every frame's checksum: a frame still in memory at the commit, or a
    // checksum not written again, would lose the transaction here.
    auto db = Database::open(path, {.read_only = true});
    REQUIRE(db);
    CHECK(one_text(**db, "SELECT count(*) || ' ' || sum(length(x)) FROM a") ==
          "300 " + std::to_string(260 * 2000 + 40 * 2100));
    CHECK(one_text(**db, "PRAGMA integrity_check") == "ok");
  }

  SECTION("frames of a rolled-back transaction never land on another connection's commit") {
    auto first = Database::open(path, {});
    REQUIRE(first);
    REQUIRE((*first)->exec("CREATE TABLE a(who, x)"));
    auto second = Database::open(path, {});
    REQUIRE(second);
    REQUIRE((*first)->exec("PRAGMA cache_size = 10"));
    {
      // Spilled frames, then a rollback: they sit past the WAL's last
      // commit, where the next writer's frames go. They must be in the file
      // (SQLite's rollback reads the WAL, and the write lock's release
      // writes what is gathered) before the other connection writes there.
      auto tx = Transaction::begin(**first);
      REQUIRE(tx);
      REQUIRE((*first)->exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) "
                             "INSERT INTO a SELECT 'gone', zeroblob(2000) FROM n"));
    }
    REQUIRE((*second)->exec("INSERT INTO a VALUES ('second', zeroblob(2000))"));
    REQUIRE((*second)->exec("INSERT INTO a VALUES ('second', zeroblob(2000))"));
    REQUIRE((*first)->exec("INSERT INTO a VALUES ('first', zeroblob(2000))"));
    for (auto* db : {&*first, &*second}) {
      CHECK(one_text(**db, "SELECT group_concat(who, ',') FROM (SELECT who FROM a ORDER BY rowid)") ==
            "second,second,first");
      CHECK(one_text(**db, "PRAGMA integrity_check") == "ok");
    }
    first->reset();
    second->reset();
    auto again = Database::open(path, {.read_only = true});
    REQUIRE(again);
    CHECK(one_text(**again, "SELECT group_concat(who, ',') FROM (SELECT who FROM a ORDER BY rowid)") ==
          "second,second,first");
    CHECK(one_text(**again, "PRAGMA integrity_check") == "ok");
  }
}

TEST_CASE("a connection that wrote a long WAL empties it when it closes, and a short one stays for the next", "[state_db]") {
  TempDir dir;
  const std::string path = dir.path() + "/t.db", wal = path + "-wal";
  auto count = [&] {
    auto db = Database::open(path, {.read_only = true});
    REQUIRE(db);
    auto st = (*db)->prepare("SELECT count(*) FROM a");
    REQUIRE(st);
    REQUIRE(*st->step());
    return st->int64(0);
  };
  auto write = [&](int commits) {
    auto db = Database::open(path, {});
    REQUIRE(db);
    REQUIRE((*db)->exec("CREATE TABLE IF NOT EXISTS a(x)"));
    for (int i = 0; i < commits; ++i) REQUIRE((*db)->exec("INSERT INTO a VALUES (randomblob(3000))"));
  };
  write(3);  // a few frames
  REQUIRE(fs::exists(wal));
  CHECK(fs::file_size(wal) > 0);
  CHECK(count() == 3);  // read back from the WAL; a reader leaves it as it is
  CHECK(fs::file_size(wal) > 0);
  write(Database::kCloseCheckpointFrames);  // a frame or more each
  CHECK((!fs::exists(wal) || fs::file_size(wal) == 0));
  CHECK(count() == 3 + Database::kCloseCheckpointFrames);
}

TEST_CASE("a writer waits for another connection's lock, within its bound", "[state_db]") {
  TempDir dir;
  const std::string path = dir.path() + "/l.db";
  auto holder = Database::open(path, {});
  REQUIRE(holder);
  REQUIRE((*holder)->exec("CREATE TABLE a(x)"));
  auto waiter = Database::open(path, {.busy_limit = std::chrono::milliseconds(300)});
  REQUIRE(waiter);

  SECTION("the lock is released in time: the write goes through") {
    auto tx = Transaction::begin(**holder);
    REQUIRE(tx);
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      REQUIRE(tx->commit());
    });
    auto started = std::chrono::steady_clock::now();
    auto r = (*waiter)->exec("INSERT INTO a VALUES (1)");
    release.join();
    CHECK(r);
    CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(90));
    CHECK((*waiter)->busy_failures() == 0);
  }
  SECTION("the lock is held too long: the write fails, saying why, and nothing hangs") {
    auto tx = Transaction::begin(**holder);
    REQUIRE(tx);
    auto started = std::chrono::steady_clock::now();
    auto r = (*waiter)->exec("INSERT INTO a VALUES (1)");
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("locked"));
    CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(300));
    CHECK((*waiter)->busy_failures() == 1);
  }
}

TEST_CASE("a state directory on a local disk is accepted", "[state_db]") {
  // Network filesystems cannot be mounted here; the refusal is a lookup of
  // the filesystem's type that this case runs on the local side.
  TempDir dir;
  UniqueFd root(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CHECK(refuse_network_filesystem(root.get(), dir.path()));
}

TEST_CASE("runs: transitions, summary rows and queries", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  std::vector<LedgerEntry> batch = {entry("run_1", "queued"), entry("run_1", "started"), entry("run_2", "queued"),
                                    entry("run_1", "completed"), entry("run_3", "queued", "d_one", "sess_b")};
  auto refused = db->apply(batch);
  REQUIRE(refused);
  CHECK(refused->empty());

  auto one = db->find_run("run_1");
  REQUIRE(one);
  REQUIRE(*one);
  CHECK((*one)->state == "completed");
  CHECK((*one)->ended());
  CHECK((*one)->outcome == json{{"stopReason", "end_turn"}});
  CHECK((*one)->requestId == 7);
  CHECK(!(*one)->queuedAt.empty());
  CHECK(!(*one)->startedAt.empty());
  CHECK(*db->find_run("run_none") == std::nullopt);

  auto all = db->runs();
  REQUIRE(all);
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].runId == "run_1");
  CHECK((*all)[2].runId == "run_3");
  StateDb::RunFilter two;
  two.limit = 2;
  auto newest = db->runs(two);
  REQUIRE(newest->size() == 2);
  CHECK((*newest)[0].runId == "run_2");
  StateDb::RunFilter b;
  b.session_id = "sess_b";
  auto of_b = db->runs(b);
  REQUIRE(of_b->size() == 1);
  CHECK((*of_b)[0].runId == "run_3");

  auto steps = db->transitions("run_1");
  REQUIRE(steps);
  REQUIRE(steps->size() == 3);
  CHECK((*steps)[2].event == "completed");
  CHECK((*steps)[2].extra == json{{"stopReason", "end_turn"}});
}

TEST_CASE("a run's queued entry makes its row, and one for a row already there goes through the upsert", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  auto other = open_db(dir.path());
  REQUIRE(db->apply(std::vector{entry("run_1", "queued")}));
  auto first = *db->find_run("run_1");
  REQUIRE(first);
  CHECK(first->state == "queued");
  CHECK(!first->queuedAt.empty());
  CHECK(first->startedAt.empty());
  CHECK(first->requestId == 7);
  // Queued again by another process, which knows more of it: still one
  // row, brought up to date, and two transitions.
  LedgerEntry again = entry("run_1", "queued", "d_two");
  again.name = "build";
  REQUIRE(other->apply(std::vector{again}));
  auto row = *db->find_run("run_1");
  REQUIRE(row);
  CHECK(row->name == std::optional<std::string>("build"));
  CHECK(row->daemon == "d_two");
  CHECK(db->transitions("run_1")->size() == 2);
  // The first process still ends it on that row.
  REQUIRE(db->apply(std::vector{entry("run_1", "started", "d_two"), entry("run_1", "completed", "d_two")}));
  CHECK((*db->find_run("run_1"))->state == "completed");
  CHECK(db->runs()->size() == 1);
  CHECK(db->transitions("run_1")->size() == 4);
}

TEST_CASE("a start and an end written together change the run's row once, and come apart when the row changed meanwhile", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  auto other = open_db(dir.path());
  REQUIRE(db->apply(std::vector{entry("run_1", "queued"), entry("run_2", "queued")}));
  auto paired = [&](const LedgerEntry& start, const LedgerEntry& end, const char* row_between) {
    auto tx = Transaction::begin(db->db());
    REQUIRE(tx);
    auto s = db->apply_start_before_end(start);
    REQUIRE(s);
    CHECK(*s);
    CHECK((*db->find_run(start.runId))->state == row_between);
    auto e = db->apply_end_after_start(end, start);
    REQUIRE(e);
    REQUIRE(tx->commit());
    return *e;
  };
  LedgerEntry start = entry("run_1", "started");
  start.time = "2026-12-04T10:00:00.000Z";
  // Until the end, the row still says queued: its start comes with its end.
  CHECK(paired(start, entry("run_1", "completed"), "queued"));
  auto one = *db->find_run("run_1");
  REQUIRE(one);
  CHECK(one->state == "completed");
  CHECK(one->startedAt == "2026-12-04T10:00:00.000Z");
  CHECK(!one->endedAt.empty());
  CHECK(one->outcome == json{{"stopReason", "end_turn"}});
  auto moves = db->transitions("run_1");
  REQUIRE(moves);
  REQUIRE(moves->size() == 3);
  CHECK((*moves)[1].event == "started");
  CHECK((*moves)[1].time == "2026-12-04T10:00:00.000Z");
  CHECK((*moves)[2].event == "completed");
  // run_2's row now says another daemon serves it: the pair falls back to
  // a start and an end of their own, and the row still gets both.
  REQUIRE(other->db().exec("UPDATE runs SET daemon = 'd_two' WHERE run_id = 'run_2'"));
  LedgerEntry start2 = entry("run_2", "started");
  start2.time = "2026-12-04T11:00:00.000Z";
  CHECK(paired(start2, entry("run_2", "completed"), "queued"));
  auto two = *db->find_run("run_2");
  REQUIRE(two);
  CHECK(two->state == "completed");
  CHECK(two->startedAt == "2026-12-04T11:00:00.000Z");
  CHECK(two->daemon == "d_one");
  CHECK(db->transitions("run_2")->size() == 3);
  // A run that ended already refuses the end of a pair, as any second end.
  {
    auto tx = Transaction::begin(db->db());
    REQUIRE(tx);
    REQUIRE(db->apply_start_before_end(entry("run_1", "started")));
    auto again = db->apply_end_after_start(entry("run_1", "failed"), entry("run_1", "started"));
    REQUIRE(again);
    CHECK_FALSE(*again);
  }  // not committed
  CHECK((*db->find_run("run_1"))->state == "completed");
  CHECK(db->transitions("run_1")->size() == 3);
}

TEST_CASE("a second end of a run is refused by the database, not only by our code", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  REQUIRE(db->apply(std::vector{entry("run_1", "queued"), entry("run_1", "completed")}));

  // Through our code: refused and reported, the first end stands, the rest
  // of the batch is written.
  auto refused = db->apply(std::vector{entry("run_1", "failed"), entry("run_2", "queued")});
  REQUIRE(refused);
  CHECK(*refused == std::vector<std::string>{"run_1"});
  CHECK((*db->find_run("run_1"))->state == "completed");
  CHECK(*db->find_run("run_2") != std::nullopt);

  // Straight SQL, as a bug or another program might write it.
  auto raw = db->db().exec(
      "INSERT INTO transitions(run_seq, event, time, entry, terminal) "
      "SELECT seq, 'cancelled', 't', '{}', 1 FROM runs WHERE run_id = 'run_1'");
  REQUIRE_FALSE(raw);
  CHECK_THAT(raw.error().message, Catch::Contains("UNIQUE"));
}

TEST_CASE("a later transition that says more of its run than the row does updates the row, as one that says the same does", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  // run_1: every entry says the same of the run. run_2: its queued entry
  // had no name nor host session, its start came from another daemon, and
  // its end names the host's session.
  LedgerEntry named_start = entry("run_2", "started", "d_two");
  named_start.name = "build";
  LedgerEntry host_end = entry("run_2", "completed", "d_two");
  host_end.hostSession = "agent:main:1";
  REQUIRE(db->apply(std::vector{entry("run_1", "queued"), entry("run_2", "queued"), entry("run_1", "started"),
                                named_start, entry("run_1", "completed"), host_end}));
  auto one = *db->find_run("run_1");
  REQUIRE(one);
  CHECK(one->state == "completed");
  CHECK(!one->startedAt.empty());
  CHECK(one->outcome == json{{"stopReason", "end_turn"}});
  CHECK(one->daemon == "d_one");
  auto two = *db->find_run("run_2");
  REQUIRE(two);
  CHECK(two->state == "completed");
  CHECK(!two->startedAt.empty());
  CHECK(two->name == std::optional<std::string>("build"));
  CHECK(two->hostSession == std::optional<std::string>("agent:main:1"));
  CHECK(two->daemon == "d_two");
  CHECK(db->transitions("run_2")->size() == 3);
  // A second end is refused on either way in.
  auto refused = db->apply(std::vector{entry("run_1", "failed"), entry("run_2", "failed", "d_two")});
  REQUIRE(refused);
  CHECK(*refused == std::vector<std::string>{"run_1", "run_2"});
  CHECK((*db->find_run("run_2"))->state == "completed");
}

TEST_CASE("a transition stores only what its run's row does not say, and reads back whole as it was written",
          "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  auto stored = [&](const std::string& run) {
    auto st = db->db().prepare(
        "SELECT t.entry FROM transitions t JOIN runs r ON r.seq = t.run_seq WHERE r.run_id = ?1 ORDER BY t.rowid");
    REQUIRE(st);
    st->bind(1, run);
    std::vector<std::string> out;
    while (*st->step()) out.push_back(st->text(0));
    return out;
  };
  auto lines = [&](const std::string& run) {
    std::vector<std::string> out;
    auto read = db->transitions(run);
    INFO((read ? "" : read.error().message));
    REQUIRE(read);
    for (const auto& e : *read) out.push_back(e.to_line());
    return out;
  };
  // run_1 says the same of itself in every entry: each keeps its own fields.
  std::vector<LedgerEntry> one{entry("run_1", "queued"), entry("run_1", "started"), entry("run_1", "completed")};
  REQUIRE(db->apply(one));
  CHECK(stored("run_1") == std::vector<std::string>{"{}", "{}", R"({"stopReason":"end_turn"})"});
  CHECK(lines("run_1") == std::vector<std::string>{one[0].to_line(), one[1].to_line(), one[2].to_line()});

  // run_2's row changes under its earlier transitions: a start from
  // another daemon names the session, and its end names the host's. Each
  // transition still reads as it was written, not as the row says now.
  LedgerEntry queued = entry("run_2", "queued");
  LedgerEntry named_start = entry("run_2", "started", "d_two");
  named_start.name = "build";
  LedgerEntry host_end = entry("run_2", "failed", "d_two");
  host_end.hostSession = "agent:main:1";
  host_end.extra = {{"error", {{"code", -32603}, {"message", "adapter exited"}}}};
  REQUIRE(db->apply(std::vector{queued}));
  REQUIRE(db->apply(std::vector{named_start, host_end}));
  CHECK(lines("run_2") == std::vector<std::string>{queued.to_line(), named_start.to_line(), host_end.to_line()});
  auto follow = db->transitions_after(0, 0);
  REQUIRE(follow);
  REQUIRE(follow->size() == 6);
  CHECK(follow->at(3).second.to_line() == queued.to_line());
  CHECK(follow->at(5).second.to_line() == host_end.to_line());

  // An entry whose own fields include a common one is kept whole.
  LedgerEntry odd = entry("run_3", "queued");
  odd.extra = {{"harness", "other"}};
  REQUIRE(db->apply(std::vector{odd}));
  CHECK(stored("run_3") == std::vector<std::string>{odd.to_line()});
}

TEST_CASE("a run's row written again by another process meanwhile is found by its id, not by the seq remembered",
          "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  auto other = open_db(dir.path());
  REQUIRE(db->apply(std::vector{entry("run_1", "queued"), entry("run_2", "queued")}));
  // Another process removes run_1 and records it anew, under a new seq;
  // the old one now holds another run.
  REQUIRE(other->db().exec("DELETE FROM runs WHERE run_id = 'run_1'"));
  REQUIRE(other->db().exec("INSERT INTO runs(seq, run_id, state) VALUES (1, 'run_3', 'queued')"));
  REQUIRE(other->apply(std::vector{entry("run_1", "queued")}));
  REQUIRE(db->apply(std::vector{entry("run_1", "started"), entry("run_2", "started"), entry("run_1", "completed")}));
  auto one = *db->find_run("run_1");
  REQUIRE(one);
  CHECK(one->state == "completed");
  CHECK(!one->startedAt.empty());
  CHECK((*db->find_run("run_2"))->state == "started");
  CHECK((*db->find_run("run_3"))->state == "queued");
  CHECK(db->transitions("run_1")->size() == 3);
  // A second end is still refused.
  auto refused = db->apply(std::vector{entry("run_1", "failed")});
  REQUIRE(refused);
  CHECK(*refused == std::vector<std::string>{"run_1"});
}

TEST_CASE("runs of dead daemons are interrupted once, even by two processes at once", "[state_db]") {
  TempDir dir;
  {
    auto db = open_db(dir.path());
    REQUIRE(db->apply(std::vector{entry("run_dead", "queued", "d_dead"), entry("run_dead", "started", "d_dead"),
                                  entry("run_live", "queued", "d_live"), entry("run_done", "queued", "d_dead"),
                                  entry("run_done", "completed", "d_dead")}));
  }
  auto alive = [](const std::string& daemon) { return daemon == "d_live"; };
  // Two connections (as two harnessd processes starting after a crash),
  // recovering at the same moment.
  std::atomic<int> go{0};
  std::vector<LedgerEntry> written[2];
  std::string errors[2];
  std::unique_ptr<StateDb> dbs[2] = {open_db(dir.path()), open_db(dir.path())};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      ++go;
      while (go < 2) std::this_thread::yield();
      auto r = dbs[i]->interrupt_orphans(alive, "d_new" + std::to_string(i), acp::iso_time());
      if (r) {
        written[i] = *r;
      } else {
        errors[i] = r.error().message;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  CHECK(written[0].size() + written[1].size() == 1);
  auto db = open_db(dir.path());
  auto dead = *db->find_run("run_dead");
  CHECK(dead->state == "interrupted");
  CHECK_THAT(dead->outcome.value("reason", ""), Catch::Contains("d_dead"));
  CHECK((*db->find_run("run_live"))->state == "queued");
  CHECK((*db->find_run("run_done"))->state == "completed");
  CHECK(db->transitions("run_dead")->size() == 3);
}

TEST_CASE("session records are saved, replaced and listed", "[state_db]") {
  TempDir dir;
  auto db = open_db(dir.path());
  json a = {{"sessionId", "sess_a"}, {"name", "daily"}, {"closed", false}, {"updatedAt", "t1"}};
  json b = {{"sessionId", "sess_b"}, {"name", nullptr}, {"closed", true}, {"updatedAt", "t1"}};
  REQUIRE(db->save_session(a));
  REQUIRE(db->save_session(b));
  a["closed"] = true;
  REQUIRE(db->save_session(a));
  auto got = db->session("sess_a");
  REQUIRE(got);
  REQUIRE(*got);
  CHECK(**got == a);
  CHECK(*db->session("sess_none") == std::nullopt);
  auto all = db->sessions();
  REQUIRE(all->size() == 2);
  CHECK((*all)[0]["sessionId"] == "sess_a");
  CHECK_FALSE(db->save_session(json{{"name", "x"}}));
}

TEST_CASE("a session's lease: held by one live instance, taken over from a dead one", "[state_db][lease]") {
  TempDir dir;
  auto db = open_db(dir.path());
  std::set<std::string> live = {"d_a", "d_b"};
  auto alive = [&](const std::string& i) { return live.count(i) > 0; };
  auto lease = [](std::string id, std::string owner, std::optional<std::string> name = std::nullopt) {
    return StateDb::Lease{std::move(id), std::move(name), std::move(owner), 42, "t"};
  };
  auto in_tx = [&](auto fn) {
    auto tx = Transaction::begin(db->db());
    REQUIRE(tx);
    auto r = fn();
    REQUIRE(tx->commit());
    return r;
  };
  // Taken, then refused to another live instance, kept for its own.
  CHECK(*in_tx([&] { return db->take_lease(lease("sess_1", "d_a"), alive); }) == std::nullopt);
  auto held = *in_tx([&] { return db->take_lease(lease("sess_1", "d_b"), alive); });
  REQUIRE(held);
  CHECK(held->owner == "d_a");
  CHECK(held->pid == 42);
  CHECK(*in_tx([&] { return db->take_lease(lease("sess_1", "d_a"), alive); }) == std::nullopt);
  // Its owner dies: the next to ask takes it.
  live.erase("d_a");
  CHECK(*in_tx([&] { return db->take_lease(lease("sess_1", "d_b"), alive); }) == std::nullopt);
  CHECK((*db->leases())[0].owner == "d_b");
  // Released only by its owner.
  REQUIRE(db->release_leases("d_a", "sess_1"));
  CHECK(db->leases()->size() == 1);
  REQUIRE(db->release_leases("d_b", "sess_1"));
  CHECK(db->leases()->empty());

  // By name: a new one is created and leased; then that one is held.
  auto first = *in_tx([&] { return db->claim_name(lease("sess_new", "d_b", "daily"), alive); });
  CHECK(first.created);
  CHECK(first.session_id == "sess_new");
  live.insert("d_c");
  auto second = *in_tx([&] { return db->claim_name(lease("sess_other", "d_c", "daily"), alive); });
  CHECK_FALSE(second.created);
  CHECK(second.session_id == "sess_new");
  REQUIRE(second.held);
  CHECK(second.held->owner == "d_b");
  // Its owner lets go; the newest open record of the name is reopened.
  REQUIRE(db->release_leases("d_b"));
  REQUIRE(db->save_session(json{{"sessionId", "sess_old"}, {"name", "daily"}, {"closed", false}, {"updatedAt", "t1"}}));
  REQUIRE(db->save_session(json{{"sessionId", "sess_new"}, {"name", "daily"}, {"closed", false}, {"updatedAt", "t2"}}));
  REQUIRE(db->save_session(json{{"sessionId", "sess_gone"}, {"name", "daily"}, {"closed", true}, {"updatedAt", "t3"}}));
  auto third = *in_tx([&] { return db->claim_name(lease("sess_x", "d_c", "daily"), alive); });
  CHECK_FALSE(third.created);
  CHECK(third.session_id == "sess_new");
  CHECK_FALSE(third.held);
  // Dead instances' leases are dropped at start.
  live.erase("d_c");
  REQUIRE(db->drop_dead_leases(alive));
  CHECK(db->leases()->empty());
}

TEST_CASE("two connections claiming one new name at the same moment create one session", "[state_db][lease]") {
  TempDir dir;
  open_db(dir.path());
  auto alive = [](const std::string&) { return true; };
  constexpr int kConnections = 4;
  std::vector<std::unique_ptr<StateDb>> dbs;
  for (int i = 0; i < kConnections; ++i) dbs.push_back(open_db(dir.path()));
  std::atomic<int> go{0};
  std::vector<std::optional<StateDb::NameClaim>> claims(kConnections);
  std::vector<std::string> errors(kConnections);
  std::vector<std::thread> threads;
  for (int i = 0; i < kConnections; ++i) {
    threads.emplace_back([&, i] {
      ++go;
      while (go < kConnections) std::this_thread::yield();
      auto tx = Transaction::begin(dbs[static_cast<std::size_t>(i)]->db());
      if (!tx) {
        errors[static_cast<std::size_t>(i)] = tx.error().message;
        return;
      }
      StateDb::Lease me{"sess_" + std::to_string(i), "race", "d_" + std::to_string(i), i + 1, "t"};
      auto claim = dbs[static_cast<std::size_t>(i)]->claim_name(me, alive);
      if (claim && tx->commit()) claims[static_cast<std::size_t>(i)] = *claim;
      if (!claim) errors[static_cast<std::size_t>(i)] = claim.error().message;
    });
  }
  for (auto& t : threads) t.join();
  int created = 0;
  std::set<std::string> ids;
  for (int i = 0; i < kConnections; ++i) {
    INFO(errors[static_cast<std::size_t>(i)]);
    REQUIRE(claims[static_cast<std::size_t>(i)]);
    const auto& c = *claims[static_cast<std::size_t>(i)];
    created += c.created ? 1 : 0;
    ids.insert(c.session_id);
    CHECK(c.created != c.held.has_value());
  }
  CHECK(created == 1);
  CHECK(ids.size() == 1);
}

TEST_CASE("what each harness offered is kept apart from the records, newest first", "[state_db]") {
  TempDir dir;
  {
    auto db = open_db(dir.path());
    json a = {{"sessionId", "sess_a"}, {"harness", "claude"}, {"updatedAt", "2026-11-02T00:00:00.000Z"},
              {"adapterOptions", json::array({"new"})}};
    json b = {{"sessionId", "sess_b"}, {"harness", "claude"}, {"updatedAt", "2026-11-01T00:00:00.000Z"},
              {"adapterOptions", json::array({"old"})}};
    json c = {{"sessionId", "sess_c"}, {"harness", "opencode"}, {"updatedAt", "2026-11-01T00:00:00.000Z"},
              {"adapterOptions", json::array({"oc"})}};
    json d = {{"sessionId", "sess_d"}, {"harness", "codex"}, {"updatedAt", "2026-11-03T00:00:00.000Z"}};
    for (const auto& r : {a, b, c, d}) REQUIRE(db->save_session(r));
  }
  auto db = open_db(dir.path());  // as the next start reads it
  auto offered = db->harness_options();
  REQUIRE(offered);
  CHECK(offered->size() == 2);
  CHECK((*offered)["claude"] == json::array({"new"}));
  CHECK((*offered)["opencode"] == json::array({"oc"}));
}

TEST_CASE("retention lets go of ended runs by age and count, never of one that has not ended", "[state_db][retention]") {
  TempDir dir;
  auto db = open_db(dir.path());
  auto at = [](std::string run, std::string event, std::string time, std::string session) {
    LedgerEntry e = entry(run, event, "d_one", session);
    e.time = std::move(time);
    return e;
  };
  // Oldest first: an old run still open (its daemon alive), two old ended
  // ones, and three recent ones, the last still running.
  REQUIRE(db->apply(std::vector{
      at("run_open_old", "queued", "2020-01-01T00:00:00.000Z", "sess_old"),
      at("run_old1", "queued", "2020-01-02T00:00:00.000Z", "sess_old"),
      at("run_old1", "completed", "2020-01-02T00:00:01.000Z", "sess_old"),
      at("run_old2", "queued", "2020-01-03T00:00:00.000Z", "sess_gone"),
      at("run_old2", "failed", "2020-01-03T00:00:01.000Z", "sess_gone"),
      at("run_new1", "queued", "2026-11-30T00:00:00.000Z", "sess_new"),
      at("run_new1", "completed", "2026-11-30T00:00:01.000Z", "sess_new"),
      at("run_new2", "queued", "2026-11-30T01:00:00.000Z", "sess_new"),
      at("run_new2", "cancelled", "2026-11-30T01:00:01.000Z", "sess_new"),
      at("run_new3", "queued", "2026-11-30T02:00:00.000Z", "sess_new"),
  }));
  for (const char* id : {"sess_old", "sess_gone", "sess_new", "sess_empty"}) {
    REQUIRE(db->save_session(json{{"sessionId", id}, {"closed", std::string(id) != "sess_new"}, {"updatedAt", "t"}}));
  }
  auto ids = [&](const StateDb::Expiry& e) {
    std::vector<std::string> out;
    auto runs = db->expired_runs(e, 0, 100);
    REQUIRE(runs);
    for (auto& [seq, id] : *runs) out.push_back(id);
    return out;
  };
  using V = std::vector<std::string>;
  // By age: the old ended runs.
  auto by_age = *db->expiry("2026-01-01T00:00:00.000Z", 0);
  CHECK(ids(by_age) == V{"run_old1", "run_old2"});
  // By count: all but the newest two, if ended.
  auto by_count = *db->expiry("", 2);
  CHECK(ids(by_count) == V{"run_old1", "run_old2", "run_new1"});
  // Neither bound: nothing; a bound above the count: nothing.
  CHECK(ids(*db->expiry("", 0)).empty());
  CHECK(ids(*db->expiry("", 100)).empty());
  // Paging by number.
  auto first_page = db->expired_runs(by_count, 0, 1);
  auto& first = *first_page;
  REQUIRE(first.size() == 1);
  auto rest = db->expired_runs(by_count, first[0].first, 10);
  CHECK(rest->size() == 2);
  // Sessions: closed, and every run of theirs expired (or none at all).
  CHECK(*db->expired_sessions(by_age, "", 100) == V{"sess_empty", "sess_gone"});
  // Deleting: an open run is refused even when asked for.
  CHECK(*db->delete_runs({"run_old1", "run_old2", "run_open_old", "run_new3"}) == 2);
  CHECK(*db->find_run("run_old1") == std::nullopt);
  CHECK(db->transitions("run_old1")->empty());
  CHECK((*db->find_run("run_open_old"))->state == "queued");
  CHECK(*db->delete_session("sess_gone"));
  CHECK_FALSE(*db->delete_session("sess_old"));  // a run of it is left
  CHECK_FALSE(*db->delete_session("sess_new"));  // open
  CHECK(*db->session("sess_gone") == std::nullopt);
}

TEST_CASE("a state directory written before the database is imported once, and its files kept aside",
          "[state_db]") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  harnessd::test::copy_state_dir(std::string(TESTS_DIR) + "/worker/fixtures/state-before-sqlite", state);
  const std::string ledger_text = read_file(state + "/ledger.jsonl");

  // What the files said, through the index the daemon builds from them.
  RunIndex before;
  for (const auto& line : parse_jsonl(ledger_text).lines) before.apply(*LedgerEntry::from_json(line));
  REQUIRE(before.order().size() == 6);

  auto db = open_db(state);
  UniqueFd root(::open(state.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto imported = db->import_files(root.get());
  INFO((imported ? "" : imported.error().message));
  REQUIRE(imported);
  REQUIRE(*imported);
  CHECK((*imported)->ledger_lines == 17);
  CHECK((*imported)->bad_lines == 0);
  CHECK((*imported)->second_ends == 0);
  CHECK((*imported)->sessions == 4);

  // Every run reads back the same; the open run of the killed daemon is
  // still open (recovery, not the import, ends it).
  auto after = db->runs();
  REQUIRE(after);
  REQUIRE(after->size() == before.order().size());
  for (std::size_t i = 0; i < after->size(); ++i) {
    const RunRecord& old = *before.find(before.order()[i]);
    CHECK((*after)[i].to_json() == old.to_json());
  }
  CHECK(std::count_if(after->begin(), after->end(), [](const RunRecord& r) { return !r.ended(); }) == 1);
  auto daily = db->sessions();
  REQUIRE(daily->size() == 4);

  // The old files are kept, moved aside; the transcripts stay where
  // session/load reads them.
  CHECK_FALSE(fs::exists(state + "/ledger.jsonl"));
  CHECK(read_file(state + "/pre-sqlite/ledger.jsonl") == ledger_text);
  std::size_t records = 0, transcripts = 0;
  for (const auto& e : fs::directory_iterator(state + "/pre-sqlite/sessions")) records += e.path().extension() == ".json";
  for (const auto& e : fs::directory_iterator(state + "/sessions")) {
    transcripts += e.path().extension() == ".jsonl";
    CHECK(e.path().extension() != ".json");
  }
  CHECK(records == 4);
  CHECK(transcripts > 0);

  // Nothing is imported twice, not even when the files come back (a crash
  // between the commit and the move).
  fs::rename(state + "/pre-sqlite/ledger.jsonl", state + "/ledger.jsonl");
  auto again = db->import_files(root.get());
  REQUIRE(again);
  CHECK(*again == std::nullopt);
  CHECK(db->transitions((*after)[0].runId)->size() == 3);
  CHECK(fs::exists(state + "/pre-sqlite/ledger.jsonl"));
}
