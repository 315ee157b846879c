// Idle adapters give way: a cap on adapters alive at once, eviction of the
// least recently used idle one, eviction after adapter_idle_ttl, and the
// adapter's own session resumed by the next prompt, in this lifetime or the
// next.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json open_sessions(Daemon& d) {
  static int id = 900000;
  json req = request(++id, "_harnessd/sessions/list", json::object());
  d.send(req);
  return d.recv_reply(req["id"]);
}

json adapter_of(Daemon& d, const std::string& sid) {
  json list = open_sessions(d);
  for (const auto& s : list["result"]["sessions"]) {
    if (s["sessionId"] == sid) return s["adapter"];
  }
  return nullptr;
}

std::string fake_dir_config(const TempDir& dir, const std::string& daemon) {
  return fake_config({"--state-dir", dir.path() + "/fake", "--resume", "--close", "--log-file", dir.path() + "/fake.log"},
                     "", daemon);
}

}  // namespace

TEST_CASE("2,000 sessions under max_live_adapters = 50: never more than 50 adapters, every prompt answered, "
          "evicted sessions resumed") {
  constexpr int kSessions = 2000;
  constexpr std::size_t kCap = 50;
  TempDir dir;
  Daemon d(fake_dir_config(dir, "max_live_adapters = 50\nmax_concurrent_runs = 8\n"), {"--log-level", "warn"});
  d.initialize();
  std::vector<std::string> sids;
  for (int s = 0; s < kSessions; ++s) sids.push_back(d.new_session("/tmp"));

  // Samples the daemon's children (one guard per adapter) while the prompts run.
  std::atomic<bool> sampling{true};
  std::atomic<std::size_t> most{0};
  std::atomic<std::size_t> samples{0};
  std::thread sampler([&] {
    while (sampling) {
      std::size_t n = children_of(d.pid()).size();
      if (n > most) most = n;
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::string batch;
  std::map<int, int> session_of;
  int next_id = 1;
  for (int s = 0; s < kSessions; ++s) {
    json p = request(next_id, "session/prompt",
                     {{"sessionId", sids[s]}, {"prompt", {{{"type", "text"}, {"text", "echo first " + std::to_string(s)}}}}});
    session_of[next_id++] = s;
    batch += p.dump() + "\n";
  }
  d.send_raw(batch);
  std::size_t answered = 0;
  std::set<int> seen;
  while (answered < session_of.size()) {
    auto m = d.recv(60s);
    REQUIRE(m);
    if (!m->contains("id") || m->contains("method")) continue;
    INFO(m->dump());
    REQUIRE((*m)["result"]["stopReason"] == "end_turn");
    REQUIRE(seen.insert((*m)["id"].get<int>()).second);
    ++answered;
  }
  sampling = false;
  sampler.join();
  INFO("samples: " << samples.load());
  CHECK(samples > 10);
  CHECK(most <= kCap);
  CHECK(most >= kCap / 2);  // the cap was reached, not avoided
  json list = open_sessions(d);
  CHECK(list["result"]["adapters"]["max"] == kCap);
  CHECK(list["result"]["adapters"]["live"].get<std::size_t>() <= kCap);
  std::size_t evicted = 0;
  for (const auto& s : list["result"]["sessions"]) evicted += s["adapter"]["state"] == "evicted";
  CHECK(evicted >= kSessions - kCap);

  // A second prompt on 200 sessions, most of them evicted: each new adapter
  // resumes the adapter's own session, whose history has the first turn.
  std::mt19937 rng(15);
  std::vector<int> picks(kSessions);
  for (int s = 0; s < kSessions; ++s) picks[s] = s;
  std::shuffle(picks.begin(), picks.end(), rng);
  picks.resize(200);
  batch.clear();
  std::map<int, int> second;
  for (int s : picks) {
    json p = request(next_id, "session/prompt", {{"sessionId", sids[s]}, {"prompt", {{{"type", "text"}, {"text", "history"}}}}});
    second[next_id++] = s;
    batch += p.dump() + "\n";
  }
  d.send_raw(batch);
  std::map<std::string, std::string> text;  // by session
  answered = 0;
  while (answered < second.size()) {
    auto m = d.recv(60s);
    REQUIRE(m);
    if (m->value("method", "") == "session/update") {
      const json& u = (*m)["params"]["update"];
      if (u["sessionUpdate"] == "agent_message_chunk") text[(*m)["params"]["sessionId"]] += u["content"]["text"].get<std::string>();
      continue;
    }
    if (!m->contains("id")) continue;
    INFO(m->dump());
    REQUIRE((*m)["result"]["stopReason"] == "end_turn");
    ++answered;
  }
  for (const auto& [id, s] : second) {
    INFO("session " << s);
    CHECK(text[sids[s]] == "history: echo first " + std::to_string(s));
  }
  CHECK(children_of(d.pid()).size() <= kCap);
  d.close_stdin();
  CHECK(d.wait_exit(60s) == 0);
}

TEST_CASE("an adapter idle for adapter_idle_ttl is evicted with session/close, and the next prompt resumes it") {
  TempDir dir;
  Daemon d(fake_dir_config(dir, "adapter_idle_ttl = 2\n"));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  CHECK(d.prompt(sid, "echo one")["result"]["stopReason"] == "end_turn");
  auto [agent, guard] = adapter_pids(d, sid);
  json status = adapter_of(d, sid);
  CHECK(status["state"] == "idle");
  CHECK(status["pid"] == guard);
  CHECK(status.contains("since"));

  // Gone after the TTL, told to close its session first.
  REQUIRE(eventually([&] { return !process_alive(agent) && !process_alive(guard); }, 10s));
  status = adapter_of(d, sid);
  CHECK(status["state"] == "evicted");
  CHECK(status.contains("since"));
  std::string log = read_file(dir.path() + "/fake.log");
  CHECK(log.find("\"method\":\"session/close\"") != std::string::npos);
  // `harnessd sessions` sees it from another process.
  Output listed = run_harnessd({"sessions", "--state-dir", d.state_dir(), "--format", "json"});
  REQUIRE(listed.code == 0);
  CHECK(json::parse(listed.out)["adapterState"]["state"] == "evicted");
  Output st = run_harnessd({"status", "--state-dir", d.state_dir(), "--format", "json"});
  REQUIRE(st.code == 0);
  json summary = json::parse(st.out);
  CHECK(summary["adapters"]["evicted"] == 1);
  CHECK(summary["daemons"].size() == 1);
  CHECK(summary["daemons"][0]["pid"] == d.pid());

  // The next prompt starts an adapter that resumes the adapter's session.
  std::vector<json> updates;
  CHECK(d.prompt(sid, "history", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "history: echo one | pid");
  status = adapter_of(d, sid);
  CHECK(status["state"] == "idle");
  CHECK(status["pid"] != guard);
  listed = run_harnessd({"sessions", "--state-dir", d.state_dir(), "--format", "json"});
  CHECK(json::parse(listed.out)["adapterState"]["state"] == "idle");
}

TEST_CASE("a session whose adapter was evicted is resumed by the next harnessd") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  std::string sid;
  {
    Daemon d(fake_dir_config(dir, "adapter_idle_ttl = 0.3\n"), {}, state);
    d.initialize();
    sid = d.new_session("/tmp");
    CHECK(d.prompt(sid, "echo before")["result"]["stopReason"] == "end_turn");
    REQUIRE(eventually([&] { return adapter_of(d, sid)["state"] == "evicted"; }, 5s));
    d.skip_ledger_check();
    d.close_stdin();
    CHECK(d.wait_exit(10s) == 0);
  }
  Daemon d(fake_dir_config(dir, ""), {}, state);
  d.initialize();
  json load = request(5, "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}});
  d.send(load);
  json answer = d.recv_reply(5);
  INFO(answer.dump());
  CHECK(answer["result"]["_meta"]["harnessd"]["adapter"]["restored"] == true);
  std::vector<json> updates;
  CHECK(d.prompt(sid, "history", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "history: echo before");
}

TEST_CASE("max_live_adapters below max_concurrent_runs is refused with the reason") {
  TempDir dir;
  std::string config = dir.write("config.toml", "[daemon]\nmax_live_adapters = 4\nmax_concurrent_runs = 8\n");
  Output out = run_harnessd({"--config", config, "harnesses"});
  CHECK(out.code != 0);
  CHECK(out.err.find("max_live_adapters (4) must be at least max_concurrent_runs (8)") != std::string::npos);
}

TEST_CASE("warm = 2: adapters wait initialized, a new session takes one, the pool refills, and shutdown stops them") {
  TempDir dir;
  Daemon d(fake_config({"--init-delay", "300"}, "warm = 2\n"));
  d.initialize();
  auto warm = [&] {
    json list = open_sessions(d);
    return list["result"]["harnesses"]["fake"]["warm"];
  };
  REQUIRE(eventually([&] { return warm()["ready"] == 2; }, 5s));
  std::vector<std::pair<pid_t, std::string>> before = children_of(d.pid());
  CHECK(before.size() == 2);
  CHECK(open_sessions(d)["result"]["adapters"]["live"] == 2);

  std::string sid = d.new_session("/tmp");
  json answer = d.prompt(sid, "echo warm");
  REQUIRE(answer["result"]["stopReason"] == "end_turn");
  // The session's adapter is one of the two that were warm.
  const int pid = adapter_of(d, sid)["pid"];
  CHECK(std::any_of(before.begin(), before.end(), [&](const auto& c) { return c.first == pid; }));
  // Its first run says it was taken warm, and what that spared.
  auto result = run_file(d.state_dir(), run_id_of(answer), "result.json");
  REQUIRE(result);
  json r = json::parse(*result);
  INFO(r.dump());
  CHECK(r["adapterStart"]["warm"] == true);
  CHECK(r["adapterStart"]["savedMs"].get<long long>() >= 300);
  CHECK(r["adapterStart"]["startMs"].get<long long>() < r["adapterStart"]["savedMs"].get<long long>());
  // A replacement starts: two warm again, three adapters in all.
  REQUIRE(eventually([&] { return warm()["ready"] == 2; }, 5s));
  std::vector<std::pair<pid_t, std::string>> all = children_of(d.pid());
  CHECK(all.size() == 3);

  d.close_stdin();
  CHECK(d.wait_exit(10s) == 0);
  for (const auto& [child, name] : all) CHECK_FALSE(process_alive(child));
}

TEST_CASE("warm adapters give their places to sessions first") {
  Daemon d(fake_config({}, "warm = 2\n", "max_live_adapters = 8\nmax_concurrent_runs = 8\n"));
  d.initialize();
  auto live = [&] { return open_sessions(d)["result"]["adapters"]; };
  REQUIRE(eventually([&] { return live()["live"] == 2; }, 5s));
  // Eight sessions with a turn each fill the cap: the warm ones go first.
  std::vector<std::string> sids;
  for (int i = 0; i < 8; ++i) sids.push_back(d.new_session("/tmp"));
  for (const auto& sid : sids) CHECK(d.prompt(sid, "echo x")["result"]["stopReason"] == "end_turn");
  json a = live();
  CHECK(a["live"].get<int>() <= 8);
  CHECK(children_of(d.pid()).size() <= 8);
  json pool = open_sessions(d)["result"]["harnesses"]["fake"]["warm"];
  CHECK(pool["ready"].get<int>() + a["idle"].get<int>() <= 8);
}
