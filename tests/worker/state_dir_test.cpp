// The state directory is harnessd's alone (issue 11): links planted in it
// are refused, never written through; loose modes are tightened and another
// user's directory is refused; a full disk and its return leave a ledger
// whose every line parses and whose every run has one terminal entry; runs
// that never started have a result.json too.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The queued run ids of a session, oldest first.
std::vector<std::string> queued_runs(Daemon& d, const std::string& sid, int id) {
  d.send(request(id, "_harnessd/runs/list", {{"sessionId", sid}, {"state", "queued"}}));
  std::vector<std::string> out;
  std::vector<json> seen;
  json reply = d.recv_reply(id, &seen);
  INFO(reply.dump() << " after " << json(seen).dump());
  for (const auto& r : reply["result"]["runs"]) out.push_back(r["runId"]);
  return out;
}

}  // namespace

TEST_CASE("a link planted where a session's segment was is refused, nothing is written through it") {
  TempDir outside;
  const std::string target = outside.write("elsewhere.jsonl", "");
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  int first = d.send_prompt(sid, "slow 1500");
  int second = d.send_prompt(sid, "echo planted");
  auto queued = queued_runs(d, sid, 1);
  REQUIRE(queued.size() == 1);
  std::string segment = d.state_dir() + "/segments/" + sid + ".jsonl";
  // The next run's request is recorded while the first runs; swap the
  // segment for a link to a file elsewhere.
  REQUIRE(eventually([&] { return read_file(segment).find(queued[0]) != std::string::npos; }, 5s));
  // In one step (a link renamed over it): between a remove and a symlink
  // the daemon could append, and create the file again.
  fs::create_symlink(target, segment + ".planted");
  fs::rename(segment + ".planted", segment);
  // Both runs had lines to write after the swap: both fail, saying why.
  for (int id : {first, second}) {
    json answer = d.recv_reply(id);
    INFO(answer.dump());
    REQUIRE(answer.contains("error"));
    CHECK(answer["error"]["code"] == -32016);
    CHECK(answer["error"]["message"].get<std::string>().find("segments/" + sid + ".jsonl is a symbolic link") !=
          std::string::npos);
  }
  CHECK(read_file(target).empty());  // nothing written through the link
  Ledger l = read_ledger(d.state_dir());
  REQUIRE(l.terminal[queued[0]].size() == 1);
  CHECK(l.terminal[queued[0]][0]["event"] == "failed");
  CHECK(l.terminal[queued[0]][0]["error"]["data"]["reason"] == "store");
  fs::remove(segment);
  // The daemon goes on.
  CHECK(d.prompt(sid, "echo after")["result"]["stopReason"] == "end_turn");
}

TEST_CASE("links planted for the state database, an old ledger, a transcript or daemons/ are never written through") {
  TempDir state, outside;
  std::string target = outside.write("target", "precious\n");
  SECTION("state.db: the database is refused, runs fail, the daemon serves") {
    fs::create_symlink(target, state.path() + "/state.db");
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    std::string sid = d.new_session();
    json r = d.prompt(sid, "echo x");
    REQUIRE(r.contains("error"));
    CHECK(r["error"]["code"] == -32016);
    CHECK(d.stderr_text().find("state.db is a symbolic link") != std::string::npos);
    std::string out;
    CHECK(run_cli("runs --state-dir " + state.path(), &out) != 0);
    CHECK(out.find("state.db is a symbolic link") != std::string::npos);
    fs::remove(state.path() + "/state.db");  // before the test support reads the ledger
  }
  SECTION("ledger.jsonl of an earlier harnessd: not imported through the link, which stays") {
    fs::create_symlink(target, state.path() + "/ledger.jsonl");
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    std::string sid = d.new_session();
    CHECK(d.prompt(sid, "echo x")["result"]["stopReason"] == "end_turn");
    CHECK(d.stderr_text().find("ledger.jsonl is a symbolic link") != std::string::npos);
    CHECK(fs::is_symlink(state.path() + "/ledger.jsonl"));
  }
  SECTION("daemons/: refused, no lock file is made at the link's target") {
    fs::create_directory_symlink(outside.path(), state.path() + "/daemons");
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    std::string sid = d.new_session();
    CHECK(d.prompt(sid, "echo x")["error"]["code"] == -32016);
    CHECK(d.stderr_text().find("daemons is a symbolic link") != std::string::npos);
  }
  SECTION("sessions/<id>.jsonl: the transcript is refused, the run still ends") {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    std::string sid = d.new_session();
    std::string transcript = state.path() + "/sessions/" + sid + ".jsonl";
    REQUIRE_FALSE(fs::exists(transcript));
    fs::create_symlink(target, transcript);
    CHECK(d.prompt(sid, "echo x")["result"]["stopReason"] == "end_turn");
    d.send(request(1, "session/close", {{"sessionId", sid}}));
    CHECK(d.recv_reply(1).contains("result"));
    CHECK(d.stderr_text().find("sessions/" + sid + ".jsonl is a symbolic link") != std::string::npos);
  }
  SECTION("the state directory itself: refused") {
    std::string link = outside.path() + "/link";
    fs::create_directory_symlink(state.path(), link);
    Daemon d(fake_config(), {}, link);
    d.initialize();
    std::string sid = d.new_session();
    CHECK(d.prompt(sid, "echo x")["error"]["code"] == -32016);
    CHECK(d.stderr_text().find("is a symbolic link") != std::string::npos);
    CHECK_FALSE(fs::exists(state.path() + "/state.db"));
  }
  CHECK(read_file(target) == "precious\n");
  CHECK(fs::is_regular_file(fs::symlink_status(target)));
  std::string listing;
  for (const auto& e : fs::directory_iterator(outside.path())) listing += e.path().filename().string() + " ";
  CHECK((listing == "target " || listing == "target link " || listing == "link target "));
}

TEST_CASE("recovery after kill -9 does not follow a link planted at the session's segment") {
  TempDir state, outside;
  std::string sid, run;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    d.send_prompt(sid, "slow 10000");
    REQUIRE(d.recv());  // the turn runs
    d.send(request(9, "_harnessd/sessions/list", json::object()));
    run = d.recv_reply(9)["result"]["sessions"][0]["activeRunId"];
    kill(d.pid(), SIGKILL);
    CHECK(d.wait_exit(5s) == 128 + SIGKILL);
  }
  std::string segment = state.path() + "/segments/" + sid + ".jsonl";
  const std::string target = outside.write("elsewhere.jsonl", "");
  fs::remove(segment);
  fs::create_symlink(target, segment);
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  d.send(request(1, "_harnessd/runs/get", {{"runId", run}}));
  CHECK(d.recv_reply(1)["result"]["run"]["state"] == "interrupted");
  CHECK(read_file(target).empty());
  CHECK(d.stderr_text().find("segments/" + sid + ".jsonl is a symbolic link") != std::string::npos);
}

TEST_CASE("loose modes are tightened at start, and harnessd runs refuses them before") {
  TempDir base;
  std::string state = base.path() + "/state";
  {
    Daemon d(fake_config(), {}, state);
    d.initialize();
    d.prompt(d.new_session(), "echo x");
  }
  fs::permissions(state, fs::perms::all);
  fs::permissions(state + "/runs", fs::perms::all);
  fs::permissions(state + "/sessions", fs::perms::all);
  fs::permissions(state + "/state.db", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                               fs::perms::group_write | fs::perms::others_read |
                                               fs::perms::others_write);
  std::string out;
  CHECK(run_cli("runs --state-dir " + state, &out) != 0);
  CHECK(out.find("can be written by other users") != std::string::npos);

  Daemon d(fake_config(), {}, state);
  d.initialize();
  CHECK(d.prompt(d.new_session(), "echo y")["result"]["stopReason"] == "end_turn");
  CHECK(mode_of(state) == 0700);
  CHECK(mode_of(state + "/runs") == 0700);
  CHECK(mode_of(state + "/sessions") == 0700);
  CHECK(mode_of(state + "/state.db") == 0600);
  CHECK(d.stderr_text().find("tightened") != std::string::npos);
  CHECK(run_cli("runs --state-dir " + state) == 0);
}

TEST_CASE("a state directory owned by another user is refused") {
  if (::geteuid() != 0) {
    WARN("skipped: giving a folder to another user needs root");
    return;
  }
  TempDir base;
  std::string state = base.path() + "/state";
  fs::create_directory(state);
  fs::permissions(state, fs::perms::owner_all);
  bool whole = false;
  SECTION("the directory itself") {
    REQUIRE(::chown(state.c_str(), 65534, 65534) == 0);
    whole = true;
  }
  SECTION("one of its folders") {
    fs::create_directory(state + "/runs");
    REQUIRE(::chown((state + "/runs").c_str(), 65534, 65534) == 0);
  }
  {
    Daemon d(fake_config(), {}, state);
    d.initialize();
    std::string sid = d.new_session();
    json r = d.prompt(sid, "echo x");
    REQUIRE(r.contains("error"));
    CHECK(r["error"]["code"] == -32016);
    CHECK(d.stderr_text().find("belongs to uid 65534") != std::string::npos);
    d.send(request(1, "session/list", json::object()));  // still serving
    CHECK(d.recv_reply(1).contains("result"));
  }
  if (whole) {
    std::string out;
    CHECK(run_cli("runs --state-dir " + state, &out) != 0);
    CHECK(out.find("belongs to uid 65534") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(state + "/state.db"));
}

TEST_CASE("disk full and back: the ledger parses and every run has exactly one terminal entry") {
  TempDir base;
  std::string mnt = base.path() + "/mnt";
  fs::create_directory(mnt);
  // A real small filesystem; the suite runs as root where mounting works.
  // Big enough that what space returns holds the state database's WAL as it
  // grows by a few pages per commit until its first checkpoint (1,000 pages):
  // at 512 KiB a slow machine, committing in smaller batches, filled it again.
  REQUIRE(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=4m,mode=0700") == 0);
  std::string state = mnt + "/state";
  std::map<std::string, int> told;  // run -> the error code the host got (0: a result)
  {
    Daemon d(fake_config(), {}, state);
    d.initialize();
    std::string sid = d.new_session();
    told[run_id_of(d.prompt(sid, "echo before"))] = 0;
    // Fill the filesystem.
    {
      int fd = ::open((mnt + "/filler").c_str(), O_WRONLY | O_CREAT, 0600);
      REQUIRE(fd >= 0);
      std::string block(4096, 'x');
      while (::write(fd, block.data(), block.size()) > 0) {
      }
      std::string byte = "x";
      while (::write(fd, byte.data(), 1) > 0) {
      }
      ::close(fd);
    }
    // Prompts while full, some of them queued behind others.
    int failed = 0;
    for (int round = 0; round < 6; ++round) {
      int a = d.send_prompt(sid, "echo full " + std::to_string(round));
      int b = d.send_prompt(sid, "echo queued " + std::to_string(round));
      for (int id : {a, b}) {
        json r = d.recv_reply(id);
        int code = r.contains("error") ? r["error"]["code"].get<int>() : 0;
        if (code) ++failed;
        told[run_id_of(r)] = code;
      }
    }
    CHECK(failed > 0);
    // Space returns.
    fs::remove(mnt + "/filler");
    for (int i = 0; i < 3; ++i) {
      json r = d.prompt(sid, "echo after " + std::to_string(i));
      CHECK(r.contains("result"));
      told[run_id_of(r)] = 0;
    }
  }
  Ledger l = read_ledger(state);
  CHECK(l.bad.empty());
  for (const auto& [run, code] : told) {
    INFO(run << " was answered " << code);
    REQUIRE(l.terminal[run].size() == 1);
    const json& end = l.terminal[run][0];
    if (code == 0) {
      CHECK(end["event"] == "completed");
    } else {
      CHECK(code == -32016);
      CHECK(end["event"] == "failed");
      CHECK(end["error"]["code"] == -32016);
      CHECK(end["error"]["data"]["reason"] == "store");
    }
  }
  // A later start finds nothing to interrupt.
  {
    Daemon d(fake_config(), {}, state);
    d.initialize();
    CHECK(d.stderr_text().find("was interrupted") == std::string::npos);
  }
  CHECK(read_ledger(state).entries.size() == l.entries.size());
  ::umount2(mnt.c_str(), MNT_DETACH);
}

TEST_CASE("runs that never started have a result.json: removed from the queue, interrupted while queued") {
  SECTION("$/cancel_request removes a queued prompt that had no folder yet") {
    Daemon d;
    d.initialize();
    std::string sid = d.new_session();
    int running = d.send_prompt(sid, "slow 1000");
    d.send_prompt(sid, "echo second");
    int third = d.send_prompt(sid, "echo third");
    auto queued = queued_runs(d, sid, 1);
    INFO(queued.size());
    REQUIRE(queued.size() == 2);
    d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", third}}}});
    json r = d.recv_reply(third);
    CHECK(r["result"]["stopReason"] == "cancelled");
    std::string run = run_id_of(r);
    CHECK(run == queued[1]);
    json result = json::parse(run_file(d.state_dir(), run, "result.json").value_or(""), nullptr, false);
    REQUIRE(result.is_object());
    CHECK(result.value("state", "") == "cancelled");
    CHECK(result.value("reason", "") == "removed before it started");
    d.recv_reply(running);
  }
  SECTION("kill -9 with prompts queued: the next start interrupts them and writes their result.json") {
    TempDir state;
    std::vector<std::string> queued;
    {
      Daemon d(fake_config(), {}, state.path());
      d.initialize();
      std::string sid = d.new_session();
      d.send_prompt(sid, "slow 10000");
      d.send_prompt(sid, "echo second");
      d.send_prompt(sid, "echo third");
      queued = queued_runs(d, sid, 1);
      REQUIRE(queued.size() == 2);
      const std::string segment = state.path() + "/segments/" + sid + ".jsonl";
      REQUIRE(eventually([&] { return read_file(segment).find(queued[0]) != std::string::npos; }, 5s));
      // Their "queued" lines are written off the loop: kill once they are.
      REQUIRE(eventually(
          [&] {
            auto entries = read_ledger(state.path()).entries;
            return std::any_of(entries.begin(), entries.end(), [&](const json& e) { return e["runId"] == queued[1]; });
          },
          5s));
      kill(d.pid(), SIGKILL);
      CHECK(d.wait_exit(5s) == 128 + SIGKILL);
    }
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    for (const auto& run : queued) {
      INFO(run);
      json result = json::parse(run_file(state.path(), run, "result.json").value_or(""), nullptr, false);
      CHECK((result.is_object() && result.value("state", "") == "interrupted"));
    }
  }
}

TEST_CASE("a relative --state-dir is taken from the current directory, by run and by runs alike") {
  TempDir dir;
  dir.write("config.toml", fake_config());
  const fs::path before = fs::current_path();
  fs::current_path(dir.path());
  std::string out;
  int ran = run_cli("--config config.toml --state-dir ./rel/../state run 'echo relative'", &out);
  int listed_code = run_cli("--state-dir state runs --format json", &out, false);
  std::string listed = out;
  fs::current_path(before);
  REQUIRE(ran == 0);
  CHECK(fs::exists(dir.path() + "/state/state.db"));
  CHECK_FALSE(fs::exists(dir.path() + "/rel"));
  REQUIRE(listed_code == 0);
  json run = json::parse(listed.substr(0, listed.find('\n')));
  CHECK(run["state"] == "completed");
  // The recording's path it prints is absolute.
  CHECK(run["recording"].get<std::string>().rfind(dir.path() + "/state/segments/", 0) == 0);
}
