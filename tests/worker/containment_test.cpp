// Process containment when harnessd itself dies: kill -9 in the middle of a
// turn must not leave the adapter, its guard, or the adapter's children.
#include <catch2/catch.hpp>

#include <signal.h>

#include <string>
#include <utility>
#include <vector>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

TEST_CASE("kill -9 of harnessd mid-turn takes the whole adapter tree with it within a second") {
  for (const char* command : {"grandchild", "grandchild-detached"}) {
    Daemon d;
    d.initialize();
    std::string sid = d.new_session();
    std::vector<json> seen;
    d.prompt(sid, "pid", &seen);
    std::string text = message_text(seen);
    pid_t adapter = std::stoi(text.substr(4));
    pid_t guard = std::stoi(text.substr(text.find("ppid ") + 5));
    d.send_prompt(sid, command);
    auto first = d.recv();
    REQUIRE(first);
    std::string chunk = (*first)["params"]["update"]["content"]["text"];
    pid_t grandchild = std::stoi(chunk.substr(chunk.find(' ') + 1));
    REQUIRE(process_alive(grandchild));

    auto start = std::chrono::steady_clock::now();
    kill(d.pid(), SIGKILL);
    INFO(command);
    CHECK(d.wait_exit(2s) == 128 + SIGKILL);
    CHECK(eventually(
        [&] { return !process_alive(adapter) && !process_alive(guard) && !process_alive(grandchild); }, 1s));
    CHECK(std::chrono::steady_clock::now() - start < 1s);
  }
}

TEST_CASE("an adapter that SIGKILLs its guard leaves no setsid'd grandchild, and harnessd keeps serving") {
  // The guard cannot clean up after its own death; harnessd, its parent,
  // sees it die of a signal it did not send and kills what is left.
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  auto [adapter, guard] = adapter_pids(d, sid);
  int id = d.send_prompt(sid, "kill-guard");
  std::vector<json> seen;
  json reply = d.recv_reply(id, &seen);
  std::string text = message_text(seen);
  REQUIRE(text.rfind("grandchild ", 0) == 0);
  pid_t grandchild = std::stoi(text.substr(11));
  REQUIRE(grandchild > 0);
  REQUIRE(reply.contains("error"));
  CHECK(reply["error"]["code"] == -32011);
  CHECK(reply["error"]["data"]["signal"] == SIGKILL);
  CHECK(eventually([&] { return !process_alive(grandchild); }, 3s));
  CHECK_FALSE(process_alive(adapter));
  CHECK_FALSE(process_alive(guard));
  if (process_alive(grandchild)) kill(grandchild, SIGKILL);

  // The daemon still serves the session, on a fresh adapter.
  json next = d.prompt(sid, "echo still here", &seen);
  CHECK(next["result"]["stopReason"] == "end_turn");
  CHECK(adapter_pids(d, sid).first != adapter);
}

TEST_CASE("an adapter that closes its stdout but keeps running fails the turn and is stopped") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  auto [adapter, guard] = adapter_pids(d, sid);
  json reply = d.prompt(sid, "close-stdout");
  REQUIRE(reply.contains("error"));
  CHECK(reply["error"]["code"] == -32011);
  CHECK(reply["error"]["message"].get<std::string>().find("closed its output but kept running") !=
        std::string::npos);
  CHECK(reply["error"]["data"]["stderrTail"].get<std::string>().find("closing stdout") != std::string::npos);
  // Stopped through the kill ladder (it honours SIGTERM), and replaced.
  CHECK(eventually([&] { return !process_alive(adapter) && !process_alive(guard); }, 5s));
  std::vector<json> seen;
  json next = d.prompt(sid, "echo hello again", &seen);
  CHECK(next["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "hello again");
  CHECK(adapter_pids(d, sid).first != adapter);
}

TEST_CASE("an adapter that closes its stdout and then exits is reported by its exit") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  json reply = d.prompt(sid, "close-stdout 50");
  REQUIRE(reply.contains("error"));
  CHECK(reply["error"]["code"] == -32011);
  CHECK(reply["error"]["data"]["exitCode"] == 0);
  CHECK(reply["error"]["message"].get<std::string>().find("exited (exit code 0)") != std::string::npos);
}
