// Races around cancellation: whatever the timing, every prompt is answered
// exactly once with the right stop reason and nothing leaks into the next.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json cancel_of(const std::string& sid) {
  return {{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}};
}

// Reads every message up to and including the answer to `id`.
std::vector<json> until_answer(Daemon& d, int id) {
  std::vector<json> out;
  for (;;) {
    auto m = d.recv(10s);
    REQUIRE(m);
    out.push_back(*m);
    if (m->contains("id") && !m->contains("method") && (*m)["id"] == id) return out;
  }
}

// Reads every message until each of `ids` has an answer; after that,
// nothing more may come for a moment (a second answer would).
std::vector<json> until_answers(Daemon& d, const std::set<int>& ids) {
  std::vector<json> out;
  std::set<int> left = ids;
  while (!left.empty()) {
    auto m = d.recv(10s);
    REQUIRE(m);
    out.push_back(*m);
    if (m->contains("id") && !m->contains("method") && (*m)["id"].is_number_integer()) left.erase((*m)["id"].get<int>());
  }
  CHECK(d.quiet_for(300ms));
  return out;
}

// How many answers each request id got.
std::map<int, int> answers(const std::vector<json>& messages) {
  std::map<int, int> count;
  for (const auto& m : messages) {
    if (m.contains("id") && !m.contains("method") && m["id"].is_number_integer()) ++count[m["id"].get<int>()];
  }
  return count;
}

json answer_to(const std::vector<json>& messages, int id) {
  for (const auto& m : messages) {
    if (m.contains("id") && !m.contains("method") && m["id"] == id) return m;
  }
  FAIL("no answer to " << id);
  return {};
}

// The next prompt runs untouched: its own chunk, end_turn, nothing else.
void next_prompt_is_clean(Daemon& d, const std::string& sid) {
  std::vector<json> seen;
  json r = d.prompt(sid, "echo next", &seen);
  CHECK(r["result"]["stopReason"] == "end_turn");
  REQUIRE(seen.size() == 1);
  CHECK(message_text(seen) == "next");
  CHECK(d.quiet_for(100ms));
}

}  // namespace

TEST_CASE("race: cancel in the same read as the prompt, before the adapter is up") {
  Daemon d(fake_config({"--init-delay", "300"}));
  d.initialize();
  std::string sid = d.new_session();
  json prompt = {{"jsonrpc", "2.0"},
                 {"id", 1},
                 {"method", "session/prompt"},
                 {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", "slow 5000"}}}}}}};
  d.send_raw(prompt.dump() + "\n" + cancel_of(sid).dump() + "\n");
  auto all = until_answers(d, {1});
  CHECK(answers(all) == std::map<int, int>{{1, 1}});
  CHECK(answer_to(all, 1)["result"]["stopReason"] == "cancelled");
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: cancel while the adapter is in initialize") {
  TempDir dir;
  std::string log = dir.path() + "/agent.log";
  Daemon d(fake_config({"--init-delay", "400", "--log-file", log}));
  d.initialize();
  std::string sid = d.new_session();
  int id = d.send_prompt(sid, "slow 5000");
  // The adapter logs initialize as it reads it, then takes 400 ms to answer.
  REQUIRE(eventually([&] { return read_file(log).find("\"initialize\"") != std::string::npos; }, 10s));
  d.send(cancel_of(sid));
  auto all = until_answers(d, {id});
  CHECK(answers(all) == std::map<int, int>{{id, 1}});
  CHECK(answer_to(all, id)["result"]["stopReason"] == "cancelled");
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: cancel mid-stream, then twice in a row") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  int id = d.send_prompt(sid, "slow 5000");
  REQUIRE(d.recv());
  d.send(cancel_of(sid));
  d.send(cancel_of(sid));
  auto all = until_answers(d, {id});
  CHECK(answers(all) == std::map<int, int>{{id, 1}});
  CHECK(answer_to(all, id)["result"]["stopReason"] == "cancelled");
  // Nothing of the cancelled turn after its answer.
  bool answered = false;
  for (const auto& m : all) {
    if (m.value("id", json()) == id) answered = true;
    if (answered) CHECK(m.value("method", "") != "session/update");
  }
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: cancel at the very moment the turn completes") {
  TempDir dir;
  std::string timing = dir.path() + "/timing";
  Daemon d(fake_config({"--timing-file", timing}));
  d.initialize();
  std::string sid = d.new_session();
  d.prompt(sid, "echo warm");  // adapter up, so the turn's timing is the adapter's
  int finished = 0, cancelled = 0;
  // The adapter writes a line to the timing file as it reads each prompt.
  auto prompts_read = [&] {
    std::string text = read_file(timing);
    return std::count(text.begin(), text.end(), '\n');
  };
  for (int delay = 0; delay <= 60; delay += 4) {
    auto before = prompts_read();
    int id = d.send_prompt(sid, "timed 30");
    // The cancel goes `delay` ms after the adapter began the 30 ms turn (the
    // offset is what sweeps the race; the start is observed, not guessed).
    REQUIRE(eventually([&] { return prompts_read() > before; }, 10s));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    d.send(cancel_of(sid));
    auto all = until_answer(d, id);
    INFO("delay " << delay);
    REQUIRE(answers(all) == std::map<int, int>{{id, 1}});
    std::string reason = answer_to(all, id)["result"]["stopReason"];
    CHECK((reason == "end_turn" || reason == "cancelled"));
    (reason == "end_turn" ? finished : cancelled)++;
    next_prompt_is_clean(d, sid);
  }
  // Both sides of the race were hit.
  CHECK(finished > 0);
  CHECK(cancelled > 0);
}

TEST_CASE("race: cancel while idle, then a prompt") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  d.send(cancel_of(sid));  // before any prompt, even before the adapter exists
  next_prompt_is_clean(d, sid);
  d.send(cancel_of(sid));
  d.send(cancel_of(sid));
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: $/cancel_request for the prompt that is about to start") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  d.prompt(sid, "echo warm");
  int first = d.send_prompt(sid, "timed 40");
  int second = d.send_prompt(sid, "slow 5000");
  // The moment the first is answered, the second is about to start.
  auto all = until_answer(d, first);
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", second}}}});
  for (auto& m : until_answer(d, second)) all.push_back(std::move(m));
  CHECK(d.quiet_for(200ms));  // and nothing after
  CHECK(answers(all) == std::map<int, int>{{first, 1}, {second, 1}});
  CHECK(answer_to(all, first)["result"]["stopReason"] == "end_turn");
  CHECK(answer_to(all, second)["result"]["stopReason"] == "cancelled");
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: close with a full queue answers every prompt cancelled, once") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  std::vector<int> ids;
  for (int i = 0; i < 17; ++i) ids.push_back(d.send_prompt(sid, i == 0 ? "slow 5000" : "echo queued"));
  REQUIRE(d.recv());  // the first is running
  d.send({{"jsonrpc", "2.0"}, {"id", 99}, {"method", "session/close"}, {"params", {{"sessionId", sid}}}});
  std::set<int> awaited(ids.begin(), ids.end());
  awaited.insert(99);
  auto all = until_answers(d, awaited);
  auto count = answers(all);
  CHECK(count.size() == 18);
  for (int id : ids) {
    CHECK(count[id] == 1);
    CHECK(answer_to(all, id)["result"]["stopReason"] == "cancelled");
  }
  CHECK(answer_to(all, 99)["result"] == json::object());
  // The close reply comes after every prompt's answer.
  CHECK(all.back()["id"] == 99);
}

TEST_CASE("race: host EOF with a full queue answers every prompt cancelled and exits 0") {
  Daemon d;
  d.initialize();
  std::string a = d.new_session(), b = d.new_session();
  std::vector<int> ids;
  for (int i = 0; i < 17; ++i) ids.push_back(d.send_prompt(a, i == 0 ? "slow 5000" : "echo queued"));
  for (int i = 0; i < 5; ++i) ids.push_back(d.send_prompt(b, "slow 5000"));
  REQUIRE(d.recv());
  d.close_stdin();
  auto all = until_answers(d, std::set<int>(ids.begin(), ids.end()));
  auto count = answers(all);
  CHECK(count.size() == ids.size());
  for (int id : ids) {
    CHECK(count[id] == 1);
    CHECK(answer_to(all, id)["result"]["stopReason"] == "cancelled");
  }
  CHECK(d.wait_exit(5s) == 0);
}
