// Queues at the ACP surface: order per session, parallel sessions, the
// concurrency limit, the depth limit, named sessions, $/cancel_request,
// run deadlines and run ids.
#include <catch2/catch.hpp>

#include <regex>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json prompt_params(const std::string& sid, const std::string& text, const json& meta = nullptr) {
  json p = {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", text}}}}};
  if (!meta.is_null()) p["_meta"] = {{"harnessd", meta}};
  return p;
}

struct Interval {
  long long start = 0, end = 0;
};

// Parses the "start S end E" chunk of the fake agent's `timed` command.
Interval interval_of(const std::vector<json>& seen) {
  std::smatch m;
  std::string text = message_text(seen);
  REQUIRE(std::regex_match(text, m, std::regex("start (\\d+) end (\\d+)")));
  return {std::stoll(m[1]), std::stoll(m[2])};
}

// Sends the prompts at once, then collects each answer with the updates
// that came for its session before it.
std::map<int, std::pair<json, std::vector<json>>> run_all(Daemon& d, const std::vector<std::pair<std::string, std::string>>& prompts) {
  std::map<int, std::string> session_of;
  for (const auto& [sid, text] : prompts) session_of[d.send_prompt(sid, text)] = sid;
  std::map<std::string, std::vector<json>> pending;
  std::map<int, std::pair<json, std::vector<json>>> out;
  while (out.size() < prompts.size()) {
    auto m = d.recv();
    REQUIRE(m);
    if (m->value("method", "") == "session/update") {
      pending[(*m)["params"]["sessionId"]].push_back(*m);
    } else if (m->contains("id") && !m->contains("method")) {
      int id = (*m)["id"];
      out[id] = {*m, std::move(pending[session_of.at(id)])};
      pending[session_of.at(id)].clear();
    }
  }
  return out;
}

}  // namespace

TEST_CASE("three prompts on one session run one after another, answered in order") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  std::vector<int> ids = {d.send_prompt(sid, "timed 150"), d.send_prompt(sid, "timed 150"),
                          d.send_prompt(sid, "timed 150")};
  std::vector<int> order;
  std::vector<Interval> intervals;
  std::vector<json> seen;
  while (order.size() < 3) {
    auto m = d.recv();
    REQUIRE(m);
    if (m->contains("id") && !m->contains("method")) {
      order.push_back((*m)["id"]);
      CHECK((*m)["result"]["stopReason"] == "end_turn");
      intervals.push_back(interval_of(seen));
      seen.clear();
    } else {
      seen.push_back(*m);
    }
  }
  CHECK(order == ids);
  CHECK(intervals[1].start >= intervals[0].end);
  CHECK(intervals[2].start >= intervals[1].end);
}

TEST_CASE("prompts of two sessions overlap") {
  Daemon d;
  d.initialize();
  std::string a = d.new_session(), b = d.new_session();
  auto out = run_all(d, {{a, "timed 400"}, {b, "timed 400"}});
  std::vector<Interval> iv;
  for (auto& [id, r] : out) iv.push_back(interval_of(r.second));
  CHECK(iv[0].start < iv[1].end);
  CHECK(iv[1].start < iv[0].end);
}

TEST_CASE("max_concurrent_runs = 1 serialises sessions") {
  Daemon serial(fake_config({}, "", "max_concurrent_runs = 1\n"));
  serial.initialize();
  std::string a = serial.new_session(), b = serial.new_session(), c = serial.new_session();
  auto out = run_all(serial, {{a, "timed 150"}, {b, "timed 150"}, {c, "timed 150"}});
  std::vector<Interval> iv;
  for (auto& [id, r] : out) iv.push_back(interval_of(r.second));
  std::sort(iv.begin(), iv.end(), [](auto& x, auto& y) { return x.start < y.start; });
  CHECK(iv[1].start >= iv[0].end);
  CHECK(iv[2].start >= iv[1].end);
}

TEST_CASE("a full queue answers a retryable error and loses nothing") {
  Daemon d(fake_config({}, "", "max_queue_depth = 2\n"));
  d.initialize();
  std::string sid = d.new_session();
  int running = d.send_prompt(sid, "slow 400");
  int q1 = d.send_prompt(sid, "echo q1");
  int q2 = d.send_prompt(sid, "echo q2");
  int over = d.send_prompt(sid, "echo over");
  json full = d.recv_reply(over);
  CHECK(full["error"]["code"] == -32014);
  CHECK(full["error"]["data"]["retryable"] == true);
  CHECK(full["error"]["data"]["sessionId"] == sid);
  std::vector<json> seen;
  CHECK(d.recv_reply(running, &seen)["result"]["stopReason"] == "end_turn");
  CHECK(d.recv_reply(q1, &seen)["result"]["stopReason"] == "end_turn");
  CHECK(d.recv_reply(q2, &seen)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen).find("q1q2") != std::string::npos);
}

TEST_CASE("named sessions: ensure returns the open one, a new one takes the name") {
  Daemon d;
  d.initialize();
  json meta = {{"harnessd", {{"name", "agent:trading:daily"}, {"ensure", true}}}};
  std::string first = d.new_session("/tmp", meta);
  CHECK(d.new_session("/tmp", meta) == first);

  int running = d.send_prompt(first, "slow 5000");
  REQUIRE(d.recv());
  d.send(request(50, "session/new",
                 {{"cwd", "/tmp"}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"name", "agent:trading:daily"}}}}}}));
  // The old holder is closed: its running prompt is answered cancelled
  // (once its ledger line is written; before or after the new session).
  std::map<int, json> answers;
  while (answers.size() < 2) {
    auto m = d.recv();
    REQUIRE(m);
    if (m->contains("id") && !m->contains("method")) answers[(*m)["id"].get<int>()] = *m;
  }
  std::string second = answers.at(50)["result"]["sessionId"];
  CHECK(second != first);
  CHECK(answers.at(running)["result"]["stopReason"] == "cancelled");
  d.send(request(1, "session/prompt", prompt_params(first, "echo x")));
  CHECK(d.recv_reply(1)["error"]["code"] == -32002);
  CHECK(d.new_session("/tmp", meta) == second);

  // session/close frees the name: ensure then creates a new session.
  d.send(request(51, "session/close", {{"sessionId", second}}));
  CHECK(d.recv_reply(51)["result"] == json::object());
  std::string third = d.new_session("/tmp", meta);
  CHECK(third != second);

  d.send(request(2, "session/new", {{"cwd", "/tmp"}, {"_meta", {{"harnessd", {{"ensure", true}}}}}}));
  CHECK(d.recv_reply(2)["error"]["data"]["field"] == "_meta.harnessd.ensure");
}

TEST_CASE("_harnessd/sessions/list shows name, harness, cwd, state, queue, request and pid") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session("/tmp", {{"harnessd", {{"name", "worker-1"}}}});
  int running = d.send_prompt(sid, "slow 2000");
  d.send_prompt(sid, "echo later");
  REQUIRE(d.recv());  // the first tick: the turn is active
  d.send(request(7, "_harnessd/sessions/list", json::object()));
  json list = d.recv_reply(7)["result"];
  REQUIRE(list["sessions"].size() == 1);
  json s = list["sessions"][0];
  CHECK(s["sessionId"] == sid);
  CHECK(s["name"] == "worker-1");
  CHECK(s["harness"] == "fake");
  CHECK(s["cwd"] == "/tmp");
  CHECK(s["state"] == "active");
  CHECK(s["queueDepth"] == 1);
  CHECK(s["activeRequestId"] == running);
  CHECK(s["activeRunId"].get<std::string>().rfind("run_", 0) == 0);
  CHECK(process_alive(s["adapterPid"].get<int>()));
  CHECK(list["running"] == 1);
  CHECK(list["queued"] == 1);
}

TEST_CASE("$/cancel_request removes a queued prompt, or cancels the running one") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  int running = d.send_prompt(sid, "slow 3000");
  int queued = d.send_prompt(sid, "echo never");
  int after = d.send_prompt(sid, "echo after");
  REQUIRE(d.recv());
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", queued}}}});
  // The queued prompt is answered at once, before the running one ends.
  json q = d.recv_reply(queued);
  CHECK(q["result"]["stopReason"] == "cancelled");
  CHECK(q["result"]["_meta"]["harnessd"]["runId"].is_string());
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", running}}}});
  CHECK(d.recv_reply(running)["result"]["stopReason"] == "cancelled");
  std::vector<json> seen;
  CHECK(d.recv_reply(after, &seen)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "after");  // "never" never ran
  // Unknown ids and bad payloads are ignored (notifications get no answer).
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", 12345}}}});
  d.send({{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", json::array()}}}});
  d.send(request(9, "session/list", json::object()));
  CHECK(d.recv_reply(9).contains("result"));
}

TEST_CASE("a run past its deadline is stopped and answered as a timeout, never as done") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  SECTION("with partial output") {
    d.send(request(1, "session/prompt", prompt_params(sid, "slow 5000", {{"timeoutMs", 300}})));
    std::vector<json> seen;
    json r = d.recv_reply(1, &seen);
    REQUIRE(r.contains("error"));
    CHECK(r["error"]["code"] == -32015);
    CHECK(r["error"]["data"]["reason"] == "timeout");
    CHECK(r["error"]["data"]["partialOutput"] == true);
    CHECK(r["error"]["data"]["timeoutMs"] == 300);
    CHECK(r["error"]["data"]["runId"].get<std::string>().rfind("run_", 0) == 0);
    CHECK_FALSE(seen.empty());
    CHECK(d.quiet_for(200ms));
  }
  SECTION("without output, from an adapter that ignores the cancel") {
    d.send(request(1, "session/prompt", prompt_params(sid, "timed 60000", {{"timeoutMs", 200}})));
    json r = d.recv_reply(1);
    CHECK(r["error"]["data"]["partialOutput"] == false);
    d.send(request(2, "session/prompt", prompt_params(sid, "ignore-cancel 60000", {{"timeoutMs", 200}})));
    auto start = std::chrono::steady_clock::now();
    json r2 = d.recv_reply(2);
    CHECK(r2["error"]["code"] == -32015);
    CHECK(std::chrono::steady_clock::now() - start < 3s);  // deadline + cancel grace, then killed
    // The session goes on with a fresh adapter.
    CHECK(d.prompt(sid, "echo alive")["result"]["stopReason"] == "end_turn");
  }
  SECTION("the deadline counts from the turn's start, not from the enqueue") {
    int first = d.send_prompt(sid, "timed 400");
    d.send(request(2, "session/prompt", prompt_params(sid, "timed 100", {{"timeoutMs", 300}})));
    CHECK(d.recv_reply(first)["result"]["stopReason"] == "end_turn");
    CHECK(d.recv_reply(2)["result"]["stopReason"] == "end_turn");
  }
  SECTION("a session default and a prompt that overrides it") {
    std::string limited = d.new_session("/tmp", {{"harnessd", {{"timeoutMs", 200}}}});
    d.send(request(3, "session/prompt", prompt_params(limited, "timed 2000")));
    CHECK(d.recv_reply(3)["error"]["code"] == -32015);
    d.send(request(4, "session/prompt", prompt_params(limited, "timed 400", {{"timeoutMs", 0}})));
    CHECK(d.recv_reply(4)["result"]["stopReason"] == "end_turn");
  }
  SECTION("a deadline that passes while the adapter starts") {
    Daemon slow(fake_config({"--init-delay", "2000"}));
    slow.initialize();
    // The first session of a harness starts its adapter at session/new, to
    // learn its options; the second one's adapter starts with its prompt.
    slow.new_session();
    std::string s2 = slow.new_session();
    slow.send(request(5, "session/prompt", prompt_params(s2, "echo x", {{"timeoutMs", 200}})));
    auto start = std::chrono::steady_clock::now();
    json r = slow.recv_reply(5);
    CHECK(r["error"]["code"] == -32015);
    CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  }
}

TEST_CASE("[daemon] run_timeout applies to every run") {
  Daemon d(fake_config({}, "", "run_timeout = 0.2\n"));
  d.initialize();
  std::string sid = d.new_session();
  CHECK(d.prompt(sid, "timed 1000")["error"]["data"]["reason"] == "timeout");
  CHECK(d.prompt(sid, "echo quick")["result"]["stopReason"] == "end_turn");
}

TEST_CASE("lanes and timeouts are checked") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  d.send(request(1, "session/prompt", prompt_params(sid, "echo x", {{"lane", "urgent"}})));
  json lane = d.recv_reply(1);
  CHECK(lane["error"]["code"] == -32602);
  CHECK(lane["error"]["data"]["field"] == "_meta.harnessd.lane");
  d.send(request(2, "session/prompt", prompt_params(sid, "echo x", {{"timeoutMs", -5}})));
  CHECK(d.recv_reply(2)["error"]["data"]["field"] == "_meta.harnessd.timeoutMs");
  d.send(request(3, "session/prompt", prompt_params(sid, "echo x", {{"lane", "background"}})));
  CHECK(d.recv_reply(3)["result"]["stopReason"] == "end_turn");
}

TEST_CASE("adapter errors keep their code and gain the runId") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  json r = d.prompt(sid, "error -32042 model overloaded");
  CHECK(r["error"]["code"] == -32042);
  CHECK(r["error"]["data"]["runId"].get<std::string>().rfind("run_", 0) == 0);
  json ok = d.prompt(sid, "echo fine");
  CHECK(ok["result"]["_meta"]["harnessd"]["runId"] != r["error"]["data"]["runId"]);
}
