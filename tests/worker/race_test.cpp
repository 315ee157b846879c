// Races around cancellation: whatever the timing, every prompt is answered
// exactly once with the right stop reason and nothing leaks into the next.
#include <catch2/catch.hpp>

#include <map>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json cancel_of(const std::string& sid) {
  return {{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}};
}

// Reads everything until nothing arrives for `window`.
std::vector<json> drain(Daemon& d, std::chrono::milliseconds window = 300ms) {
  std::vector<json> out;
  while (auto m = d.recv(window)) out.push_back(*m);
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
  auto all = drain(d, 1500ms);
  CHECK(answers(all) == std::map<int, int>{{1, 1}});
  CHECK(answer_to(all, 1)["result"]["stopReason"] == "cancelled");
  next_prompt_is_clean(d, sid);
}

TEST_CASE("race: cancel while the adapter is in initialize") {
  Daemon d(fake_config({"--init-delay", "400"}));
  d.initialize();
  std::string sid = d.new_session();
  int id = d.send_prompt(sid, "slow 5000");
  std::this_thread::sleep_for(150ms);
  d.send(cancel_of(sid));
  auto all = drain(d, 1500ms);
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
  auto all = drain(d);
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
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  d.prompt(sid, "echo warm");  // adapter up, so the turn's timing is the adapter's
  int finished = 0, cancelled = 0;
  for (int delay = 0; delay <= 60; delay += 4) {
    int id = d.send_prompt(sid, "timed 30");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    d.send(cancel_of(sid));
    auto all = drain(d, 150ms);
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
  std::this_thread::sleep_for(40ms);  // first ends about now and second starts
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", second}}}});
  auto all = drain(d, 1000ms);
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
  auto all = drain(d);
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
  auto all = drain(d, 2000ms);
  auto count = answers(all);
  CHECK(count.size() == ids.size());
  for (int id : ids) {
    CHECK(count[id] == 1);
    CHECK(answer_to(all, id)["result"]["stopReason"] == "cancelled");
  }
  CHECK(d.wait_exit(5s) == 0);
}
