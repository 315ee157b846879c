// The ledger format, the run index, tolerant reading, and the store's
// writer, recovery and failure paths, in-process.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "acp/loop.h"
#include "daemon_process.h"
#include "worker/ledger.h"
#include "worker/store.h"
#include "worker/store_writer.h"

using namespace harnessd;
using namespace harnessd::worker;
using nlohmann::json;

namespace {
LedgerEntry entry(const std::string& run, const std::string& event, const std::string& daemon = "d_x") {
  LedgerEntry e;
  e.time = acp::iso_time();
  e.event = event;
  e.runId = run;
  e.sessionId = "sess_a";
  e.harness = "fake";
  e.requestId = 7;
  e.daemon = daemon;
  return e;
}

// What a lane is made with: completions on `loop`, no budget, `dir` open.
struct LaneParts {
  LaneParts(acp::Loop& loop, const std::string& dir)
      : completions(loop), root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    REQUIRE(root.get() >= 0);
  }
  WriteCompletions completions;
  WriteBudget budget{0};
  UniqueFd root;
};

// Runs the loop until `done` is set. The store's completion handle does not
// keep a loop alive by itself (the daemon waits for it explicitly), so a
// timer does, while we wait.
void run_until(acp::Loop& loop, const bool& done) {
  acp::Timer keep_alive(loop);
  while (!done) {
    keep_alive.start(std::chrono::milliseconds(50), [] {});
    uv_run(loop.get(), UV_RUN_ONCE);
  }
}
}  // namespace

TEST_CASE("ledger lines round-trip and keep their own fields") {
  LedgerEntry e = entry("run_1", run_event::kCompleted);
  e.name = "n";
  e.extra = {{"stopReason", "end_turn"}};
  json j = e.to_json();
  CHECK(j["stopReason"] == "end_turn");
  CHECK(j["requestId"] == 7);
  auto back = LedgerEntry::from_json(j);
  REQUIRE(back);
  CHECK(back->extra == json{{"stopReason", "end_turn"}});
  CHECK(back->name == "n");
  CHECK_FALSE(LedgerEntry::from_json(json{{"event", "queued"}}));  // no runId
}

TEST_CASE("a ledger entry written as text is the object to_json builds") {
  LedgerEntry e = entry("run_1", run_event::kFailed);
  SECTION("plain") {}
  SECTION("a name and host session that need escapes, and broken UTF-8") {
    e.name = "quote \" back\\slash \n tab\t \x01 caf\xc3\xa9 \xff";
    e.hostSession = "h\u2028";
  }
  SECTION("a string request id and fields of the event's own") {
    e.requestId = "req \"7\"";
    e.extra = {{"error", {{"code", -32603}, {"message", "bo\"om"}}}, {"partialOutput", "x\ny"}, {"n", 18446744073709551615u}};
  }
  SECTION("an event's field named like a common one takes its place") {
    e.requestId = nullptr;
    e.extra = {{"time", 5}, {"name", "from extra"}};
  }
  const std::string line = e.to_line();
  auto parsed = json::parse(line);  // strict: the text is valid JSON and UTF-8
  CHECK(parsed == json::parse(e.to_json().dump(-1, ' ', false, json::error_handler_t::replace)));
  CHECK(line.find('\n') == std::string::npos);
  for (const auto& [k, v] : parsed.items()) {  // each member once
    const std::string member = json(k).dump() + ":";
    CHECK(line.find(member) == line.rfind(member));
  }
}

TEST_CASE("the run index follows a run to its end and counts extra ends") {
  RunIndex index;
  index.apply(entry("r", run_event::kQueued));
  index.apply(entry("r", run_event::kStarted));
  CHECK_FALSE(index.find("r")->ended());
  LedgerEntry end = entry("r", run_event::kTimeout);
  end.extra = {{"timeoutMs", 5}};
  index.apply(end);
  const RunRecord& r = *index.find("r");
  CHECK(r.state == "timeout");
  CHECK(r.ended());
  CHECK(r.to_json()["timeoutMs"] == 5);
  index.apply(entry("r", run_event::kCompleted));  // a second end: counted, not applied
  CHECK(index.find("r")->terminal_entries == 2);
  CHECK(index.find("r")->state == "timeout");
}

TEST_CASE("a JSONL file cut by a crash is read up to the cut") {
  test::TempDir dir;
  std::string path = dir.write("x.jsonl", "{\"a\":1}\n{\"b\":2}\n{\"c\":");
  JsonlRead r = read_jsonl(path);
  CHECK(r.lines.size() == 2);
  CHECK(r.bad_lines == std::vector<std::size_t>{3});
  CHECK(r.cut);
  CHECK(read_jsonl(dir.path() + "/missing").missing);
}

TEST_CASE("the store writes in order per file and reports on the loop") {
  test::TempDir dir;
  acp::Loop loop;
  {
    auto store = Store::open(loop, dir.path());
    REQUIRE_FALSE(store->unusable());
    for (int i = 0; i < 100; ++i) store->append("sessions/s1.jsonl", std::to_string(i) + "\n");
    store->record(entry("run_a", run_event::kQueued));
    // Seen at once, before the database writer committed it.
    CHECK(store->find_run("run_a")->state == "queued");
    CHECK(store->list_runs({}).total == 1);
    bool done = false;
    store->barrier_all([&](Expected<void> r) {
      CHECK(r);
      done = true;
    });
    run_until(loop, done);
    std::string expected;
    for (int i = 0; i < 100; ++i) expected += std::to_string(i) + "\n";
    CHECK(test::read_file(dir.path() + "/sessions/s1.jsonl") == expected);
    CHECK(store->find_run("run_a")->state == "queued");
    CHECK(store->list_runs({}).runs.size() == 1);
  }
  CHECK(loop.close());
}

TEST_CASE("a lane goes on past a job whose result comes later, and reports the jobs after it only after that result") {
  test::TempDir dir;
  acp::Loop loop;
  {
    LaneParts parts(loop, dir.path());
    std::vector<std::string> heard;
    bool all_heard = false;
    std::optional<StoreWriter::Later> later;
    int ran = 0;
    {
      StoreWriter lane(parts.completions, parts.root.get(), parts.budget, [](std::size_t) {});
      std::vector<StoreWriter::Job> batch;
      batch.push_back(StoreWriter::Job{[&]() -> Expected<void> {
                                         ran = 1;
                                         later = lane.answer_later();
                                         return {};
                                       },
                                       [&](Expected<void> r) { heard.push_back(r ? "first" : r.error().message); }});
      // Behind it: an append, and a barrier like the one before a host's
      // answer.
      batch.push_back(StoreWriter::Job::appending(
          "after.txt", "written\n", [&](Expected<void> r) { heard.push_back(r ? "append" : "append failed"); }, {}));
      batch.push_back(StoreWriter::Job{[&]() -> Expected<void> {
                                         ran = 3;
                                         return {};
                                       },
                                       [&](Expected<void>) {
                                         heard.push_back("barrier");
                                         all_heard = true;
                                       }});
      // On a thread of its own, as the writer runs it.
      std::thread writer([&] { lane.run_batch(batch); });
      writer.join();
      // The lane did not wait for the first job's result.
      REQUIRE(ran == 3);
      REQUIRE(later);
      CHECK(test::read_file(dir.path() + "/after.txt") == "written\n");
      // Nothing is reported ahead of the first job.
      acp::Timer tick(loop);
      bool ticked = false;
      tick.start(std::chrono::milliseconds(100), [&] { ticked = true; });
      run_until(loop, ticked);
      CHECK(heard.empty());
      // From another thread, as the database writer gives it.
      std::thread giver([&] { (*later)(Error{"the database is full"}); });
      giver.join();
      run_until(loop, all_heard);
    }
    CHECK(heard == std::vector<std::string>{"the database is full", "append", "barrier"});
  }
  CHECK(loop.close());
}

TEST_CASE("appends around a pure job or an append's follow-up are written at once, and heard in job order") {
  test::TempDir dir;
  acp::Loop loop;
  {
    LaneParts parts(loop, dir.path());
    const std::string file = dir.path() + "/f.txt";
    std::vector<std::string> heard;
    std::map<std::string, std::string> seen;  // what each job found in the file
    bool all_heard = false;
    {
      StoreWriter lane(parts.completions, parts.root.get(), parts.budget, [](std::size_t) {});
      auto append = [&](const std::string& name) {
        return StoreWriter::Job::appending("f.txt", name + "\n", [&heard, name](Expected<void> r) {
          heard.push_back(r ? name : name + " failed");
        }, {});
      };
      auto work = [&](const std::string& name, bool pure) {
        StoreWriter::Job job{[&seen, &file, name]() -> Expected<void> {
                               seen[name] = test::read_file(file);
                               return {};
                             },
                             [&heard, name](Expected<void>) { heard.push_back(name); }};
        job.pure = pure;
        return job;
      };
      std::vector<StoreWriter::Job> batch;
      batch.push_back(append("a"));
      batch.push_back(work("barrier", true));
      StoreWriter::Job b = append("b");
      b.then = [&](Expected<void> written) -> Expected<void> {
        seen["b"] = test::read_file(file);
        if (!written) return written;
        return Error{"b's follow-up failed"};
      };
      batch.push_back(std::move(b));
      batch.push_back(append("c"));
      batch.push_back(work("own", false));  // writes on its own: the appends before it are done, none after
      batch.push_back(append("d"));
      batch.push_back(StoreWriter::Job{[]() -> Expected<void> { return {}; }, [&](Expected<void>) { all_heard = true; }});
      std::thread writer([&] { lane.run_batch(batch); });
      writer.join();
      run_until(loop, all_heard);
    }
    CHECK(seen["barrier"] == "a\nb\nc\n");
    CHECK(seen["b"] == "a\nb\nc\n");
    CHECK(seen["own"] == "a\nb\nc\n");
    CHECK(test::read_file(file) == "a\nb\nc\nd\n");
    // The follow-up's result is the job's.
    CHECK(heard == std::vector<std::string>{"a", "barrier", "b failed", "c", "own", "d"});
  }
  CHECK(loop.close());
}

TEST_CASE("a write error reaches the caller and later writes go on failing cleanly") {
  test::TempDir dir;
  acp::Loop loop;
  {
    StoreOptions options;
    options.fail_after_bytes = 10;
    auto store = Store::open(loop, dir.path(), options);
    int failures = 0;
    bool done = false;
    store->append("sessions/s.jsonl", "0123456789abcdef\n", [&](Expected<void> r) {
      REQUIRE_FALSE(r);
      CHECK(r.error().message == "cannot write sessions/s.jsonl: No space left on device");
      ++failures;
    });
    store->barrier_all([&](Expected<void>) { done = true; });
    run_until(loop, done);
    CHECK(failures == 1);
  }
  CHECK(loop.close());
}

TEST_CASE("a state directory that cannot be created makes writes fail, not the store") {
  acp::Loop loop;
  {
    auto store = Store::open(loop, "/dev/null/state");
    REQUIRE(store->unusable());
    bool done = false;
    store->record(entry("r", run_event::kQueued), [&](Expected<void> r) {
      CHECK_FALSE(r);
      done = true;
    });
    run_until(loop, done);
  }
  CHECK(loop.close());
}

TEST_CASE("a daemon's lock file is created locked under another name, and one left unnamed by a killed process goes when old") {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/daemons");
  // Left by processes killed between creating their lock file and naming
  // it: an old one is removed at start, a fresh one may still be named.
  const std::string old_file = dir.path() + "/daemons/d_old.locking";
  const std::string fresh_file = dir.path() + "/daemons/d_fresh.locking";
  std::ofstream(old_file) << "1\n";
  std::ofstream(fresh_file) << "1\n";
  std::filesystem::last_write_time(old_file, std::filesystem::file_time_type::clock::now() - std::chrono::minutes(5));
  acp::Loop loop;
  {
    auto store = Store::open(loop, dir.path());
    REQUIRE_FALSE(store->unusable());
    std::vector<std::string> files, locks;
    for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/daemons")) {
      files.push_back(e.path().filename().string());
      if (e.path().extension() == ".lock") locks.push_back(files.back());
    }
    std::sort(files.begin(), files.end());
    REQUIRE(locks.size() == 1);
    const std::string mine = locks[0];
    CHECK(files == std::vector<std::string>{std::min(mine, std::string("d_fresh.locking")),
                                            std::max(mine, std::string("d_fresh.locking"))});
    // Held from the moment it has its name: another open file of it cannot
    // take the lock, so no process starting beside this one takes it for dead.
    int other = ::open((dir.path() + "/daemons/" + mine).c_str(), O_RDONLY);
    REQUIRE(other >= 0);
    CHECK(::flock(other, LOCK_EX | LOCK_NB) != 0);
    ::close(other);
  }
  CHECK(loop.close());
  CHECK_FALSE(std::filesystem::exists(dir.path() + "/daemons/d_old.locking"));
}

TEST_CASE("recovery ends the runs of dead daemons, never those of a live one") {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/daemons");
  // run_dead was recorded by an earlier harnessd, in a folder of its own.
  std::filesystem::create_directories(dir.path() + "/runs/run_dead");
  std::ofstream(dir.path() + "/runs/run_dead/events.jsonl") << "";
  // A live daemon: its lock is held (here, by this process).
  int live = ::open((dir.path() + "/daemons/d_live.lock").c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(::flock(live, LOCK_EX) == 0);
  {
    std::ofstream ledger(dir.path() + "/ledger.jsonl");
    ledger << entry("run_dead", run_event::kStarted, "d_gone").to_json().dump() << "\n";
    ledger << entry("run_live", run_event::kStarted, "d_live").to_json().dump() << "\n";
    ledger << entry("run_done", run_event::kQueued, "d_gone").to_json().dump() << "\n";
    ledger << entry("run_done", run_event::kCompleted, "d_gone").to_json().dump() << "\n";
  }
  acp::Loop loop;
  {
    auto store = Store::open(loop, dir.path());
    CHECK(store->find_run("run_dead")->state == "interrupted");
    CHECK(store->find_run("run_live")->state == "started");
    CHECK(store->find_run("run_done")->terminal_entries == 1);
    bool done = false;
    store->barrier_all([&](Expected<void>) { done = true; });
    run_until(loop, done);
    json result = json::parse(test::read_file(dir.path() + "/runs/run_dead/result.json"));
    CHECK(result["state"] == "interrupted");
  }
  ::close(live);
  CHECK(loop.close());
  CHECK(test::check_ledger(dir.path(), true).empty());
}
