// Stress: 1,000 named sessions with 10 prompts each against the fake agent,
// 32 turns at a time. Every prompt is answered exactly once, in order per
// session, and no process is left (the leak check runs after the test).
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

TEST_CASE("stress: 1,000 named sessions, 10 prompts each, 32 at a time") {
  constexpr int kSessions = 1000;
  constexpr int kPrompts = 10;
  // The state goes to memory when the machine has /dev/shm: this test is
  // about the queues, and 10,000 run folders on a slow disk would measure
  // the disk (the store's own tests use the disk).
  std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
  std::string state_tmpl = base + "/harnessd-stress-XXXXXX";
  REQUIRE(mkdtemp(state_tmpl.data()) != nullptr);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{state_tmpl};
  Daemon d(fake_config({}, "", "max_concurrent_runs = 32\n"), {"--log-level", "warn"}, state_tmpl);
  d.initialize();
  std::vector<std::string> sids;
  for (int s = 0; s < kSessions; ++s) {
    sids.push_back(d.new_session("/tmp", {{"harnessd", {{"name", "stress:" + std::to_string(s)}}}}));
  }
  // Send everything at once: 10,000 prompts in flight.
  std::map<int, std::pair<int, int>> what;  // request id -> (session, n)
  std::string batch;
  int next_id = 1;
  for (int n = 0; n < kPrompts; ++n) {
    for (int s = 0; s < kSessions; ++s) {
      json p = {{"jsonrpc", "2.0"},
                {"id", next_id},
                {"method", "session/prompt"},
                {"params",
                 {{"sessionId", sids[s]},
                  {"prompt", {{{"type", "text"}, {"text", "echo " + std::to_string(s) + ":" + std::to_string(n)}}}}}}};
      what[next_id++] = {s, n};
      batch += p.dump() + "\n";
    }
  }
  d.send_raw(batch);

  std::map<int, int> answered;      // request id -> count
  std::vector<int> progress(kSessions, 0);  // next n expected per session
  std::map<std::string, int> session_index;
  for (int s = 0; s < kSessions; ++s) session_index[sids[s]] = s;
  std::size_t total = 0;
  auto deadline = std::chrono::steady_clock::now() + 180s;
  while (total < what.size() && std::chrono::steady_clock::now() < deadline) {
    auto m = d.recv(30s);
    REQUIRE(m);
    if (m->value("method", "") == "session/update") {
      // The chunk says which prompt ran: it must be the next one of its session.
      std::string text = (*m)["params"]["update"]["content"]["text"];
      int s = session_index.at((*m)["params"]["sessionId"]);
      REQUIRE(text == std::to_string(s) + ":" + std::to_string(progress[s]));
      ++progress[s];
    } else if (m->contains("id")) {
      REQUIRE((*m)["result"]["stopReason"] == "end_turn");
      int id = (*m)["id"];
      REQUIRE(++answered[id] == 1);
      ++total;
    }
  }
  CHECK(total == what.size());
  for (int s = 0; s < kSessions; ++s) CHECK(progress[s] == kPrompts);
  d.close_stdin();
  CHECK(d.wait_exit(60s) == 0);
}
