// The exec and openspace bridges through harnessd: a shell script harness
// in text and JSON-lines modes, failures and cancel; the shipped OpenSpace
// worker shim with a stand-in openspace module (same return shape and
// recording layout as the real one) for success, incomplete, error, cancel
// and a slow task whose progress is relayed.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <sstream>
#include <regex>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string repo_path(const std::string& rel) { return fs::canonical(std::string(TESTS_DIR) + "/..").string() + "/" + rel; }

// A config with one exec harness running `script` (written to `dir`).
std::string exec_config(const TempDir& dir, const std::string& script, const std::string& options) {
  std::string path = dir.write("harness.sh", "#!/bin/sh\n" + script);
  fs::permissions(path, fs::perms::owner_all);
  return "[daemon]\ndefault_harness = \"script\"\n[harness.script]\nkind = \"exec\"\ncommand = [\"" + path + "\"]\n" +
         options;
}

std::string openspace_config() {
  json command = {"python3", repo_path("harnesses/openspace/openspace-worker")};
  return "[daemon]\ndefault_harness = \"os\"\n[harness.os]\nkind = \"openspace\"\ncommand = " + command.dump() +
         "\nmax_iterations = 3\nenv = { PYTHONPATH = \"" + repo_path("tests/fakes/openspace") + "\" }\n";
}

}  // namespace

TEST_CASE("exec: the prompt on stdin, stdout relayed as text, the exit code decides") {
  TempDir dir;
  Daemon d(exec_config(dir, "read -r line\necho \"you said: $line\"\necho oops >&2\n[ \"$line\" = fail ] && exit 3\nexit 0\n", ""));
  d.initialize();
  std::string sid = d.new_session(dir.path());
  std::vector<json> seen;
  json ok = d.prompt(sid, "hello", &seen);
  CHECK(ok["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "you said: hello\n");
  json failed = d.prompt(sid, "fail");
  REQUIRE(failed.contains("error"));
  CHECK(failed["error"]["code"] == -32011);
  CHECK(failed["error"]["data"]["exitCode"] == 3);
  CHECK(failed["error"]["data"]["stderrTail"] == "oops\n");
}

TEST_CASE("exec: JSON lines with a field, and the prompt in a file") {
  TempDir dir;
  Daemon d(exec_config(dir,
                       "f=\"$1\"\necho '{\"type\":\"start\"}'\necho \"{\\\"delta\\\":{\\\"text\\\":\\\"line from $(cat \"$f\")\\\"}}\"\n"
                       "echo 'not json'\necho '{\"delta\":{\"text\":\" and more\"}}'\n",
                       "input = \"file\"\noutput = \"jsonl\"\nfield = \"delta.text\"\n"));
  d.initialize();
  std::string sid = d.new_session(dir.path());
  std::vector<json> seen;
  json r = d.prompt(sid, "the prompt", &seen);
  CHECK(r["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "line from the prompt and more");
}

TEST_CASE("exec: cancel stops the command's process group") {
  TempDir dir;
  Daemon d(exec_config(dir, "echo started\nsleep 1000 &\nwait\n", ""));
  d.initialize();
  std::string sid = d.new_session(dir.path());
  int id = d.send_prompt(sid, "go");
  REQUIRE(d.recv());  // "started"
  d.send({{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}});
  auto start = std::chrono::steady_clock::now();
  CHECK(d.recv_reply(id)["result"]["stopReason"] == "cancelled");
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  // The session goes on: the next prompt runs the command again.
  std::vector<json> seen;
  int again = d.send_prompt(sid, "again");
  REQUIRE(d.recv());
  d.send({{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}});
  CHECK(d.recv_reply(again)["result"]["stopReason"] == "cancelled");
}

TEST_CASE("openspace: success relays the response and names the recording") {
  TempDir work;
  Daemon d(openspace_config());
  d.initialize();
  std::string sid = d.new_session(work.path());
  std::vector<json> seen;
  json r = d.prompt(sid, "write a haiku", &seen);
  REQUIRE(r.contains("result"));
  CHECK(r["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "OPENSPACE DONE: write a haiku");
  json meta = r["result"]["_meta"]["openspace"];
  CHECK(meta["status"] == "success");
  std::string recording = meta["recordingDir"];
  CHECK(fs::exists(recording + "/conversations.jsonl"));
  CHECK(fs::exists(recording + "/metadata.json"));
  CHECK(recording.rfind(fs::canonical(work.path()).string() + "/logs/recordings/", 0) == 0);
  CHECK(update_params(seen, "", "agent_thought_chunk").size() >= 1);  // iterations relayed
}

TEST_CASE("openspace: incomplete, error, and a tool run in the workspace") {
  TempDir work;
  Daemon d(openspace_config());
  d.initialize();
  std::string sid = d.new_session(work.path());
  json incomplete = d.prompt(sid, "MAXITER forever");
  CHECK(incomplete["result"]["stopReason"] == "max_turn_requests");
  CHECK(incomplete["result"]["_meta"]["openspace"]["warning"].is_string());
  json error = d.prompt(sid, "FAIL now");
  REQUIRE(error.contains("error"));
  CHECK(error["error"]["code"] == -32011);
  CHECK(error["error"]["message"].get<std::string>().find("simulated failure") != std::string::npos);
  std::vector<json> seen;
  json tool = d.prompt(sid, "TOOL:echo from-the-tool > made.txt", &seen);
  CHECK(tool["result"]["stopReason"] == "end_turn");
  CHECK(read_file(work.path() + "/made.txt") == "from-the-tool\n");
  CHECK_FALSE(update_params(seen, "", "tool_call").empty());
}

TEST_CASE("openspace: a slow task relays its progress and a cancel ends it cancelled") {
  TempDir work;
  Daemon d(openspace_config());
  d.initialize();
  std::string sid = d.new_session(work.path());
  int id = d.send_prompt(sid, "SLOW task");
  // Progress arrives while the task runs, as it is recorded.
  int thoughts = 0;
  while (thoughts < 2) {
    auto m = d.recv(10s);
    REQUIRE(m);
    REQUIRE_FALSE(m->contains("id"));  // no answer yet
    if ((*m)["params"]["update"].value("sessionUpdate", "") == "agent_thought_chunk") ++thoughts;
  }
  d.send({{"jsonrpc", "2.0"}, {"method", "session/cancel"}, {"params", {{"sessionId", sid}}}});
  std::vector<json> seen;
  json r = d.recv_reply(id, &seen, 15s);
  CHECK(r["result"]["stopReason"] == "cancelled");
  // The shim wrote the cancelled outcome into the recording.
  bool found = false;
  for (const auto& entry : fs::recursive_directory_iterator(work.path() + "/logs/recordings")) {
    if (entry.path().filename() == "metadata.json") {
      found = read_file(entry.path().string()).find("cancelled") != std::string::npos || found;
    }
  }
  CHECK(found);
}

TEST_CASE("after an adapter dies, the next one resumes the adapter's own session") {
  TempDir fake_state;
  Daemon d(fake_config({"--state-dir", fake_state.path(), "--resume"}));
  d.initialize();
  std::string sid = d.new_session();
  d.prompt(sid, "echo first");
  json crashed = d.prompt(sid, "crash 5");
  CHECK(crashed["error"]["data"]["exitCode"] == 5);
  std::vector<json> seen;
  d.prompt(sid, "history", &seen);
  CHECK(message_text(seen) == "history: echo first");
}

TEST_CASE("harnessd harnesses lists the profiles, what each runs and what is missing") {
  TempDir dir;
  // The default can run (cat), so --check succeeds.
  std::string config = dir.write("c.toml", "[daemon]\ndefault_harness = \"exec\"\n"
                                           "[harness.mine]\nkind = \"exec\"\ncommand = [\"no-such-program-xyz\"]\n");
  std::string out;
  CHECK(run_cli("harnesses --check --format json --config " + config, &out, false) == 0);
  std::map<std::string, json> by_name;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    json j = json::parse(line);
    by_name[j["name"]] = j;
  }
  for (const char* name : {"claude", "opencode", "gemini", "codex", "claude-code", "opencode-run", "openspace", "exec"}) {
    CHECK(by_name.count(name) == 1);
  }
  CHECK(by_name["mine"]["missing"] == "'no-such-program-xyz' was not found on PATH");
  CHECK(by_name["exec"]["path"].get<std::string>().find("cat") != std::string::npos);
  CHECK(by_name["exec"]["programVersion"].get<std::string>().find("cat") != std::string::npos);
  CHECK(by_name["exec"]["version"] == 1);
  CHECK(by_name["exec"]["default"] == true);
  CHECK(by_name["claude"]["default"] == false);
  CHECK(by_name["claude-code"]["kind"] == "claude-code");
}
