// Usage accounting and budgets (issue 17): what the fake agent reports as
// usage_update and PromptResponse.usage ends up alike in result.json, the
// ledger, the answer, the session record and `harnessd usage`; a harness's
// max_concurrent serialises its sessions; max_runs_per_hour and
// max_tokens_per_day refuse prompts with -32018, also after a restart.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <sstream>

#include "acp/files.h"
#include "daemon_process.h"
#include "worker/budgets.h"
#include "worker/usage.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

std::vector<json> cli_json(const std::string& args) {
  std::string out;
  REQUIRE(run_cli(args + " --format json", &out, false) == 0);
  return json_lines(out);
}

// The terminal ledger entry of each run, by run id.
std::map<std::string, json> terminal_entries(const std::string& state_dir) {
  std::map<std::string, json> out;
  for (json& e : cli_json("runs --transitions --state-dir " + state_dir)) {
    const std::string event = e.value("event", "");
    if (event != "queued" && event != "started") out[e["runId"].get<std::string>()] = e;
  }
  return out;
}

// The token counts of a usage object, a sum or a usage line, alone (cost
// is compared apart, as numbers).
json tokens_of(const json& u) {
  json out = json::object();
  for (const char* key : harnessd::worker::usage::kTokenFields) {
    if (u.contains(key)) out[key] = u[key];
  }
  return out;
}

json refused(Daemon& d, const std::string& sid, const std::string& text) {
  const int id = d.send_prompt(sid, text);
  return d.recv_reply(id);
}

}  // namespace

TEST_CASE("a run's usage: token counts from the answer, context and the cost's growth from usage_update") {
  namespace usage = harnessd::worker::usage;
  CHECK(usage::of_run(nullptr, nullptr, nullptr).is_null());
  // totalTokens worked out when missing; counts of the wrong type dropped.
  json u = usage::of_run({{"inputTokens", 10}, {"outputTokens", 5}, {"thoughtTokens", "x"}}, nullptr, nullptr);
  CHECK(u == json({{"inputTokens", 10}, {"outputTokens", 5}, {"totalTokens", 15}}));
  const json update = {{"used", 900}, {"size", 1000}, {"cost", {{"amount", 0.5}, {"currency", "USD"}}}};
  u = usage::of_run(nullptr, update, {{"amount", 0.2}, {"currency", "USD"}});
  CHECK(u["context"] == json({{"used", 900}, {"size", 1000}}));
  CHECK(u["cost"]["amount"].get<double>() == Approx(0.3));
  // Another currency, or a smaller figure (a process counting afresh): as reported.
  CHECK(usage::of_run(nullptr, update, {{"amount", 0.2}, {"currency", "EUR"}})["cost"]["amount"] == 0.5);
  CHECK(usage::of_run(nullptr, update, {{"amount", 0.7}, {"currency", "USD"}})["cost"]["amount"] == 0.5);
  json sum;
  usage::add(sum, u);
  usage::add(sum, nullptr);
  CHECK(sum["runs"] == 2);
  CHECK(sum["cost"]["USD"].get<double>() == Approx(0.3));
  CHECK(usage::cost_text(sum["cost"]) == "0.3000 USD");
}

TEST_CASE("budgets: sliding windows, the wait until a retry succeeds, and counts rebuilt from runs") {
  using harnessd::worker::Budgets;
  using namespace std::chrono;
  const auto t0 = Budgets::Clock::now();
  Budgets b;
  CHECK_FALSE(b.check("h", {2, 0}, t0));
  b.queued("h", t0);
  b.queued("h", t0 + 10min);
  auto refused = b.check("h", {2, 0}, t0 + 20min);
  REQUIRE(refused);
  CHECK(refused->code == -32018);
  CHECK(refused->data["retryAfterMs"] == 40 * 60 * 1000);  // when the first leaves the hour
  CHECK_FALSE(b.check("other", {2, 0}, t0 + 20min));
  CHECK_FALSE(b.check("h", {2, 0}, t0 + 61min));
  // Tokens: refused once the sum reaches the limit, until enough has left.
  b.ran("h", 60, t0);
  b.ran("h", 50, t0 + 1h);
  refused = b.check("h", {0, 100}, t0 + 2h);
  REQUIRE(refused);
  CHECK(refused->data["budget"] == "max_tokens_per_day");
  CHECK(refused->data["retryAfterMs"] == 22 * 3600 * 1000);  // the first leaves: 50 < 100
  CHECK_FALSE(b.check("h", {0, 100}, t0 + 24h + 1s));
  // Rebuilt from runs as the ledger has them.
  // (Copied from a string: g++ 12 warns falsely on a short literal here, -Wrestrict.)
  const std::string harness = "h";
  harnessd::worker::RunRecord r;
  r.harness = harness;
  r.queuedAt = harnessd::acp::iso_time(t0);
  r.endedAt = harnessd::acp::iso_time(t0 + 1min);
  r.terminal_entries = 1;
  r.outcome = {{"usage", {{"totalTokens", 120}}}};
  Budgets loaded;
  loaded.load({r, r}, t0 + 2min);
  CHECK(loaded.check("h", {2, 0}, t0 + 2min));
  CHECK(loaded.check("h", {0, 200}, t0 + 2min));
  CHECK_FALSE(loaded.check("h", {3, 300}, t0 + 2min));
}

TEST_CASE("a run's usage agrees in result.json, the ledger, the answer, the session record and harnessd usage") {
  TempDir state;
  std::string s1, s2;
  std::vector<json> answers;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    s1 = d.new_session("/tmp");
    s2 = d.new_session("/tmp");
    answers.push_back(d.prompt(s1, "usage 100 30 0.01"));
    answers.push_back(d.prompt(s1, "usage 50 20 0.02"));
    answers.push_back(d.prompt(s2, "usage 7 3"));
    for (const json& a : answers) REQUIRE(a["result"]["stopReason"] == "end_turn");

    // The answer: _meta.harnessd.usage beside the adapter's own usage.
    const json first = answers[0]["result"]["_meta"]["harnessd"]["usage"];
    CHECK(first["inputTokens"] == 100);
    CHECK(first["outputTokens"] == 30);
    CHECK(first["totalTokens"] == 130);
    CHECK(first["context"] == json({{"used", 130}, {"size", 200000}}));
    CHECK(first["cost"]["currency"] == "USD");
    CHECK(first["cost"]["amount"].get<double>() == Approx(0.01));
    // usage_update's cost is the session's running total: the second run
    // is charged what it added, not the total.
    const json second = answers[1]["result"]["_meta"]["harnessd"]["usage"];
    CHECK(second["totalTokens"] == 70);
    CHECK(second["context"]["used"] == 200);
    CHECK(second["cost"]["amount"].get<double>() == Approx(0.02));
    const json third = answers[2]["result"]["_meta"]["harnessd"]["usage"];
    CHECK(third["totalTokens"] == 10);
    CHECK_FALSE(third.contains("cost"));

    // result.json and the terminal ledger entry say the same.
    auto ends = terminal_entries(d.state_dir());
    for (const json& a : answers) {
      const std::string run = run_id_of(a);
      const json used = a["result"]["_meta"]["harnessd"]["usage"];
      auto result = run_file(d.state_dir(), run, "result.json");
      REQUIRE(result);
      CHECK(json::parse(*result)["usage"] == used);
      REQUIRE(ends.count(run));
      CHECK(ends[run]["event"] == "completed");
      CHECK(ends[run]["usage"] == used);
    }
    d.close_stdin();
    REQUIRE(d.wait_exit() == 0);
  }

  // The session records sum their runs.
  std::map<std::string, json> records;
  for (json& r : cli_json("sessions --all --state-dir " + state.path())) records[r["sessionId"]] = r;
  REQUIRE(records.count(s1));
  REQUIRE(records.count(s2));
  const json sum1 = records[s1]["usage"];
  CHECK(sum1["runs"] == 2);
  CHECK(tokens_of(sum1) == json({{"inputTokens", 150},
                                 {"outputTokens", 50},
                                 {"totalTokens", 200},
                                 {"cachedReadTokens", 0},
                                 {"cachedWriteTokens", 0},
                                 {"thoughtTokens", 0}}));
  CHECK(sum1["cost"]["USD"].get<double>() == Approx(0.03));
  CHECK(records[s2]["usage"]["runs"] == 1);
  CHECK(records[s2]["usage"]["totalTokens"] == 10);

  // harnessd usage, by harness, session and day, agrees with them.
  auto by_harness = cli_json("usage --by harness --state-dir " + state.path());
  REQUIRE(by_harness.size() == 1);
  CHECK(by_harness[0]["key"] == "fake");
  CHECK(by_harness[0]["runs"] == 3);
  CHECK(by_harness[0]["inputTokens"] == 157);
  CHECK(by_harness[0]["outputTokens"] == 53);
  CHECK(by_harness[0]["totalTokens"] == 210);
  CHECK(by_harness[0]["cost"]["USD"].get<double>() == Approx(0.03));

  auto by_session = cli_json("usage --by session --state-dir " + state.path());
  REQUIRE(by_session.size() == 2);
  for (const json& line : by_session) {
    const json& record = records[line["key"].get<std::string>()]["usage"];
    CHECK(line["harness"] == "fake");
    CHECK(line["runs"] == record["runs"]);
    CHECK(tokens_of(line) == tokens_of(record));
    CHECK(line["cost"].size() == record["cost"].size());
  }

  auto by_day = cli_json("usage --by day --state-dir " + state.path());
  REQUIRE(by_day.size() == 1);
  CHECK(by_day[0]["key"].get<std::string>().size() == 10);  // YYYY-MM-DD
  CHECK(tokens_of(by_day[0]) == tokens_of(by_harness[0]));

  // Nothing queued in the future: --since a duration and a date.
  CHECK(cli_json("usage --since 1h --state-dir " + state.path()).size() == 1);
  CHECK(cli_json("usage --since 2999-01-01 --state-dir " + state.path()).empty());
  std::string out;
  CHECK(run_cli("usage --since soon --state-dir " + state.path(), &out) == 2);

  // The text table: a row for the harness and the total.
  REQUIRE(run_cli("usage --state-dir " + state.path(), &out, false) == 0);
  INFO(out);
  CHECK(out.find("HARNESS") != std::string::npos);
  CHECK(out.find("fake") != std::string::npos);
  CHECK(out.find("210") != std::string::npos);
  CHECK(out.find("0.0300 USD") != std::string::npos);
  CHECK(out.find("total") != std::string::npos);
}

TEST_CASE("max_concurrent = 1 runs two sessions of one harness one after the other") {
  // Intervals [startedAt, endedAt] of the runs in the ledger, in ms.
  auto intervals = [](const std::string& state_dir) {
    std::vector<std::pair<std::string, std::string>> out;
    for (json& r : cli_json("runs --state-dir " + state_dir)) {
      out.emplace_back(r["startedAt"].get<std::string>(), r["endedAt"].get<std::string>());
    }
    return out;
  };
  auto run_two = [](Daemon& d) {
    d.initialize();
    std::string a = d.new_session("/tmp");
    std::string b = d.new_session("/tmp");
    const int ia = d.send_prompt(a, "timed 400");
    const int ib = d.send_prompt(b, "timed 400");
    CHECK(d.recv_reply(ia)["result"]["stopReason"] == "end_turn");
    CHECK(d.recv_reply(ib)["result"]["stopReason"] == "end_turn");
  };
  SECTION("limited: no overlap") {
    Daemon d(fake_config({}, "max_concurrent = 1\n"));
    run_two(d);
    auto runs = intervals(d.state_dir());
    REQUIRE(runs.size() == 2);
    std::sort(runs.begin(), runs.end());
    INFO(runs[0].first << " - " << runs[0].second << ", " << runs[1].first << " - " << runs[1].second);
    CHECK(runs[0].second <= runs[1].first);  // ISO times of one clock compare as text
  }
  SECTION("unlimited: they overlap (the check above can fail)") {
    Daemon d(fake_config());
    run_two(d);
    auto runs = intervals(d.state_dir());
    REQUIRE(runs.size() == 2);
    std::sort(runs.begin(), runs.end());
    CHECK(runs[0].second > runs[1].first);
  }
}

TEST_CASE("max_runs_per_hour refuses the prompt past it with -32018, also after a restart") {
  TempDir state;
  const std::string config = fake_config({}, "max_runs_per_hour = 2\n");
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    std::string sid = d.new_session("/tmp");
    CHECK(d.prompt(sid, "echo one")["result"]["stopReason"] == "end_turn");
    CHECK(d.prompt(sid, "echo two")["result"]["stopReason"] == "end_turn");
    json answer = refused(d, sid, "echo three");
    INFO(answer.dump());
    REQUIRE(answer["error"]["code"] == -32018);
    const json& data = answer["error"]["data"];
    CHECK(data["retryable"] == true);
    CHECK(data["retryAfterMs"].get<long long>() > 0);
    CHECK(data["retryAfterMs"].get<long long>() <= 3600 * 1000);
    CHECK(data["budget"] == "max_runs_per_hour");
    CHECK(data["sessionId"] == sid);
    d.close_stdin();
    REQUIRE(d.wait_exit() == 0);
  }
  // The refused prompt never became a run.
  CHECK(cli_json("runs --state-dir " + state.path()).size() == 2);
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    std::string sid = d.new_session("/tmp");
    json answer = refused(d, sid, "echo four");
    INFO(answer.dump());
    CHECK(answer["error"]["code"] == -32018);
    CHECK(answer["error"]["data"]["budget"] == "max_runs_per_hour");
  }
}

TEST_CASE("max_tokens_per_day lets the run that crosses it finish, then refuses, also after a restart") {
  TempDir state;
  const std::string config = fake_config({}, "max_tokens_per_day = 100\n");
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    std::string sid = d.new_session("/tmp");
    CHECK(d.prompt(sid, "usage 30 10")["result"]["stopReason"] == "end_turn");
    // 40 so far: this one goes over the budget on its way and still ends.
    json crossing = d.prompt(sid, "usage 60 40");
    REQUIRE(crossing["result"]["stopReason"] == "end_turn");
    CHECK(crossing["result"]["_meta"]["harnessd"]["usage"]["totalTokens"] == 100);
    json answer = refused(d, sid, "echo more");
    INFO(answer.dump());
    REQUIRE(answer["error"]["code"] == -32018);
    const json& data = answer["error"]["data"];
    CHECK(data["retryable"] == true);
    CHECK(data["budget"] == "max_tokens_per_day");
    CHECK(data["used"] == 140);
    // The first run leaves the 24-hour window first, which is not enough:
    // the wait lasts until the second one leaves it.
    CHECK(data["retryAfterMs"].get<long long>() > 23LL * 3600 * 1000);
    d.close_stdin();
    REQUIRE(d.wait_exit() == 0);
  }
  auto ends = terminal_entries(state.path());
  REQUIRE(ends.size() == 2);
  for (auto& [run, e] : ends) CHECK(e["event"] == "completed");
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    std::string sid = d.new_session("/tmp");
    json answer = refused(d, sid, "echo after the restart");
    INFO(answer.dump());
    CHECK(answer["error"]["code"] == -32018);
    CHECK(answer["error"]["data"]["budget"] == "max_tokens_per_day");
    CHECK(answer["error"]["data"]["used"] == 140);
  }
}
