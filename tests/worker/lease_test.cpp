// Several harnessd processes on one state directory: one process serves a
// session at a time (the others hear -32017 with the owner), every run
// ends exactly once whoever recorded it, and kill -9 at any point loses
// nothing the host was told.
#include <catch2/catch.hpp>

#include <signal.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "worker/segment.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json named(const std::string& name) { return {{"harnessd", {{"name", name}, {"ensure", true}}}}; }

json new_session_params(const json& meta) {
  json p = {{"cwd", "/tmp"}, {"mcpServers", json::array()}};
  if (!meta.is_null()) p["_meta"] = meta;
  return p;
}

json ask(Daemon& d, int id, const std::string& method, const json& params) {
  d.send(request(id, method, params));
  return d.recv_reply(id);
}

// The answer refuses with -32017, naming `sid` and the process `owner`.
void check_busy(const json& answer, const std::string& sid, pid_t owner) {
  INFO(answer.dump());
  REQUIRE(answer.contains("error"));
  const json& e = answer["error"];
  CHECK(e["code"] == -32017);
  CHECK(e["data"]["retryable"] == true);
  CHECK(e["data"]["sessionId"] == sid);
  CHECK(e["data"]["owner"]["pid"] == owner);
  CHECK(e["message"].get<std::string>().find(std::to_string(owner)) != std::string::npos);
}

// Every run's events.jsonl, read once from the sessions' segments (one
// `harnessd show` per run would cost minutes under the sanitizers).
std::map<std::string, std::string> recorded_events(const std::string& state_dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(state_dir + "/segments")) {
    for (auto& [run, recorded] : harnessd::worker::segment::read_all(read_file(e.path().string()))) {
      out[run] += recorded.files["events.jsonl"];
    }
  }
  return out;
}

// True when a run's events.jsonl holds the adapter's chunk `text`.
bool recorded_chunk(const std::string& events, const std::string& text) {
  std::size_t at = 0;
  while (at < events.size()) {
    std::size_t end = events.find('\n', at);
    if (end == std::string::npos) end = events.size();
    json line = json::parse(events.substr(at, end - at), nullptr, false);
    at = end + 1;
    if (!line.is_object() || !line.contains("msg")) continue;
    const json& msg = line["msg"];
    if (msg.value("method", "") != "session/update") continue;
    const json& update = msg["params"]["update"];
    if (update.value("sessionUpdate", "") == "agent_message_chunk" && update["content"].value("text", "") == text) {
      return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("a session served by one process is refused to another, then taken over once it lets go", "[lease]") {
  TempDir state;
  const std::string config = fake_config();
  auto a = std::make_unique<Daemon>(config, std::vector<std::string>{}, state.path());
  a->initialize();
  const std::string sid = a->new_session("/tmp", named("shared"));
  CHECK(a->prompt(sid, "echo from a")["result"]["stopReason"] == "end_turn");

  Daemon b(config, {}, state.path());
  b.initialize();
  // By name, by id, and closing it: all refused while a serves it.
  check_busy(ask(b, 1, "session/new", new_session_params(named("shared"))), sid, a->pid());
  check_busy(ask(b, 2, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}), sid,
             a->pid());
  check_busy(ask(b, 3, "session/resume", {{"sessionId", sid}, {"cwd", "/tmp"}}), sid, a->pid());
  check_busy(ask(b, 4, "session/close", {{"sessionId", sid}}), sid, a->pid());
  // session/list says who serves it.
  json listed = ask(b, 5, "session/list", json::object());
  bool seen = false;
  for (const auto& s : listed["result"]["sessions"]) {
    if (s["sessionId"] != sid) continue;
    seen = true;
    CHECK(s["_meta"]["harnessd"]["servedBy"]["pid"] == a->pid());
  }
  CHECK(seen);
  // Sessions of its own are not affected.
  const std::string other = b.new_session("/tmp", named("b-only"));
  CHECK(b.prompt(other, "echo from b")["result"]["stopReason"] == "end_turn");
  // a serves it on, and b's session is refused to a.
  CHECK(a->prompt(sid, "echo again")["result"]["stopReason"] == "end_turn");
  check_busy(ask(*a, 6, "session/new", new_session_params(named("b-only"))), other, b.pid());

  SECTION("after a clean exit") {
    a.reset();
    json again = ask(b, 7, "session/new", new_session_params(named("shared")));
    INFO(again.dump());
    CHECK(again["result"]["sessionId"] == sid);
    CHECK(again["result"]["_meta"]["harnessd"]["created"] == false);
    CHECK(b.prompt(sid, "history")["result"]["stopReason"] == "end_turn");
  }
  SECTION("after kill -9") {
    ::kill(a->pid(), SIGKILL);
    a.reset();
    json loaded = ask(b, 7, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}});
    INFO(loaded.dump());
    CHECK(loaded.contains("result"));
    CHECK(b.prompt(sid, "echo taken over")["result"]["stopReason"] == "end_turn");
  }
  SECTION("after session/close") {
    CHECK(ask(*a, 7, "session/close", {{"sessionId", sid}}).contains("result"));
    // Closed: the name makes a new session.
    json fresh = ask(b, 8, "session/new", new_session_params(named("shared")));
    INFO(fresh.dump());
    CHECK(fresh["result"]["sessionId"] != sid);
    CHECK(fresh["result"]["_meta"]["harnessd"]["created"] == true);
  }
}

TEST_CASE("processes asking for one name at the same moment end up with one session", "[lease]") {
  TempDir state;
  const std::string config = fake_config();
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 4; ++i) {
    daemons.push_back(std::make_unique<Daemon>(config, std::vector<std::string>{}, state.path()));
    daemons.back()->initialize();
  }
  for (auto& d : daemons) d->send(request(1, "session/new", new_session_params(named("race"))));
  std::set<std::string> created;
  int served = 0, busy = 0;
  pid_t owner = 0;
  for (auto& d : daemons) {
    json answer = d->recv_reply(1);
    INFO(answer.dump());
    if (answer.contains("result")) {
      ++served;
      owner = d->pid();
      created.insert(answer["result"]["sessionId"].get<std::string>());
    } else {
      CHECK(answer["error"]["code"] == -32017);
      ++busy;
    }
  }
  CHECK(served == 1);
  CHECK(busy == 3);
  REQUIRE(created.size() == 1);
  for (auto& d : daemons) {
    if (d->pid() == owner) continue;
    check_busy(ask(*d, 2, "session/new", new_session_params(named("race"))), *created.begin(), owner);
  }
}

TEST_CASE("two and four processes on one state directory run prompts at once", "[lease]") {
  const int processes = GENERATE(2, 4);
  constexpr int kSessions = 2, kPrompts = 25;
  TempDir state;
  const std::string config = fake_config({}, "", "max_queue_depth = 64");
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < processes; ++i) {
    daemons.push_back(std::make_unique<Daemon>(config, std::vector<std::string>{}, state.path()));
    daemons.back()->initialize();
  }
  // Every process sends all its prompts at once, then reads the answers.
  std::vector<std::map<int, std::string>> sent(daemons.size());  // request id -> session
  for (std::size_t i = 0; i < daemons.size(); ++i) {
    std::vector<std::string> sids;
    for (int s = 0; s < kSessions; ++s) sids.push_back(daemons[i]->new_session("/tmp", named("p" + std::to_string(i) + "s" + std::to_string(s))));
    for (int p = 0; p < kPrompts; ++p) {
      for (const auto& sid : sids) sent[i][daemons[i]->send_prompt(sid, "echo " + sid + " " + std::to_string(p))] = sid;
    }
  }
  std::set<std::string> answered_runs;
  for (std::size_t i = 0; i < daemons.size(); ++i) {
    std::size_t answers = 0;
    while (answers < sent[i].size()) {
      auto m = daemons[i]->recv(10s);
      REQUIRE(m);
      if (!m->contains("id") || m->contains("method")) continue;
      INFO(m->dump());
      CHECK(sent[i].count((*m)["id"].get<int>()) == 1);
      CHECK((*m)["result"]["stopReason"] == "end_turn");
      answered_runs.insert(run_id_of(*m));
      ++answers;
    }
  }
  REQUIRE(answered_runs.size() == static_cast<std::size_t>(processes * kSessions * kPrompts));
  // Each process lists every run, whoever recorded it.
  for (auto& d : daemons) {
    json listed = ask(*d, 99, "_harnessd/runs/list", {{"limit", 1000}});
    INFO(listed.dump().substr(0, 400));
    REQUIRE(listed.contains("result"));
    std::set<std::string> ids;
    for (const auto& r : listed["result"]["runs"]) {
      ids.insert(r["runId"].get<std::string>());
      CHECK(r["state"] == "completed");
    }
    CHECK(ids == answered_runs);
    CHECK(listed["result"]["total"] == answered_runs.size());
  }
  for (auto& d : daemons) CHECK(d->stderr_text().find("locked") == std::string::npos);
  daemons.clear();
  CHECK(check_ledger(state.path()).empty());
}

TEST_CASE("kill -9 at random points of a 200-prompt load, 20 times: every run ends once, as the host heard",
          "[lease][crash]") {
  constexpr int kRounds = 20, kSessions = 8, kPrompts = 200;
  TempDir state;
  const std::string config = fake_config({}, "", "max_queue_depth = 64");
  std::mt19937 random(20261201);
  struct Heard {
    std::string stop;      // the answer's stopReason, or the error's code
    std::string text;      // the chunk text it streamed
  };
  std::map<std::string, Heard> heard;  // by run id
  std::size_t answered_total = 0;
  for (int round = 0; round < kRounds; ++round) {
    Daemon d(config, {}, state.path());
    d.initialize();
    std::vector<std::string> sids;
    for (int s = 0; s < kSessions; ++s) sids.push_back(d.new_session("/tmp", named("s" + std::to_string(s))));
    std::map<int, std::string> tags;  // request id -> the text it echoes
    for (int p = 0; p < kPrompts; ++p) {
      const std::string tag = "r" + std::to_string(round) + "p" + std::to_string(p);
      tags[d.send_prompt(sids[static_cast<std::size_t>(p % kSessions)], "echo " + tag)] = tag;
    }
    // Read for a random part of the load, then kill.
    const std::size_t answers_before_kill = std::uniform_int_distribution<std::size_t>(0, kPrompts - 1)(random);
    std::size_t answers = 0;
    while (answers < answers_before_kill) {
      auto m = d.recv(10s);
      REQUIRE(m);
      if (!m->contains("id") || m->contains("method")) continue;
      ++answers;
      const std::string& tag = tags.at((*m)["id"].get<int>());
      Heard h;
      INFO(m->dump());
      REQUIRE(m->contains("result"));
      h.stop = (*m)["result"]["stopReason"].get<std::string>();
      h.text = tag;
      CHECK(h.stop == "end_turn");
      heard[run_id_of(*m)] = h;
    }
    ::kill(d.pid(), SIGKILL);
    answered_total += answers;
  }
  {
    // The next start ends what the last one left open.
    Daemon last(config, {}, state.path());
    last.initialize();
  }
  INFO(answered_total << " answers heard over " << kRounds << " rounds");
  Ledger ledger = read_ledger(state.path());
  CHECK(ledger.bad.empty());
  CHECK(check_ledger(state.path()).empty());
  std::set<std::string> runs;
  for (const auto& e : ledger.entries) runs.insert(e["runId"].get<std::string>());
  // A prompt harnessd had not read from its stdin yet never became a run;
  // every one the host heard of did.
  CHECK(runs.size() <= static_cast<std::size_t>(kRounds * kPrompts));
  for (const auto& [run, h] : heard) CHECK(runs.count(run) == 1);
  std::map<std::string, std::string> events = recorded_events(state.path());
  for (const auto& run : runs) {
    auto end = ledger.terminal.find(run);
    REQUIRE(end != ledger.terminal.end());
    REQUIRE(end->second.size() == 1);
    auto h = heard.find(run);
    if (h == heard.end()) {
      // Never answered: it may have completed before the kill, or not.
      const std::string state_of = end->second[0]["event"];
      CHECK((state_of == "completed" || state_of == "interrupted"));
      continue;
    }
    INFO("run " << run);
    CHECK(end->second[0]["event"] == "completed");
    // Every frame the host got before the answer is in the recording.
    CHECK(recorded_chunk(events[run], h->second.text));
  }
}

TEST_CASE("close and forget from the shell refuse a session another process holds the lease of", "[lease]") {
  TempDir state;
  const std::string config = fake_config();
  std::string sid;
  {
    Daemon a(config, {}, state.path());
    a.initialize();
    sid = a.new_session("/tmp", named("held"));
    CHECK(a.prompt(sid, "echo from a")["result"]["stopReason"] == "end_turn");
    ::kill(a.pid(), SIGKILL);  // its record names a daemon that is gone
  }
  Daemon b(config, {}, state.path());
  b.initialize();
  REQUIRE(ask(b, 1, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}})
              .contains("result"));
  for (const std::string command : {"close held", "forget held", "forget held --dry-run"}) {
    INFO(command);
    std::string out;
    CHECK(run_cli(command + " --state-dir " + state.path(), &out) == 1);
    CHECK(out.find("served by running daemon") != std::string::npos);
    CHECK(out.find("(pid " + std::to_string(b.pid()) + ")") != std::string::npos);
  }
  // b serves it on.
  CHECK(b.prompt(sid, "echo still b")["result"]["stopReason"] == "end_turn");
}
