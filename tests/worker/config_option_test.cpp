// session/set_config_option: harnessd's own "harness" option, fixed at the
// first prompt, and the adapter's options passed through, each answer with
// the complete list; choices survive a new adapter and a restart.
#include <catch2/catch.hpp>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json set_option(Daemon& d, int id, const std::string& sid, const std::string& config, const json& value) {
  d.send(request(id, "session/set_config_option", {{"sessionId", sid}, {"configId", config}, {"value", value}}));
  return d.recv_reply(id);
}

const json* option(const json& options, const std::string& id) {
  for (const auto& o : options) {
    if (o["id"] == id) return &o;
  }
  return nullptr;
}

std::string two_fakes() {
  return fake_config({"--config-options"}, "", "") + "[harness.fake2]\ncommand = " +
         json::array({fake_agent_exe(), "--config-options"}).dump() + "\n";
}

}  // namespace

TEST_CASE("session/set_config_option: the harness before the first prompt, then the adapter's own options") {
  TempDir state;
  std::string sid;
  {
    Daemon d(two_fakes(), {}, state.path());
    d.initialize();
    d.send(request(1, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    json created = d.recv_reply(1)["result"];
    sid = created["sessionId"];
    const json* harness = option(created["configOptions"], "harness");
    REQUIRE(harness);
    CHECK((*harness)["currentValue"] == "fake");
    CHECK((*harness)["type"] == "select");

    json switched = set_option(d, 2, sid, "harness", "fake2");
    REQUIRE(switched.contains("result"));
    CHECK((*option(switched["result"]["configOptions"], "harness"))["currentValue"] == "fake2");
    d.send(request(20, "_harnessd/sessions/list", json::object()));
    CHECK(d.recv_reply(20)["result"]["sessions"][0]["adapterPid"].is_null());
    json unknown = set_option(d, 3, sid, "harness", "nope");
    CHECK(unknown["error"]["code"] == -32602);
    CHECK(unknown["error"]["data"]["field"] == "value");

    // The adapter session/new started for "fake" is gone with the switch.
    // Then the adapter's option: fake2's adapter starts, the host is told
    // its options (nothing listed them), and the answer holds the complete list.
    d.send(request(4, "session/set_config_option",
                   {{"sessionId", sid}, {"configId", "model"}, {"value", "fake-large"}}));
    std::vector<json> before_answer;
    json model = d.recv_reply(4, &before_answer);
    REQUIRE(model.contains("result"));
    bool announced = false;
    for (const json& m : before_answer) {
      if (m.value("method", "") != "session/update" || m["params"]["update"]["sessionUpdate"] != "config_option_update") {
        continue;
      }
      announced = true;
      CHECK(m["params"]["sessionId"] == sid);
      const json& listed = m["params"]["update"]["configOptions"];
      CHECK((*option(listed, "harness"))["currentValue"] == "fake2");
      REQUIRE(option(listed, "model"));
    }
    CHECK(announced);
    const json& options = model["result"]["configOptions"];
    CHECK((*option(options, "harness"))["currentValue"] == "fake2");
    REQUIRE(option(options, "model"));
    CHECK((*option(options, "model"))["currentValue"] == "fake-large");
    std::vector<json> seen;
    d.prompt(sid, "model", &seen);
    CHECK(message_text(seen) == "model fake-large");

    // The harness is fixed once a prompt ran; the adapter refuses what it does not know.
    json late = set_option(d, 5, sid, "harness", "fake");
    CHECK(late["error"]["code"] == -32602);
    CHECK(late["error"]["message"].get<std::string>().find("before its first prompt") != std::string::npos);
    json bad = set_option(d, 6, sid, "model", "huge");
    CHECK(bad.contains("error"));
    json no_value = set_option(d, 7, sid, "model", json::array());
    CHECK(no_value["error"]["data"]["field"] == "value");
    // session/set_mode: this adapter has no mode option and no set_mode of its own.
    d.send(request(70, "session/set_mode", {{"sessionId", sid}, {"modeId", "plan"}}));
    CHECK(d.recv_reply(70)["error"]["code"] == -32601);
    d.send(request(71, "session/set_mode", {{"sessionId", sid}}));
    CHECK(d.recv_reply(71)["error"]["data"]["field"] == "modeId");
    d.send(request(8, "_harnessd/sessions/list", json::object()));
    CHECK(d.recv_reply(8)["result"]["sessions"][0]["harness"] == "fake2");
  }
  // A later daemon applies the choice to the new adapter.
  Daemon d(two_fakes(), {}, state.path());
  d.initialize();
  d.send(request(1, "session/resume", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json resumed = d.recv_reply(1)["result"];
  CHECK((*option(resumed["configOptions"], "harness"))["currentValue"] == "fake2");
  std::vector<json> seen;
  d.prompt(sid, "model", &seen);
  CHECK(message_text(seen) == "model fake-large");
}

TEST_CASE("session/new lists the options a harness's adapter offered before, across restarts") {
  TempDir state;
  {
    Daemon d(two_fakes(), {}, state.path());
    d.initialize();
    // Nothing is known of the harness yet: its adapter starts at session/new,
    // whose answer lists its options; the host is not told them twice.
    d.send(request(1, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    json first = d.recv_reply(1)["result"];
    REQUIRE(option(first["configOptions"], "model"));
    CHECK((*option(first["configOptions"], "model"))["currentValue"] == "fake-small");
    CHECK(d.quiet_for(std::chrono::milliseconds(200)));
    d.send(request(10, "_harnessd/sessions/list", json::object()));
    json pid = d.recv_reply(10)["result"]["sessions"][0]["adapterPid"];
    CHECK(pid.is_number());
    // The first prompt runs on that adapter.
    std::vector<json> first_turn;
    d.prompt(first["sessionId"], "echo start the adapter", &first_turn);
    for (const json& m : first_turn) CHECK(m["params"]["update"]["sessionUpdate"] != "config_option_update");
    d.send(request(11, "_harnessd/sessions/list", json::object()));
    CHECK(d.recv_reply(11)["result"]["sessions"][0]["adapterPid"] == pid);
    // Now session/new lists the adapter's options at their defaults.
    d.send(request(2, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
    json second = d.recv_reply(2)["result"];
    REQUIRE(option(second["configOptions"], "model"));
    CHECK((*option(second["configOptions"], "model"))["currentValue"] == "fake-small");
    // Switching to a harness never seen lists only what is known of it.
    json switched = set_option(d, 3, second["sessionId"], "harness", "fake2");
    CHECK(switched["result"]["configOptions"].size() == 1);
    json back = set_option(d, 4, second["sessionId"], "harness", "fake");
    CHECK(option(back["result"]["configOptions"], "model"));
  }
  // A new daemon on the same state directory knows them from the records, so
  // a host that sets the model right after session/new (acpx --model) can.
  Daemon d(two_fakes(), {}, state.path());
  d.initialize();
  d.send(request(1, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json created = d.recv_reply(1)["result"];
  REQUIRE(option(created["configOptions"], "model"));
  std::string sid = created["sessionId"];
  json model = set_option(d, 2, sid, "model", "fake-large");
  CHECK((*option(model["result"]["configOptions"], "model"))["currentValue"] == "fake-large");
  std::vector<json> seen;
  d.prompt(sid, "model", &seen);
  CHECK(message_text(seen) == "model fake-large");
  // The adapter offered what the host already knew: no announcement.
  for (const json& m : seen) CHECK(m["params"]["update"]["sessionUpdate"] != "config_option_update");
}

TEST_CASE("a claude-code session lists model and mode from its first session/new, before claude ever ran") {
  // The bridge never runs here: its options are known without it.
  std::string config = fake_config({}, "", "") + "[harness.cc]\nkind = \"claude-code\"\ncommand = " +
                       json::array({fake_agent_exe()}).dump() + "\nmodel = \"opus\"\n";
  Daemon d(config);
  d.initialize();
  d.send(request(1, "session/new",
                 {{"cwd", "/tmp"}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"harness", "cc"}}}}}}));
  json created = d.recv_reply(1)["result"];
  REQUIRE(option(created["configOptions"], "model"));
  CHECK((*option(created["configOptions"], "model"))["currentValue"] == "opus");
  CHECK((*option(created["configOptions"], "model"))["category"] == "model");
  REQUIRE(option(created["configOptions"], "mode"));
  CHECK((*option(created["configOptions"], "mode"))["currentValue"] == "default");
  // An ACP profile's adapter tells its options once it runs (this one has none).
  d.send(request(2, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  CHECK(d.recv_reply(2)["result"]["configOptions"].size() == 1);
}

TEST_CASE("an adapter that cannot start at session/new: the answer comes, the first prompt reports the failure") {
  Daemon d(fake_config({"--exit-on-start", "3"}));
  d.initialize();
  d.send(request(1, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json created = d.recv_reply(1)["result"];
  CHECK(created["configOptions"].size() == 1);
  d.send(request(2, "session/prompt",
                 {{"sessionId", created["sessionId"]}, {"prompt", json::array({{{"type", "text"}, {"text", "hi"}}})}}));
  json failed = d.recv_reply(2);
  CHECK(failed["error"]["data"]["exitCode"] == 3);
  // Tried once per lifetime: the next session/new does not start it again.
  d.send(request(3, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  CHECK(d.recv_reply(3)["result"]["sessionId"].is_string());
  d.send(request(4, "_harnessd/sessions/list", json::object()));
  json listed = d.recv_reply(4);
  for (const json& s : listed["result"]["sessions"]) CHECK(s["adapterPid"].is_null());
}

TEST_CASE("a session/new that waits for its adapter is answered at shutdown too") {
  Daemon d(fake_config({"--init-delay", "60000"}));
  d.initialize();
  d.send(request(1, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  CHECK(d.quiet_for(std::chrono::milliseconds(300)));  // the adapter is starting
  d.close_stdin();
  json created = d.recv_reply(1);
  CHECK(created["result"]["sessionId"].is_string());
  CHECK(created["result"]["configOptions"].size() == 1);
}
