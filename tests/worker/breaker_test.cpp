// A harness that cannot start fails fast and says why: the circuit breaker
// on adapter starts, and adapters that want a login.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

json harness_status(Daemon& d, const std::string& harness) {
  json req = request("status", "_harnessd/sessions/list", json::object());
  d.send(req);
  json answer = d.recv_reply("status");
  return answer["result"]["harnesses"].value(harness, json());
}

// Waits for a breaker's cooldown to end, as the daemon reports it. The
// cooldowns here are a few seconds so that a slow machine cannot outrun
// them between two checks; waiting on the state keeps the tests short.
void wait_available(Daemon& d, const std::string& harness) {
  for (int i = 0; i < 100 && harness_status(d, harness)["state"] != "available"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(harness_status(d, harness)["state"] == "available");
}

}  // namespace

TEST_CASE("a harness whose adapter exits at start fails at once after 3 failed starts, until a probe after the cooldown") {
  TempDir dir;
  const std::string log = dir.path() + "/fake.log";
  Daemon d(fake_config({"--exit-on-start", "3", "--log-file", log}, "", "breaker_failures = 3\nbreaker_cooldown = 4\n"));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  // session/new may have tried a start of its own to learn the options.
  auto starts = [&] { return count_of(read_file(log), "refusing to start"); };
  json answer;
  int prompts = 0;
  while (prompts < 5) {
    answer = d.prompt(sid, "echo hi");
    ++prompts;
    if (answer["error"]["code"] == -32010) break;
    INFO(answer.dump());
    REQUIRE(answer["error"]["code"] == -32011);
  }
  INFO(answer.dump());
  REQUIRE(answer["error"]["code"] == -32010);
  CHECK(starts() == 3);
  const json& data = answer["error"]["data"];
  CHECK(data["reason"] == "unavailable");
  CHECK(data["retryAfterMs"].get<long long>() > 0);
  CHECK(data["retryAfterMs"].get<long long>() <= 4000);
  CHECK(data["consecutiveFailures"] == 3);
  CHECK(data["lastError"]["message"].get<std::string>().find("exited (exit code 3)") != std::string::npos);
  CHECK(answer["error"]["message"].get<std::string>().find("is unavailable") != std::string::npos);
  // Another prompt: refused again, nothing started.
  CHECK(d.prompt(sid, "echo again")["error"]["code"] == -32010);
  CHECK(starts() == 3);
  json status = harness_status(d, "fake");
  CHECK(status["state"] == "unavailable");
  CHECK(status["consecutiveFailures"] == 3);
  // Other processes see it: harnessd status and harnesses name this daemon.
  Output st = run_harnessd({"status", "--state-dir", d.state_dir(), "--format", "json"});
  REQUIRE(st.code == 0);
  json summary = json::parse(st.out);
  REQUIRE(summary["daemons"].size() == 1);
  CHECK(summary["daemons"][0]["harnesses"]["fake"]["state"] == "unavailable");
  CHECK(summary["daemons"][0]["harnesses"]["fake"].contains("until"));
  Output text = run_harnessd({"status", "--state-dir", d.state_dir()});
  CHECK(text.out.find("fake (pid " + std::to_string(d.pid()) + ") unavailable until") != std::string::npos);
  Output listed = run_harnessd({"--config", d.config_path(), "--state-dir", d.state_dir(), "harnesses", "--format", "json"});
  bool named = false;
  for (std::size_t at = 0, end; (end = listed.out.find('\n', at)) != std::string::npos; at = end + 1) {
    json line = json::parse(listed.out.substr(at, end - at));
    if (line["name"] == "fake") named = line["unavailableIn"][0]["pid"] == d.pid();
  }
  CHECK(named);
  // The refusal is a run that failed, with its reason, like any other.
  Output runs = run_harnessd({"runs", "--state-dir", d.state_dir(), "--format", "json"});
  CHECK(runs.out.find("\"reason\":\"unavailable\"") != std::string::npos);

  // After the cooldown one probe start goes ahead; it fails too, so the
  // harness is unavailable again at once.
  wait_available(d, "fake");
  CHECK(d.prompt(sid, "echo probe")["error"]["code"] == -32011);
  CHECK(starts() == 4);
  CHECK(d.prompt(sid, "echo after")["error"]["code"] == -32010);
  CHECK(starts() == 4);
}

TEST_CASE("a probe that starts makes the harness available again") {
  TempDir dir;
  // The adapter fails while a flag file exists.
  const std::string flag = dir.write("failing", "");
  std::string script = dir.write("agent.sh", "#!/bin/sh\nif [ -e '" + flag + "' ]; then echo 'no key' >&2; exit 7; fi\nexec '" +
                                                 fake_agent_exe() + "'\n");
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  Daemon d("[daemon]\ndefault_harness = \"sh\"\nbreaker_failures = 2\nbreaker_cooldown = 3\n[harness.sh]\ncommand = [\"" +
           script + "\"]\n");
  d.initialize();
  std::string sid = d.new_session("/tmp");
  for (int i = 0; i < 4; ++i) {
    json a = d.prompt(sid, "echo x");
    if (a["error"]["code"] == -32010) break;
  }
  CHECK(harness_status(d, "sh")["state"] == "unavailable");
  std::filesystem::remove(flag);
  wait_available(d, "sh");
  std::vector<json> updates;
  CHECK(d.prompt(sid, "echo back", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "back");
  json status = harness_status(d, "sh");
  CHECK(status["state"] == "available");
  CHECK(status["consecutiveFailures"] == 0);
}

TEST_CASE("an adapter that answers auth_required is reported as such") {
  TempDir dir;
  const std::string log = dir.path() + "/fake.log";
  Daemon d(fake_config({"--auth-required", "--auth-env", "FAKE_KEY", "--log-file", log}));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  json answer = d.prompt(sid, "echo hi");
  INFO(answer.dump());
  REQUIRE(answer["error"]["code"] == -32000);
  const json& data = answer["error"]["data"];
  CHECK(data["reason"] == "auth_required");
  CHECK(data["harness"] == "fake");
  CHECK(data["authMethods"][0]["id"] == "fake-login");
  CHECK(data["hint"].get<std::string>().find("auth_env") != std::string::npos);
  CHECK(answer["error"]["message"].get<std::string>().find("needs authentication") != std::string::npos);
  // No profile names a key: harnessd never tried a method on its own.
  CHECK(read_file(log).find("\"method\":\"authenticate\"") == std::string::npos);
}

TEST_CASE("with an env_var auth method and the key in the profile's environment, authenticate is called and the prompt runs") {
  TempDir dir;
  const std::string log = dir.path() + "/fake.log";
  Daemon d(fake_config({"--auth-required", "--auth-env", "FAKE_KEY", "--log-file", log},
                       "auth_env = \"FAKE_KEY\"\nenv = { FAKE_KEY = \"sk-test\" }\n"));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  std::vector<json> updates;
  json answer = d.prompt(sid, "echo in", &updates);
  INFO(answer.dump() << "\n" << d.stderr_text());
  CHECK(answer["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "in");
  std::string calls = read_file(log);
  CHECK(count_of(calls, "\"method\":\"authenticate\"") == 1);
  CHECK(calls.find("\"methodId\":\"fake-key\"") != std::string::npos);
}

TEST_CASE("auth_env names a key the adapter's environment lacks: nothing is guessed, auth_required is reported") {
  TempDir dir;
  const std::string log = dir.path() + "/fake.log";
  Daemon d(fake_config({"--auth-required", "--auth-env", "FAKE_KEY", "--log-file", log}, "auth_env = \"FAKE_KEY\"\n"));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  json answer = d.prompt(sid, "echo in");
  CHECK(answer["error"]["code"] == -32000);
  CHECK(answer["error"]["data"]["hint"].get<std::string>().find("set FAKE_KEY") != std::string::npos);
  CHECK(read_file(log).find("\"method\":\"authenticate\"") == std::string::npos);
}
