// Inputs that once crashed or stalled harnessd, from the places other than
// the host's and adapters' lines (those are the transcripts): the state
// directory, the configuration, context files, and a host that leaves with
// a question open.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>

#include "daemon_process.h"
#include "stored_session.h"
#include "worker/config.h"
#include "worker/store.h"

namespace fs = std::filesystem;
using namespace harnessd::test;

namespace {
std::string deep_objects(std::size_t depth) {
  std::string s;
  for (std::size_t i = 0; i < depth; ++i) s += "{\"a\":";
  return s + "1" + std::string(depth, '}');
}

void append(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << text;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

TEST_CASE("a deep or overflowing ledger line or session record does not stop a start") {
  TempDir state;
  fs::create_directory(state.path() + "/sessions");
  // What a damaged or planted state directory of an earlier harnessd might
  // hold, imported by the first start.
  append(state.path() + "/ledger.jsonl", R"({"event":"queued","runId":"run_x","x":)" + deep_objects(100000) + "}\n");
  append(state.path() + "/ledger.jsonl", std::string(200000, '[') + std::string(200000, ']') + "\n");
  append(state.path() + "/ledger.jsonl", R"({"event":"queued","runId":"run_y","n":1e400})" "\n");
  std::ofstream(state.path() + "/sessions/sess_deep.json") << deep_objects(100000) << "\n";
  std::ofstream(state.path() + "/sessions/sess_big.json") << R"({"sessionId":"sess_big","n":-1e999})" << "\n";
  std::ofstream(state.path() + "/sessions/sess_deep.jsonl") << deep_objects(50000) << "\n";
  {
    Daemon first(fake_config(), {}, state.path());
    first.initialize();
    std::string sid = first.new_session();
    first.prompt(sid, "echo before");
  }

  for (int start = 0; start < 2; ++start) {  // and every later start
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    d.send({{"jsonrpc", "2.0"}, {"id", 7}, {"method", "_harnessd/runs/list"}, {"params", json::object()}});
    json runs = d.recv_reply(7);
    REQUIRE(runs.contains("result"));
    CHECK(runs["result"]["runs"].size() == static_cast<std::size_t>(1 + start));  // the planted lines are skipped
    std::string sid = d.new_session();
    std::vector<json> seen;
    CHECK(d.prompt(sid, "echo after", &seen)["result"]["stopReason"] == "end_turn");
    CHECK(message_text(seen) == "after");
    d.close_stdin();
    CHECK(d.wait_exit() == 0);
  }
}

TEST_CASE("session records and ledger lines with fields of the wrong type are skipped, never trusted") {
  TempDir state;
  fs::create_directory(state.path() + "/sessions");
  // Each record of this earlier harnessd's state directory parses as JSON
  // but is not what harnessd writes.
  std::ofstream(state.path() + "/sessions/sess_h7.json") << R"({"sessionId":"sess_h7","harness":7,"adapterOptions":[]})" "\n";
  std::ofstream(state.path() + "/sessions/sess_cy.json") << R"({"sessionId":"sess_cy","closed":"yes","name":"n"})" "\n";
  std::ofstream(state.path() + "/sessions/sess_rt.json") << R"({"sessionId":"sess_rt","runTimeoutMs":"soon"})" "\n";
  std::ofstream(state.path() + "/sessions/sess_id.json") << R"({"sessionId":["sess_id"]})" "\n";
  append(state.path() + "/ledger.jsonl", R"({"event":"ended","runId":"run_t","state":"completed","stopReason":42})" "\n");

  TempDir io;
  bool imported = false;
  for (std::string command : {"sessions --all", "sessions --all --format json", "runs", "runs --format json"}) {
    std::string cmd = shell_quote(harnessd_exe()) + " --state-dir " + shell_quote(state.path()) + " " + command +
                      " >" + shell_quote(io.path() + "/out") + " 2>" + shell_quote(io.path() + "/err");
    int status = std::system(cmd.c_str());
    std::string err = read_file(io.path() + "/err");
    INFO(command << ": " << err);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_file(io.path() + "/out").find("sess_h7") == std::string::npos);
    // The first command imports the files, saying what it refused; none of
    // it enters the state database.
    if (!imported) CHECK(err.find("harness must be a string") != std::string::npos);
    imported = true;
  }
  {
    Daemon first(fake_config(), {}, state.path());
    first.initialize();
    first.prompt(first.new_session(), "echo before");
  }

  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  d.send({{"jsonrpc", "2.0"}, {"id", 5}, {"method", "session/list"}, {"params", json::object()}});
  json list = d.recv_reply(5);
  REQUIRE(list.contains("result"));
  CHECK(list["result"]["sessions"].size() == 1);  // only the session harnessd recorded
  d.send({{"jsonrpc", "2.0"}, {"id", 6}, {"method", "session/load"},
          {"params", {{"sessionId", "sess_cy"}, {"cwd", "/"}, {"mcpServers", json::array()}}}});
  CHECK(d.recv_reply(6).contains("error"));
  std::vector<json> seen;
  CHECK(d.prompt(d.new_session(), "echo after", &seen)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "after");
  d.close_stdin();
  CHECK(d.wait_exit() == 0);
}

TEST_CASE("every session record harnessd writes passes its own check, before and after a prompt") {
  TempDir state;
  std::string idle, used;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    idle = d.new_session();  // its adapter's options are not known yet
    used = d.new_session("/tmp", {{"harnessd", {{"name", "used"}}}});
    d.prompt(used, "echo hi");
  }
  for (const std::string& id : {idle, used}) {
    json record = stored_session(state.path(), id);
    auto problem = harnessd::worker::session_record_problem(record);
    INFO(id << ": " << record.dump());
    CHECK_FALSE(problem);
  }
  // And a later lifetime can load both.
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  for (const std::string& id : {idle, used}) {
    d.send({{"jsonrpc", "2.0"}, {"id", 9}, {"method", "session/load"},
            {"params", {{"sessionId", id}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}}});
    CHECK(d.recv_reply(9).contains("result"));
  }
}

TEST_CASE("a configuration nested too deep or holding NUL is refused with a message") {
  std::string deep = "x = " + std::string(300, '[') + std::string(300, ']') + "\n";
  auto c = harnessd::worker::parse_config(deep, "deep.toml");
  REQUIRE_FALSE(c);
  CHECK(c.error().message.find("deep.toml") != std::string::npos);
  auto nul = harnessd::worker::parse_config("[harness.x]\ncommand = [\"/bin/echo\\u0000rm\"]\n", "nul.toml");
  REQUIRE_FALSE(nul);
  CHECK(nul.error().message.find("NUL") != std::string::npos);
  auto env = harnessd::worker::parse_config("[harness.x]\ncommand = [\"a\"]\nenv = { A = \"x\\u0000y\" }\n", "env.toml");
  REQUIRE_FALSE(env);
  CHECK(env.error().message.find("NUL") != std::string::npos);
}

TEST_CASE("a context file nested too deep is refused by harnessd run, without a crash") {
  TempDir dir;
  std::string config = dir.write("config.toml", fake_config());
  std::string context = dir.write("context.json", deep_objects(200000));
  std::string cmd = shell_quote(harnessd_exe()) + " --config " + shell_quote(config) + " --state-dir " +
                    shell_quote(dir.path() + "/state") + " run --context " + shell_quote(context) +
                    " 'echo hi' >/dev/null 2>" + shell_quote(dir.path() + "/err");
  int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);  // refused
  CHECK(read_file(dir.path() + "/err").find("context") != std::string::npos);
}

TEST_CASE("a permission request open when the host stops sending reaches the adapter as cancelled") {
  TempDir dir;
  std::string log = dir.path() + "/agent.log";
  Daemon d(fake_config({"--log-file", log}));
  d.initialize();
  std::string sid = d.new_session();
  d.send_prompt(sid, "permission");
  std::optional<json> ask;
  for (int i = 0; i < 3 && !(ask && ask->value("method", "") == "session/request_permission"); ++i) ask = d.recv();
  REQUIRE(ask);
  REQUIRE(ask->value("method", "") == "session/request_permission");
  d.close_stdin();
  CHECK(d.wait_exit() == 0);
  // The adapter received the outcome before it was stopped.
  CHECK(read_file(log).find(R"("outcome":{"outcome":"cancelled"})") != std::string::npos);
}
