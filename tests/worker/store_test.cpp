// Completion truth end to end: the ledger, the session records and
// transcripts, the run recordings, restarts, crashes and broken disks.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <sys/wait.h>

#include <thread>
#include <tuple>

#include "daemon_process.h"
#include "stored_session.h"
#include "worker/database.h"
#include "worker/segment.h"

using namespace harnessd::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> events_of(const std::vector<json>& ledger, const std::string& run) {
  std::vector<std::string> out;
  for (const auto& e : ledger) {
    if (e["runId"] == run) out.push_back(e["event"]);
  }
  return out;
}

// A small filesystem mounted on `dir`; false where mounting is not allowed.
bool mount_tmpfs(const std::string& dir, const std::string& options) {
  return ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
}

}  // namespace

TEST_CASE("a run leaves a complete recording and three ledger lines") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session("/tmp", {{"harnessd", {{"name", "rec"}}}});
  std::vector<json> seen;
  json answer = d.prompt(sid, "stderr 2", &seen);
  // When the host has the answer, result.json and the terminal line exist.
  std::string run = run_id_of(answer);
  auto file = [&](const char* name) { return run_file(d.state_dir(), run, name).value_or(""); };
  REQUIRE(run_file(d.state_dir(), run, "result.json"));
  auto ledger = read_ledger(d.state_dir()).entries;
  CHECK(events_of(ledger, run) == std::vector<std::string>{"queued", "started", "completed"});
  for (const auto& e : ledger) {
    if (e["runId"] != run) continue;
    CHECK(e["sessionId"] == sid);
    CHECK(e["name"] == "rec");
    CHECK(e["harness"] == "fake");
    CHECK(e["requestId"] == answer["id"]);
    CHECK(e["time"].get<std::string>().size() == 24);
    if (e["event"] == "completed") CHECK(e["stopReason"] == "end_turn");
  }
  json result = json::parse(file("result.json"));
  CHECK(result["state"] == "completed");
  CHECK(result["stopReason"] == "end_turn");
  json req = json::parse(file("request.json"));
  CHECK(req["params"]["prompt"][0]["text"] == "stderr 2");
  CHECK(file("prompt.md") == "stderr 2\n");
  CHECK(file("stderr.log").find("stderr line 2") != std::string::npos);
  // events.jsonl: every frame of the turn, both directions.
  std::set<std::string> directions;
  bool prompt_to_adapter = false, answer_from_adapter = false;
  std::istringstream events(file("events.jsonl"));
  std::string line;
  while (std::getline(events, line)) {
    json e = json::parse(line);
    directions.insert(e["dir"].get<std::string>());
    if (e["dir"] == "harnessd>adapter" && e["msg"].value("method", "") == "session/prompt") prompt_to_adapter = true;
    if (e["dir"] == "adapter>harnessd" && e["msg"].contains("result")) answer_from_adapter = true;
  }
  CHECK(directions == std::set<std::string>{"host>harnessd", "harnessd>adapter", "adapter>harnessd", "harnessd>host"});
  CHECK(prompt_to_adapter);
  CHECK(answer_from_adapter);
  // The run is lines of its session's segment: no file or folder of its
  // own. Files 0600, folders 0700.
  CHECK(!fs::exists(d.state_dir() + "/runs/" + run));
  CHECK(mode_of(d.state_dir()) == 0700);
  CHECK(mode_of(d.state_dir() + "/segments") == 0700);
  CHECK(mode_of(d.state_dir() + "/segments/" + sid + ".jsonl") == 0600);
  // The ledger and the session records are in the state database.
  CHECK(mode_of(d.state_dir() + "/state.db") == 0600);
}

TEST_CASE("a run's request is stored once, as its first frame, and a prompt that never ran still has its request.json") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  int running = d.send_prompt(sid, "slow 3000");
  int removed = d.send_prompt(sid, "echo never");
  REQUIRE(d.recv());  // the slow one is under way
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", removed}}}});
  std::string removed_run = run_id_of(d.recv_reply(removed));
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", running}}}});
  std::string running_run = run_id_of(d.recv_reply(running));
  std::string done_run = run_id_of(d.prompt(sid, "echo once"));
  // Only the run that never started has a request.json line of its own.
  const std::string segment = read_file(d.state_dir() + "/segments/" + sid + ".jsonl");
  std::size_t puts = 0;
  for (std::size_t at = 0; (at = segment.find("\"put\":\"request.json\"", at)) != std::string::npos; ++at) ++puts;
  CHECK(puts == 1);
  CHECK(segment.find("{\"run\":\"" + removed_run + "\",\"put\":\"request.json\"") != std::string::npos);
  // Each reads back as the indented request the host sent.
  const std::vector<std::tuple<std::string, int, std::string>> runs = {
      {running_run, running, "slow 3000"}, {removed_run, removed, "echo never"}};
  for (const auto& [run, id, text] : runs) {
    auto file = run_file(d.state_dir(), run, "request.json");
    REQUIRE(file);
    CHECK(file->find("\n  \"method\": \"session/prompt\",\n") != std::string::npos);
    CHECK(file->back() == '\n');
    json req = json::parse(*file);
    CHECK(req["id"] == id);
    CHECK(req["params"]["prompt"][0]["text"] == text);
    CHECK(req["receivedAt"].is_string());
  }
  json req = json::parse(run_file(d.state_dir(), done_run, "request.json").value_or("null"));
  CHECK(req["params"]["prompt"][0]["text"] == "echo once");
}

TEST_CASE("every way a run ends is one terminal ledger entry") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  std::map<std::string, std::string> expected;
  expected[run_id_of(d.prompt(sid, "echo ok"))] = "completed";
  expected[run_id_of(d.prompt(sid, "crash 4"))] = "failed";
  d.send(request(1, "session/prompt",
                 {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", "slow 3000"}}}}, {"_meta", {{"harnessd", {{"timeoutMs", 100}}}}}}));
  expected[run_id_of(d.recv_reply(1))] = "timeout";
  int id = d.send_prompt(sid, "slow 3000");
  REQUIRE(d.recv());
  d.send({{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}});
  expected[run_id_of(d.recv_reply(id))] = "cancelled";
  auto ledger = read_ledger(d.state_dir()).entries;
  for (const auto& [run, state] : expected) {
    INFO(run);
    CHECK(events_of(ledger, run).back() == state);
    CHECK(json::parse(run_file(d.state_dir(), run, "result.json").value_or("null"))["state"] == state);
  }
  // A failed run keeps the error it was answered with.
  for (const auto& e : ledger) {
    if (e["event"] == "failed") CHECK(e["error"]["code"] == -32011);
    if (e["event"] == "timeout") CHECK(e["partialOutput"] == true);
  }
}

TEST_CASE("runs/get and runs/list answer from the ledger, across restarts") {
  TempDir state;
  std::string sid, first_run;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session("/tmp", {{"harnessd", {{"name", "agent:x"}}}});
    first_run = run_id_of(d.prompt(sid, "echo one"));
    d.prompt(sid, "crash 3");
  }
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  d.send(request(1, "_harnessd/runs/get", {{"runId", first_run}}));
  json run = d.recv_reply(1)["result"]["run"];
  CHECK(run["state"] == "completed");
  CHECK(run["stopReason"] == "end_turn");
  CHECK(run["sessionId"] == sid);
  CHECK(run["name"] == "agent:x");
  CHECK(run["recording"] == state.path() + "/segments/" + sid + ".jsonl");
  CHECK(read_file(run["recording"].get<std::string>()).find(first_run) != std::string::npos);
  d.send(request(2, "_harnessd/runs/list", {{"name", "agent:x"}}));
  json list = d.recv_reply(2)["result"];
  CHECK(list["total"] == 2);
  CHECK(list["runs"][1]["state"] == "failed");
  d.send(request(3, "_harnessd/runs/list", {{"state", "completed"}, {"sessionId", sid}}));
  CHECK(d.recv_reply(3)["result"]["runs"].size() == 1);
  d.send(request(4, "_harnessd/runs/list", {{"since", "2999-01-01T00:00:00.000Z"}}));
  CHECK(d.recv_reply(4)["result"]["runs"].empty());
  d.send(request(5, "_harnessd/runs/get", {{"runId", "run_nope"}}));
  json missing = d.recv_reply(5);
  CHECK(missing["error"]["code"] == -32002);
  CHECK(missing["error"]["data"]["runId"] == "run_nope");
}

TEST_CASE("sessions survive restarts: list, load with replay, resume without, close") {
  TempDir state, fake_state;
  std::vector<std::string> fake_args = {"--state-dir", fake_state.path(), "--resume"};
  std::string sid;
  std::vector<json> seen_first;
  {
    Daemon d(fake_config(fake_args), {}, state.path());
    d.initialize();
    sid = d.new_session("/tmp", {{"harnessd", {{"name", "keeper"}}}});
    d.prompt(sid, "echo alpha", &seen_first);
    d.prompt(sid, "stream 2", &seen_first);
  }
  Daemon d(fake_config(fake_args), {}, state.path());
  d.initialize();
  d.send(request(1, "session/list", json::object()));
  json list = d.recv_reply(1)["result"]["sessions"];
  REQUIRE(list.size() == 1);
  CHECK(list[0]["sessionId"] == sid);
  CHECK(list[0]["title"] == "keeper");

  // load: the transcript first (user prompts and the updates the host saw),
  // then the answer, which says the adapter's own session was resumed.
  std::vector<json> replay;
  d.send(request(2, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json loaded = d.recv_reply(2, &replay);
  CHECK(loaded["result"]["_meta"]["harnessd"]["adapter"]["restored"] == true);
  CHECK(loaded["result"]["_meta"]["harnessd"]["adapter"]["method"] == "session/resume");
  std::vector<json> expected;
  expected.push_back({{"sessionId", sid},
                      {"update", {{"sessionUpdate", "user_message_chunk"}, {"content", {{"type", "text"}, {"text", "echo alpha"}}}}}});
  auto first = update_params(seen_first, sid);
  expected.push_back(first[0]);
  expected.push_back({{"sessionId", sid},
                      {"update", {{"sessionUpdate", "user_message_chunk"}, {"content", {{"type", "text"}, {"text", "stream 2"}}}}}});
  expected.push_back(first[1]);
  expected.push_back(first[2]);
  CHECK(update_params(replay, sid) == expected);
  CHECK(loaded["result"]["_meta"]["harnessd"]["replayed"] == expected.size());
  // The harness remembers through its own resume.
  std::vector<json> seen;
  d.prompt(sid, "history", &seen);
  CHECK(message_text(seen) == "history: echo alpha | stream 2");

  // resume: no replay before the answer.
  std::vector<json> before;
  d.send(request(3, "session/resume", {{"sessionId", sid}, {"cwd", "/tmp"}}));
  json resumed = d.recv_reply(3, &before);
  CHECK(before.empty());
  CHECK(resumed["result"]["_meta"]["harnessd"]["adapter"]["restored"] == true);

  // close: the record is closed, the session leaves the list.
  d.send(request(4, "session/close", {{"sessionId", sid}}));
  CHECK(d.recv_reply(4)["result"] == json::object());
  d.send(request(5, "session/list", json::object()));
  CHECK(d.recv_reply(5)["result"]["sessions"].empty());
  CHECK(stored_session(state.path(), sid)["closed"] == true);
}

TEST_CASE("restoring the adapter's session: load, or say that it could not") {
  TempDir state, fake_state;
  std::string sid;
  SECTION("an adapter with session/load only: its replay is not relayed") {
    std::vector<std::string> args = {"--state-dir", fake_state.path(), "--load"};
    {
      Daemon d(fake_config(args), {}, state.path());
      d.initialize();
      sid = d.new_session();
      d.prompt(sid, "echo one");
    }
    Daemon d(fake_config(args), {}, state.path());
    d.initialize();
    std::vector<json> replay;
    d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    json r = d.recv_reply(1, &replay);
    CHECK(r["result"]["_meta"]["harnessd"]["adapter"]["method"] == "session/load");
    CHECK(update_params(replay, sid).size() == 2);  // harnessd's transcript only, not the adapter's too
    std::vector<json> seen;
    d.prompt(sid, "history", &seen);
    CHECK(message_text(seen) == "history: echo one");
  }
  SECTION("an adapter that can do neither: restored false, with the reason") {
    {
      Daemon d(fake_config(), {}, state.path());
      d.initialize();
      sid = d.new_session();
      d.prompt(sid, "echo one");
    }
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    d.send(request(1, "session/resume", {{"sessionId", sid}, {"cwd", "/tmp"}}));
    json adapter = d.recv_reply(1)["result"]["_meta"]["harnessd"]["adapter"];
    CHECK(adapter["restored"] == false);
    CHECK(adapter["reason"].get<std::string>().find("neither session/resume nor session/load") != std::string::npos);
  }
}

TEST_CASE("a load or resume that waits for its adapter is answered when the session closes") {
  TempDir state;
  std::string sid;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    d.prompt(sid, "echo one");
  }
  // The next lifetime's adapter takes a minute to start: the load has
  // replayed the transcript and waits for it when the session goes.
  Daemon d(fake_config({"--init-delay", "60000"}), {}, state.path());
  d.initialize();
  d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  for (int i = 0; i < 2; ++i) {  // the prompt and the answer it got
    auto replayed = d.recv();
    REQUIRE(replayed);
    CHECK((*replayed)["method"] == "session/update");
  }
  SECTION("session/close") {
    d.send(request(2, "session/close", {{"sessionId", sid}}));
    json loaded = d.recv_reply(1);
    CHECK(loaded["error"]["code"] == -32603);
    CHECK(loaded["error"]["message"].get<std::string>().find("closed before") != std::string::npos);
    CHECK(loaded["error"]["data"]["sessionId"] == sid);
    CHECK(d.recv_reply(2)["result"] == json::object());
  }
  SECTION("shutdown") {
    d.close_stdin();
    CHECK(d.recv_reply(1)["error"]["data"]["sessionId"] == sid);
    CHECK(d.wait_exit() == 0);
  }
}

TEST_CASE("ensure finds a named session of an earlier lifetime") {
  TempDir state;
  json meta = {{"harnessd", {{"name", "agent:daily"}, {"ensure", true}}}};
  std::string first;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    first = d.new_session("/tmp", meta);
  }
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  CHECK(d.new_session("/tmp", meta) == first);
  CHECK(d.prompt(first, "echo back")["result"]["stopReason"] == "end_turn");
}

TEST_CASE("names never become paths") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session("/tmp", {{"harnessd", {{"name", "../../../escape/../name with spaces"}}}});
  d.prompt(sid, "echo x");
  for (const auto& entry : fs::recursive_directory_iterator(d.state_dir())) {
    std::string name = entry.path().filename().string();
    INFO(entry.path());
    CHECK(name.find("escape") == std::string::npos);
    CHECK(name.find(' ') == std::string::npos);
  }
  CHECK_FALSE(fs::exists(fs::path(d.state_dir()).parent_path().parent_path() / "escape"));
}

TEST_CASE("kill -9 mid-turn: the next start reports the run interrupted and load replays what the host saw") {
  TempDir state;
  std::string sid, run;
  std::vector<json> seen_before_kill;
  pid_t adapter = 0;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    std::vector<json> seen;
    d.prompt(sid, "pid", &seen);
    adapter = std::stoi(message_text(seen).substr(4));
    seen_before_kill = seen;
    int id = d.send_prompt(sid, "slow 10000");
    for (int i = 0; i < 2; ++i) {
      auto m = d.recv();
      REQUIRE(m);
      seen_before_kill.push_back(*m);
    }
    d.send(request(9, "_harnessd/sessions/list", json::object()));
    run = d.recv_reply(9, &seen_before_kill)["result"]["sessions"][0]["activeRunId"];
    (void)id;
    // The run's events (which the transcript points at) are written off
    // the loop, so a kill can beat the last frames to the disk. Kill once
    // what the host saw has been written.
    std::string last = update_params(seen_before_kill, sid).back()["update"]["content"]["text"];
    std::string segment = state.path() + "/segments/" + sid + ".jsonl";
    std::string transcript = state.path() + "/sessions/" + sid + ".jsonl";
    REQUIRE(eventually([&] { return read_file(segment).find(last) != std::string::npos; }, 5s));
    REQUIRE(eventually([&] { return read_file(transcript).find(run) != std::string::npos; }, 5s));
    kill(d.pid(), SIGKILL);
    CHECK(d.wait_exit(2s) == 128 + SIGKILL);
  }
  CHECK(eventually([&] { return !process_alive(adapter); }, 1s));  // no orphan
  auto ledger = read_ledger(state.path()).entries;
  CHECK(events_of(ledger, run) == std::vector<std::string>{"queued", "started"});

  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  d.send(request(1, "_harnessd/runs/get", {{"runId", run}}));
  json r = d.recv_reply(1)["result"]["run"];
  CHECK(r["state"] == "interrupted");
  CHECK(r["reason"].get<std::string>().find("harnessd stopped") != std::string::npos);
  CHECK(json::parse(run_file(state.path(), run, "result.json").value_or("null"))["state"] == "interrupted");
  CHECK(d.stderr_text().find("was interrupted") != std::string::npos);

  std::vector<json> replay;
  d.send(request(2, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  d.recv_reply(2, &replay);
  auto replayed = update_params(replay, sid);
  // Everything the host saw, after the user's prompts.
  std::vector<json> agent_updates;
  for (const auto& u : replayed) {
    if (u["update"]["sessionUpdate"] != "user_message_chunk") agent_updates.push_back(u);
  }
  CHECK(agent_updates == update_params(seen_before_kill, sid));
}

TEST_CASE("a ledger and a transcript cut by a crash are still read") {
  TempDir state;
  std::string sid;
  // An earlier harnessd's ledger, its last line cut by a crash: imported
  // up to the cut, and kept aside as it was.
  std::ofstream(state.path() + "/ledger.jsonl") << R"({"time":"2026-01-01T00:00:00.000Z","event":"que)";
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    d.prompt(sid, "echo whole");
    CHECK(d.stderr_text().find("ledger.jsonl: line 1 is not JSON (cut by a crash?); not imported") !=
          std::string::npos);
  }
  // A crash in the middle of a write leaves half a line.
  std::ofstream(state.path() + "/sessions/" + sid + ".jsonl", std::ios::app) << R"({"jsonrpc":"2.0","method":"sess)";
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  std::vector<json> replay;
  d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json r = d.recv_reply(1, &replay);
  CHECK(r.contains("result"));
  CHECK(update_params(replay, sid).size() == 2);  // the prompt and its chunk; the cut line skipped
  CHECK(d.prompt(sid, "echo after")["result"]["stopReason"] == "end_turn");
  std::string err = d.stderr_text();
  CHECK(err.find("transcript line(s) cut by a crash were skipped") != std::string::npos);
  // New lines went onto lines of their own: everything but the cut line parses.
  auto read_all = [](const std::string& path) {
    std::ifstream in(path);
    std::string line;
    int bad = 0;
    while (std::getline(in, line)) bad += json::accept(line) ? 0 : 1;
    return bad;
  };
  CHECK(read_all(state.path() + "/pre-sqlite/ledger.jsonl") == 1);
  CHECK(read_all(state.path() + "/sessions/" + sid + ".jsonl") == 1);
  CHECK(read_ledger(state.path()).entries.size() == 6);  // two runs, three transitions each
}

TEST_CASE("a read-only state directory: the daemon serves, runs fail with a clear error") {
  TempDir base;
  std::string state = base.path() + "/state";
  fs::create_directory(state);
  bool mounted = mount_tmpfs(state, "size=1m");
  if (mounted) {
    REQUIRE(::mount("tmpfs", state.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=1m") == 0);
  } else {
    fs::permissions(state, fs::perms::owner_read | fs::perms::owner_exec);  // not root: plain permissions
  }
  {
    Daemon d(fake_config(), {}, state);
    d.initialize();
    std::string sid = d.new_session();
    json r = d.prompt(sid, "echo x");
    REQUIRE(r.contains("error"));
    CHECK(r["error"]["code"] == -32016);
    CHECK(r["error"]["message"].get<std::string>().find("could not be recorded") != std::string::npos);
    CHECK(d.stderr_text().find("runs will fail") != std::string::npos);
    d.send(request(1, "session/list", json::object()));  // still serving
    CHECK(d.recv_reply(1).contains("result"));
  }
  if (mounted) {
    ::umount2(state.c_str(), MNT_DETACH);
  } else {
    fs::permissions(state, fs::perms::owner_all);
  }
}

TEST_CASE("a full disk fails the run with a clear error and the daemon goes on") {
  TempDir base;
  std::string state = base.path() + "/state";
  fs::create_directory(state);
  // A real ENOSPC from a tiny filesystem where mounting is allowed; else the
  // store's write-budget switch for tests.
  bool mounted = mount_tmpfs(state, "size=384k");  // room for the state database, not for the big run
  if (!mounted) setenv("HARNESSD_TEST_STORE_FAIL_AFTER_BYTES", "40000", 1);
  {
    Daemon d(fake_config(), {}, state);
    unsetenv("HARNESSD_TEST_STORE_FAIL_AFTER_BYTES");
    d.initialize();
    std::string sid = d.new_session();
    json r = d.prompt(sid, "big 600000");  // its events alone do not fit
    INFO(r.dump() << "\n" << d.stderr_text());
    REQUIRE(r.contains("error"));
    CHECK(r["error"]["code"] == -32016);
    CHECK(r["error"]["message"].get<std::string>().find("No space left on device") != std::string::npos);
    d.send(request(1, "_harnessd/sessions/list", json::object()));
    CHECK(d.recv_reply(1).contains("result"));
    // The failed write was cut back, so a small run fits again on the real
    // filesystem; with the budget switch it may still fail. Either way an
    // answer, not a crash.
    json again = d.prompt(sid, "echo small");
    if (mounted) {
      CHECK(again.contains("result"));
    } else {
      CHECK((again.contains("result") || again["error"]["code"] == -32016));
    }
  }
  if (mounted) ::umount2(state.c_str(), MNT_DETACH);
}

TEST_CASE("harnessd runs and harnessd sessions read the store, also while a daemon runs") {
  TempDir state;
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  std::string sid = d.new_session("/tmp", {{"harnessd", {{"name", "cli"}}}});
  d.prompt(sid, "echo one");
  auto run_cli = [&](const std::string& args, int want_exit = 0) {
    std::string out;
    CHECK(harnessd::test::run_cli(args + " --state-dir " + state.path(), &out) == want_exit);
    return out;
  };
  std::string runs = run_cli("runs --format json");
  json first = json::parse(runs.substr(0, runs.find('\n')));
  CHECK(first["sessionId"] == sid);
  CHECK(first["state"] == "completed");
  // A table: a header, then one row per run, in aligned columns.
  std::string table = run_cli("runs --session cli");
  INFO(table);
  CHECK(table.rfind("RUN ", 0) == 0);
  std::string row = table.substr(table.find('\n') + 1);
  CHECK(row.find("cli") != std::string::npos);
  CHECK(row.find("completed") != std::string::npos);
  CHECK(table.find("SESSION") == row.find("cli"));  // the name sits under its heading
  // A filter that matches nothing says so and fails; JSON just has no lines.
  CHECK(run_cli("runs --state failed", 1).find("no runs in state 'failed'") != std::string::npos);
  CHECK(run_cli("runs --state failed --format json").empty());
  std::string sessions = run_cli("sessions --format json");
  CHECK(json::parse(sessions.substr(0, sessions.find('\n')))["name"] == "cli");

  // --follow prints entries as they are written.
  std::string cmd = harnessd_exe() + " runs --follow --state-dir " + state.path() + " > " + state.path() + "/follow.txt";
  pid_t follower = fork();
  if (follower == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
    _exit(127);
  }
  // The runs so far are printed first; then it follows.
  REQUIRE(eventually([&] { return read_file(state.path() + "/follow.txt").rfind("RUN ", 0) == 0; }, 5s));
  json two = d.prompt(sid, "echo two");
  std::string two_id = two["result"]["_meta"]["harnessd"]["runId"];
  // Only a follower prints the new run: the table came before it existed.
  auto followed = [&](const std::string& what) {
    std::string text = read_file(state.path() + "/follow.txt");
    for (std::size_t at = text.find(two_id); at != std::string::npos; at = text.find(two_id, at + 1)) {
      std::size_t eol = text.find('\n', at);
      if (text.substr(at, eol - at).find(what) != std::string::npos) return true;
    }
    return false;
  };
  CHECK(eventually([&] { return followed("completed (end_turn)"); }, 3s));
  kill(follower, SIGTERM);
  int status = 0;
  waitpid(follower, &status, 0);
  CHECK(followed("started"));
}

TEST_CASE("a relayed update is stored once, in the run, the transcript points at it, and show reads it as the host did") {
  TempDir state;
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  std::string sid = d.new_session();
  // Counts, per direction, the agent_message_chunk frames of `lines` whose
  // text is `text` (or of any text when empty), and their text's bytes.
  auto chunks = [](const std::string& lines, const std::string& text) {
    std::map<std::string, std::pair<int, std::size_t>> found;
    std::istringstream in(lines);
    std::string line;
    while (std::getline(in, line)) {
      json e = json::parse(line);
      const json& msg = e.contains("msg") ? e["msg"] : e;  // transcript lines are bare frames
      if (msg.value("method", "") != "session/update") continue;
      const json& u = msg["params"]["update"];
      if (u.value("sessionUpdate", "") != "agent_message_chunk") continue;
      const std::string got = u["content"].value("text", "");
      if (!text.empty() && got != text) continue;
      auto& f = found[e.value("dir", "transcript")];
      ++f.first;
      f.second += got.size();
    }
    return found;
  };
  const std::string transcript = state.path() + "/sessions/" + sid + ".jsonl";

  json r = d.prompt(sid, "stream 20");
  std::string run = r["result"]["_meta"]["harnessd"]["runId"];
  const std::string events = run_file(state.path(), run, "events.jsonl").value_or("");
  for (int i = 1; i <= 20; ++i) {
    const std::string text = "chunk " + std::to_string(i);
    INFO(text);
    auto in_run = chunks(events, text);
    CHECK(in_run.size() == 1);
    CHECK(in_run["adapter>harnessd"].first == 1);
  }
  // The transcript holds the user's prompt and one pointer at the run's
  // events, not the chunks.
  CHECK(chunks(read_file(transcript), "").empty());
  {
    std::istringstream in(read_file(transcript));
    std::string line;
    int pointers = 0;
    while (std::getline(in, line)) {
      json e = json::parse(line);
      if (e.contains("events")) {
        CHECK(e["events"] == run);
        ++pointers;
      }
    }
    CHECK(pointers == 1);
  }

  // A chunk over 1 MiB reaches the host split; the run holds the adapter's
  // frame and the pieces the host got, and show counts the text once.
  json big = d.prompt(sid, "big 2500000");
  std::string big_run = big["result"]["_meta"]["harnessd"]["runId"];
  auto in_run = chunks(run_file(state.path(), big_run, "events.jsonl").value_or(""), "");
  CHECK(in_run["adapter>harnessd"] == std::make_pair(1, std::size_t{2500000}));
  CHECK(in_run["harnessd>host"] == std::make_pair(3, std::size_t{2500000}));
  for (const auto& [id, want] : {std::pair{run, std::size_t{0}}, std::pair{big_run, std::size_t{2500000}}}) {
    std::string out;
    CHECK(run_cli("show " + id + " --format json --state-dir " + state.path(), &out, false) == 0);
    json shown = json::parse(out);
    std::string answer = shown["answer"];
    if (want) {
      CHECK(answer == std::string(want, 'x'));
    } else {
      std::string expected;
      for (int i = 1; i <= 20; ++i) expected += "chunk " + std::to_string(i);
      CHECK(answer == expected);
    }
  }
}

TEST_CASE("session/load replays what the host got, around updates harnessd refused, split or could not record") {
  // One daemon streams; a second one, on the same state directory, loads.
  // The transcript points at the runs' events for the updates relayed as
  // the adapter sent them, and keeps the others itself.
  for (const char* bound : {"", "max_recording_bytes = 3000"}) {
    INFO("daemon settings: " << bound);
    TempDir state, scripts;
    const std::string config = fake_config({}, "", bound);
    auto chunk = [](const std::string& text) {
      return R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":$SESSION,"update":)"
             R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":")" +
             text + R"("}}}})" + "\n";
    };
    // Members spaced and out of order: relayed byte for byte but for the id.
    const std::string spaced =
        R"({ "params" : { "update" : { "content" : { "text" : "spaced", "type" : "text" }, )"
        R"("sessionUpdate" : "agent_message_chunk" }, "sessionId" : $SESSION }, "method" : "session/update", )"
        R"("jsonrpc" : "2.0" })"
        "\n";
    const std::string malformed =
        R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":$SESSION,"update":)"
        R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text"}}}})"
        "\n";
    std::string body = chunk("one") + spaced + malformed + chunk("two") + malformed + malformed + chunk("three");
    for (int i = 0; i < 20; ++i) body += chunk("more " + std::to_string(i));
    const std::string path =
        scripts.write("script", body + R"({"jsonrpc":"2.0","id":$ID,"result":{"stopReason":"end_turn"}})" "\n");

    std::string sid;
    std::vector<json> live;
    std::vector<std::string> live_lines;
    {
      Daemon d(config, {}, state.path());
      d.initialize();
      sid = d.new_session();
      for (const std::string& prompt : {"script " + path, std::string("big 2500000"), std::string("echo last")}) {
        REQUIRE(d.prompt(sid, prompt, &live)["result"]["stopReason"] == "end_turn");
      }
      for (const auto& line : d.raw_lines()) {
        if (line.find("session/update") != std::string::npos) live_lines.push_back(line);
      }
    }
    const std::vector<json> live_updates = update_params(live, sid);
    REQUIRE(live_updates.size() == 1 + 1 + 1 + 1 + 20 + 3 + 1);  // one, spaced, two, three, more, big in 3, last

    Daemon d(config, {}, state.path());
    d.initialize();
    std::vector<json> replay;
    d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    json answer = d.recv_reply(1, &replay);
    REQUIRE(answer.contains("result"));
    std::vector<json> agent_updates;
    std::vector<std::string> prompts;
    for (const auto& u : update_params(replay, sid)) {
      if (u["update"]["sessionUpdate"] == "user_message_chunk") {
        prompts.push_back(u["update"]["content"]["text"]);
      } else {
        agent_updates.push_back(u);
      }
    }
    CHECK(prompts == std::vector<std::string>{"script " + path, "big 2500000", "echo last"});
    CHECK(agent_updates == live_updates);
    CHECK(answer["result"]["_meta"]["harnessd"]["replayed"] == prompts.size() + agent_updates.size());
    // The adapter's own bytes, as the first daemon's host got them.
    std::string spaced_live;
    for (const auto& line : live_lines) {
      if (line.find("\"spaced\"") != std::string::npos) spaced_live = line;
    }
    REQUIRE_FALSE(spaced_live.empty());
    int spaced_replayed = 0;
    for (const auto& line : d.raw_lines()) spaced_replayed += line == spaced_live;
    CHECK(spaced_replayed == 1);
  }
}

TEST_CASE("a session whose oldest runs retention removed loads what is kept and says what it skipped") {
  TempDir state, config_dir;
  std::string sid;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    for (const char* text : {"echo a", "echo b", "echo c"}) REQUIRE(d.prompt(sid, text)["result"]["stopReason"] == "end_turn");
  }
  const std::string config = config_dir.write("gc.toml", fake_config({}, "", "retention = { keep_runs = 1 }"));
  Output gc = run_harnessd({"gc", "--config", config, "--state-dir", state.path()});
  REQUIRE(gc.code == 0);
  CHECK(gc.out.find("removed 2 ended run(s)") != std::string::npos);

  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  std::vector<json> replay;
  d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  REQUIRE(d.recv_reply(1, &replay).contains("result"));
  std::vector<std::string> agent, user;
  for (const auto& u : update_params(replay, sid)) {
    (u["update"]["sessionUpdate"] == "user_message_chunk" ? user : agent).push_back(u["update"]["content"]["text"]);
  }
  CHECK(user == std::vector<std::string>{"echo a", "echo b", "echo c"});  // kept by the transcript itself
  CHECK(agent == std::vector<std::string>{"c"});
  CHECK(d.stderr_text().find("2 part(s) of the transcript pointed at runs no longer kept") != std::string::npos);
}

TEST_CASE("gc compacts a segment while its session appends to it, and loses none of the kept runs' lines") {
  TempDir state, config_dir;
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  const std::string sid = d.new_session();
  for (int i = 0; i < 3; ++i) REQUIRE(d.prompt(sid, "echo early")["result"]["stopReason"] == "end_turn");
  const std::string config = config_dir.write("gc.toml", fake_config({}, "", "retention = { keep_runs = 2 }"));
  // Turns stream while gc rewrites the segment under them.
  std::vector<int> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(d.send_prompt(sid, "stream 200"));
  int compactions = 0;
  for (int i = 0; i < 6; ++i) {
    Output gc = run_harnessd({"gc", "--config", config, "--state-dir", state.path()});
    REQUIRE(gc.code == 0);
    if (gc.out.find("removed 0 ended") == std::string::npos) ++compactions;
  }
  CHECK(compactions > 0);
  std::vector<std::string> answered;
  for (int id : ids) {
    json r = d.recv_reply(id);
    REQUIRE(r["result"]["stopReason"] == "end_turn");
    answered.push_back(run_id_of(r));
  }
  Output gc = run_harnessd({"gc", "--config", config, "--state-dir", state.path()});
  REQUIRE(gc.code == 0);
  // The two runs kept are whole: every chunk, the answer, the result.
  const std::string segment = read_file(state.path() + "/segments/" + sid + ".jsonl");
  for (std::size_t k = answered.size() - 2; k < answered.size(); ++k) {
    INFO(answered[k]);
    const std::string events = run_file(state.path(), answered[k], "events.jsonl").value_or("");
    for (int c = 1; c <= 200; ++c) CHECK(events.find("\"chunk " + std::to_string(c) + "\"") != std::string::npos);
    CHECK(events.find("\"stopReason\":\"end_turn\"") != std::string::npos);
    CHECK(json::parse(run_file(state.path(), answered[k], "result.json").value_or("null"))["state"] == "completed");
  }
  // The others are gone from the segment, line and all: no line of theirs
  // (a frame line names its run by tag only) and no line left without a run.
  for (std::size_t k = 0; k + 2 < answered.size(); ++k) CHECK(segment.find(answered[k]) == std::string::npos);
  std::size_t cut = 0;
  std::set<std::string> left;
  for (const auto& [run, files] : harnessd::worker::segment::read_all(segment, &cut)) left.insert(run);
  CHECK(left == std::set<std::string>{answered[answered.size() - 2], answered.back()});
  CHECK(cut == 0);
  CHECK(!fs::exists(state.path() + "/segments/" + sid + ".jsonl.compact"));
}

TEST_CASE("a segment line that gives events.jsonl as a file piece is garbled, not the run's events") {
  namespace segment = harnessd::worker::segment;
  const std::string event = "{\"t\":1,\"dir\":\"adapter>harnessd\"}\n";
  std::string lines = segment::tag_line("run_a", 1);
  lines += "{\"run\":\"run_a\",\"put\":\"events.jsonl\",\"text\":\"u}\\n\"}\n";
  lines += segment::event_line(1, event);
  lines += "{\"run\":\"run_a\",\"add\":\"events.jsonl\",\"text\":\"x\\n\"}\n";
  auto runs = segment::read_all(lines);
  REQUIRE(runs.contains("run_a"));
  CHECK(runs["run_a"].files["events.jsonl"] == event);
  CHECK(runs["run_a"].cut == 2);
  CHECK(segment::read(lines, "run_a").files == runs["run_a"].files);
}

// Milliseconds since the epoch of a stored time ("2026-12-02T23:48:03.386Z").
long long iso_ms(const std::string& t) {
  std::tm tm{};
  REQUIRE(t.size() == 24);
  REQUIRE(strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) != nullptr);
  return static_cast<long long>(timegm(&tm)) * 1000 + std::stoll(t.substr(20, 3));
}

TEST_CASE("a busy session's record is not written again for every prompt, and a shutdown brings its updatedAt up to date") {
  TempDir state;
  Daemon d(fake_config({"--config-options"}), {}, state.path());
  d.initialize();
  const std::string sid = d.new_session();
  for (int i = 0; i < 2; ++i) REQUIRE(d.prompt(sid, "echo first")["result"]["stopReason"] == "end_turn");
  // Quick turns in a row change only the record's time: it is written at
  // most once a second (however slow the machine, the times stored are a
  // second apart), where it was written after every turn.
  std::vector<std::string> stored_times = {stored_session(state.path(), sid)["updatedAt"]};
  for (int i = 0; i < 10; ++i) {
    REQUIRE(d.prompt(sid, "echo again")["result"]["stopReason"] == "end_turn");
    std::string t = stored_session(state.path(), sid)["updatedAt"];
    if (t != stored_times.back()) stored_times.push_back(t);
  }
  INFO("stored times: " << json(stored_times).dump());
  for (std::size_t k = 1; k < stored_times.size(); ++k) {
    CHECK(iso_ms(stored_times[k]) - iso_ms(stored_times[k - 1]) >= 990);
  }
  // A change other than the time is written at once.
  d.send(request(50, "session/set_config_option", {{"sessionId", sid}, {"configId", "model"}, {"value", "fake-large"}}));
  REQUIRE(d.recv_reply(50).contains("result"));
  REQUIRE(eventually([&] { return stored_session(state.path(), sid).dump().find("fake-large") != std::string::npos; }, 5s));
  // Then a turn whose write is spared (its record is as stored, and was
  // stored just now) leaves the shutdown to write its time.
  REQUIRE(d.prompt(sid, "echo settle")["result"]["stopReason"] == "end_turn");
  const std::string settled = stored_session(state.path(), sid)["updatedAt"];
  REQUIRE(d.prompt(sid, "echo last")["result"]["stopReason"] == "end_turn");
  std::this_thread::sleep_for(5ms);  // the stored times count milliseconds
  d.close_stdin();
  REQUIRE(d.wait_exit(10s) == 0);
  const json stored = stored_session(state.path(), sid);
  CHECK(stored["closed"] == false);  // a shutdown, not a close
  CHECK(iso_ms(stored["updatedAt"]) > iso_ms(settled));
}

TEST_CASE("a second daemon serving a session gives its runs tags the first one used, and every run reads back its own frames") {
  TempDir state, config_dir;
  std::string sid;
  std::vector<std::string> first, second;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session();
    first.push_back(run_id_of(d.prompt(sid, "echo one")));
    first.push_back(run_id_of(d.prompt(sid, "echo two")));
    d.close_stdin();
    REQUIRE(d.wait_exit(10s) == 0);
  }
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    REQUIRE(d.recv_reply(1).contains("result"));
    second.push_back(run_id_of(d.prompt(sid, "echo three")));
    second.push_back(run_id_of(d.prompt(sid, "echo four")));
    d.close_stdin();
    REQUIRE(d.wait_exit(10s) == 0);
  }
  // Both daemons tagged their runs 1 and 2 in the one segment.
  const std::string segment = read_file(state.path() + "/segments/" + sid + ".jsonl");
  CHECK(segment.find("{\"run\":\"" + first[0] + "\",\"tag\":1}") != std::string::npos);
  CHECK(segment.find("{\"run\":\"" + second[0] + "\",\"tag\":1}") != std::string::npos);
  const std::map<std::string, std::string> said = {
      {first[0], "one"}, {first[1], "two"}, {second[0], "three"}, {second[1], "four"}};
  auto check_runs = [&](const std::vector<std::string>& runs) {
    for (const auto& run : runs) {
      INFO(run);
      const std::string events = run_file(state.path(), run, "events.jsonl").value_or("");
      for (const auto& [other, text] : said) {
        const bool own = other == run;
        CHECK((events.find("\"echo " + text + "\"") != std::string::npos) == own);
      }
      // Each line is the classic events line: time, direction, message.
      std::istringstream lines(events);
      int n = 0;
      for (std::string line; std::getline(lines, line); ++n) {
        json e = json::parse(line);
        CHECK(e["t"].is_number());
        CHECK(e["dir"].is_string());
        CHECK(e.contains("msg"));
      }
      CHECK(n >= 4);  // the prompt in and out, the answer in and out
    }
  };
  check_runs(first);
  check_runs(second);
  // gc removing the first daemon's runs keeps the second's whole.
  const std::string config = config_dir.write("gc.toml", fake_config({}, "", "retention = { keep_runs = 2 }"));
  REQUIRE(run_harnessd({"gc", "--config", config, "--state-dir", state.path()}).code == 0);
  CHECK(read_file(state.path() + "/segments/" + sid + ".jsonl").find(first[0]) == std::string::npos);
  check_runs(second);
}

TEST_CASE("a transcript written before the transcript pointed at runs' events still loads") {
  // The fixture's transcripts hold every frame themselves.
  TempDir dir;
  const std::string state = dir.path() + "/state";
  copy_state_dir(std::string(TESTS_DIR) + "/worker/fixtures/state-before-sqlite", state);
  const std::string sid = "sess_06h33v2eyk7wpq04fm9e3gj558";
  Daemon d(fake_config(), {}, state);
  d.initialize();
  std::vector<json> replay;
  d.send(request(1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json answer = d.recv_reply(1, &replay);
  REQUIRE(answer.contains("result"));
  auto updates = update_params(replay, sid);
  REQUIRE(updates.size() == 2);
  CHECK(updates[0]["update"]["content"]["text"] == "echo hello");
  CHECK(updates[1]["update"]["content"]["text"] == "hello");
  CHECK(answer["result"]["_meta"]["harnessd"]["replayed"] == 2);
}

TEST_CASE("the next prompt does not wait for the previous run's end to be committed, and the host hears that answer first") {
  TempDir dir;
  const std::string timing = dir.path() + "/timing.log";
  Daemon d(fake_config({"--timing-file", timing}));
  d.initialize();
  const std::string sid = d.new_session();
  REQUIRE(d.prompt(sid, "echo warm")["result"]["stopReason"] == "end_turn");
  auto prompts_seen = [&] {
    std::string log = read_file(timing);
    std::size_t n = 0;
    for (std::size_t at = log.find(" prompt\n"); at != std::string::npos; at = log.find(" prompt\n", at + 1)) ++n;
    return n;
  };
  REQUIRE(prompts_seen() == 1);

  // Another process holds the database's write lock, so the first run's
  // end cannot be committed until it lets go.
  auto db = harnessd::worker::Database::open(d.state_dir() + "/state.db", {});
  REQUIRE(db);
  REQUIRE((*db)->exec("BEGIN IMMEDIATE"));
  const int first = d.send_prompt(sid, "echo one");
  const bool cancel = GENERATE(false, true);
  const int second = d.send_prompt(sid, cancel ? "slow 600" : "echo two");
  std::vector<json> seen;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (prompts_seen() < 3 && std::chrono::steady_clock::now() < deadline) {
    if (auto m = d.recv(20ms)) seen.push_back(*m);
  }
  // The adapter has the second prompt; the host has no answer yet.
  CHECK(prompts_seen() == 3);
  auto no_answer_yet = [&] {
    for (const auto& m : seen) CHECK_FALSE((m.contains("id") && !m.contains("method")));
  };
  no_answer_yet();
  // For the host the first turn still runs: a cancel now is for it, and
  // it has ended, so the second turn goes on.
  if (cancel) {
    d.send({{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}});
    // Handled in order: once this is answered, so is the cancel.
    d.send(request(77, "session/list", json::object()));
    d.recv_reply(77, &seen);
    no_answer_yet();
  }
  REQUIRE((*db)->exec("ROLLBACK"));

  json last = d.recv_reply(second, &seen);
  CHECK(last["result"]["stopReason"] == "end_turn");
  auto index_of = [&](auto pred) {
    for (std::size_t i = 0; i < seen.size(); ++i)
      if (pred(seen[i])) return static_cast<long>(i);
    return -1L;
  };
  const long answer_one = index_of([&](const json& m) { return m.value("id", json()) == first && !m.contains("method"); });
  const long update_two = index_of([&](const json& m) {
    if (m.value("method", "") != "session/update") return false;
    std::string text = m["params"]["update"].value("content", json::object()).value("text", "");
    return text != "one";
  });
  INFO(json(seen).dump());
  REQUIRE(answer_one >= 0);
  REQUIRE(update_two >= 0);
  CHECK(seen[static_cast<std::size_t>(answer_one)]["result"]["stopReason"] == "end_turn");
  // Every update of the second turn comes after the first turn's answer.
  CHECK(answer_one < update_two);
}

namespace {
// What the database writer logs when harnessd stops: "state database: W
// writes in C commits, H of them after a wait for company; K checkpoints on
// their own thread, N on the writer's; F file jobs".
struct WriterLog {
  std::string line;
  long writes = -1, commits = -1, waits = -1, checkpoints = -1, inline_checkpoints = -1, file_jobs = -1;
};
WriterLog writer_log(const std::string& log) {
  WriterLog w;
  const auto head = log.rfind("state database: ");
  REQUIRE(head != std::string::npos);
  w.line = log.substr(head, log.find('\n', head) - head);
  INFO(w.line);
  REQUIRE(std::sscanf(w.line.c_str(),
                      "state database: %ld writes in %ld commits, %ld of them after a wait for company; %ld checkpoints "
                      "on their own thread, %ld on the writer's; %ld file jobs",
                      &w.writes, &w.commits, &w.waits, &w.checkpoints, &w.inline_checkpoints, &w.file_jobs) == 6);
  return w;
}
}  // namespace

TEST_CASE("a daemon that wrote little leaves the WAL to the next one, which reads it back") {
  TempDir state;
  std::string run;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    run = run_id_of(d.prompt(d.new_session(), "echo one"));
    d.close_stdin();
    REQUIRE(d.wait_exit() == 0);
  }
  // Not copied back when the daemon stopped: the run is only in the WAL.
  REQUIRE(fs::exists(state.path() + "/state.db-wal"));
  CHECK(fs::file_size(state.path() + "/state.db-wal") > 0);
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  d.send(request(1, "_harnessd/runs/get", {{"runId", run}}));
  CHECK(d.recv_reply(1)["result"]["run"]["state"] == "completed");
}

TEST_CASE("a busy session's turns are written by one thread beside the loop, their lines and ends sharing commits") {
  Daemon d(fake_config({}, "", "max_queue_depth = 1024\n"));
  d.initialize();
  const std::string sid = d.new_session();
  constexpr int kPrompts = 400;
  for (int i = 0; i < kPrompts; ++i) d.send_prompt(sid, "echo x");
  std::multiset<std::string> threads;
  for (int answered = 0; answered < kPrompts;) {
    auto m = d.recv(10s);
    REQUIRE(m);
    if (!m->contains("id") || m->contains("method")) continue;
    CHECK((*m)["result"]["stopReason"] == "end_turn");
    // Looked at while turns are still queued and being written.
    if (++answered == kPrompts / 2) {
      const std::string tasks = "/proc/" + std::to_string(d.pid()) + "/task";
      for (const auto& task : fs::directory_iterator(tasks)) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        threads.insert(name);
      }
    }
  }
  // The loop and one writer. The WAL's checkpoints have a thread of their
  // own once the WAL grows (sooner on a slow machine, where fewer turns
  // share a commit), and the retention pass may still be running; no
  // file lane has a thread.
  INFO(Catch::Detail::stringify(threads));
  CHECK(threads.count("harnessd") == 1);
  CHECK(threads.count("hd-writer") == 1);
  CHECK(threads.size() - threads.count("hd-checkpoint") - threads.count("hd-retention") == 2);
  d.close_stdin();
  REQUIRE(d.wait_exit() == 0);
  const WriterLog logged = writer_log(d.stderr_text());
  INFO(logged.line);
  // Three transitions per prompt; the ones before a run's end wait for
  // company, so a turn costs well under two commits however the turns
  // fall in time (one each if every transition committed alone).
  CHECK(logged.writes >= 3 * kPrompts);
  CHECK(logged.commits * 3 < logged.writes * 2);
  // Every run is recorded as completed (one JSON line each).
  std::string runs;
  REQUIRE(run_cli("--state-dir " + d.state_dir() + " runs --session " + sid + " --format json", &runs, false) == 0);
  std::istringstream lines(runs);
  int completed = 0;
  for (std::string line; std::getline(lines, line);) completed += json::parse(line)["state"] == "completed";
  CHECK(completed == kPrompts);
}

TEST_CASE("a run that ends while no other run of this process is open is committed without waiting for company") {
  Daemon d(fake_config({}));
  d.initialize();
  const std::string one = d.new_session();
  const std::string two = d.new_session();
  // One prompt at a time: when a run ends, nothing else is open.
  for (int i = 0; i < 10; ++i) {
    REQUIRE(d.prompt(i % 2 ? one : two, "echo x")["result"]["stopReason"] == "end_turn");
  }
  d.close_stdin();
  REQUIRE(d.wait_exit() == 0);
  const WriterLog logged = writer_log(d.stderr_text());
  INFO(logged.line);
  CHECK(logged.writes >= 30);
  CHECK(logged.waits == 0);
}

TEST_CASE("a flood of updates is recorded a read at a time (not a frame at a time) and every frame is kept in order") {
  Daemon d(fake_config({}));
  d.initialize();
  const std::string sid = d.new_session();
  constexpr int kUpdates = 20000;
  // The fake agent writes its flood 16 KiB at a time: each read of
  // harnessd's holds dozens of frames.
  std::vector<json> seen;
  json answer = d.prompt(sid, "flood " + std::to_string(kUpdates), &seen);
  REQUIRE(answer["result"]["stopReason"] == "end_turn");
  const std::string run = run_id_of(answer);
  d.close_stdin();
  REQUIRE(d.wait_exit() == 0);
  const WriterLog logged = writer_log(d.stderr_text());
  INFO(logged.line);
  // One store job per frame before frames of one read were joined.
  CHECK(logged.file_jobs > 0);
  CHECK(logged.file_jobs * 10 < kUpdates);
  // events.jsonl holds each chunk once, in the order the adapter sent them.
  std::istringstream events(run_file(d.state_dir(), run, "events.jsonl").value_or(""));
  int next = 1;
  for (std::string line; std::getline(events, line);) {
    json e = json::parse(line);
    if (e["dir"] != "adapter>harnessd" || e["msg"].value("method", "") != "session/update") continue;
    const std::string text = e["msg"]["params"]["update"]["content"].value("text", "");
    if (text.rfind("chunk ", 0) != 0) continue;
    REQUIRE(text == "chunk " + std::to_string(next));
    ++next;
  }
  CHECK(next == kUpdates + 1);
}

TEST_CASE("beside a long run, a host that waits for each answer in turn is seldom held for company") {
  Daemon d(fake_config({}));
  d.initialize();
  const std::string quick = d.new_session();
  const std::string slow = d.new_session();
  REQUIRE(d.prompt(quick, "echo warm")["result"]["stopReason"] == "end_turn");
  // Open until harnessd stops and cancels it.
  d.send_prompt(slow, "slow 60000");
  for (int i = 0; i < 30; ++i) REQUIRE(d.prompt(quick, "echo x")["result"]["stopReason"] == "end_turn");
  d.close_stdin();
  REQUIRE(d.wait_exit() == 0);
  const WriterLog logged = writer_log(d.stderr_text());
  INFO(logged.line);
  // Each of the 30 ends found another run open; no other end came while
  // one waited, so waits are tried after 1, 2, 4, 8 and 16 ends that were
  // not held: the 1st, 3rd, 6th, 11th and 20th.
  CHECK(logged.waits >= 1);
  CHECK(logged.waits <= 5);
}

TEST_CASE("a busy session's prompts cost at most one database commit each, and checkpoints keep the WAL bounded off the writer") {
  Daemon d(fake_config({}, "", "max_queue_depth = 8192\n"));
  d.initialize();
  const std::string sid = d.new_session();
  REQUIRE(d.prompt(sid, "echo warm")["result"]["stopReason"] == "end_turn");
  // A commit adds the pages it touched to the WAL, eight 4 KiB frames for
  // one prompt, fewer per prompt when the ends of several share a commit
  // (alone on a quick machine, about twenty of them do): 6,000 prompts
  // would leave it past 20 MB without a checkpoint.
  constexpr int kPrompts = 6000;
  for (int i = 0; i < kPrompts; ++i) d.send_prompt(sid, "echo x");
  for (int answered = 0; answered < kPrompts;) {
    auto m = d.recv(10s);
    REQUIRE(m);
    if (!m->contains("id") || m->contains("method")) continue;
    CHECK((*m)["result"]["stopReason"] == "end_turn");
    ++answered;
  }
  // The last checkpoint may still be under way.
  // The WAL file keeps the size it once had (it is written over from the
  // start): about 2,000 frames at most, about 8 MB.
  CHECK(fs::file_size(d.state_dir() + "/state.db-wal") < 12u * 1024 * 1024);
  d.close_stdin();
  REQUIRE(d.wait_exit() == 0);
  const WriterLog logged = writer_log(d.stderr_text());
  INFO(logged.line);
  const long writes = logged.writes, commits = logged.commits, checkpoints = logged.checkpoints;
  const long inline_checkpoints = logged.inline_checkpoints;
  // The prompts were queued at once: the first end already had company
  // on the way.
  CHECK(logged.waits > 0);
  // 6,001 runs of three transitions each, and the session's records.
  CHECK(writes >= 3 * (kPrompts + 1));
  // A commit per transition would be over 7,200, and one for the end of a
  // run and another for the start of the next, 4,800; one per prompt, plus
  // a few for the session, the warm-up and the prompts' arrival, is the
  // budget. (Ends that share a commit make it fewer, the more so the
  // faster the turns.)
  CHECK(commits <= kPrompts * 5 / 4);
  // Prompts sent all at once: the thread starts, the writer finishes.
  CHECK(checkpoints + inline_checkpoints >= 2);
  CHECK(checkpoints >= 1);
}
