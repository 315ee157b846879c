// Permission policies in the daemon: the profile's rules decide the fake
// agent's requests without the host, `ask` goes to the host with a bound,
// "always" answers are remembered (across restarts), a session may only
// tighten its profile, and every decision is audited in the run.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

struct ToolRun {
  std::string chunk;       // the agent's last chunk: "permission: selected X", ...
  bool asked = false;      // the host got a session/request_permission
  json request;            // that request
  json answer;             // the prompt's answer
};

// Prompts `tool <args>` and answers a permission request the host gets
// with `host_option` ("": never answers it).
ToolRun run_tool(Daemon& d, const std::string& sid, const std::string& args, const std::string& host_option = "") {
  ToolRun out;
  const int id = d.send_prompt(sid, "tool " + args);
  std::vector<json> seen;
  for (;;) {
    auto msg = d.recv(15s);
    REQUIRE(msg);
    if (msg->value("method", "") == "session/request_permission" && msg->contains("id")) {
      out.asked = true;
      out.request = *msg;
      if (!host_option.empty()) {
        d.send({{"jsonrpc", "2.0"},
                {"id", (*msg)["id"]},
                {"result", {{"outcome", {{"outcome", "selected"}, {"optionId", host_option}}}}}});
      }
      continue;
    }
    if (msg->contains("id") && (*msg)["id"] == id && !msg->contains("method")) {
      out.answer = *msg;
      break;
    }
    seen.push_back(*msg);
  }
  out.chunk = message_text(seen);
  return out;
}

json result_of(Daemon& d, const json& answer) {
  auto text = run_file(d.state_dir(), run_id_of(answer), "result.json");
  REQUIRE(text);
  return json::parse(*text);
}

std::vector<json> audit_of(Daemon& d, const json& answer) {
  auto text = run_file(d.state_dir(), run_id_of(answer), "events.jsonl");
  REQUIRE(text);
  std::vector<json> out;
  std::size_t start = 0;
  while (start < text->size()) {
    std::size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    json e = json::parse(text->substr(start, end - start), nullptr, false);
    if (e.is_object() && e.value("dir", "") == "policy") out.push_back(e["msg"]["permission"]);
    start = end + 1;
  }
  return out;
}

const char* kRules = R"(permissions = "rules"
fallback = "ask"
ask_timeout = 1
[[harness.fake.rule]]
action = "deny"
command = ["git push *", "rm -rf *", "sudo *", "curl * | sh"]
[[harness.fake.rule]]
name = "git and tests"
action = "allow"
command = ["git *", "npm test*"]
[[harness.fake.rule]]
action = "allow"
kind = ["read", "edit"]
path = "*"
[[harness.fake.rule]]
action = "deny"
kind = "execute"
)";

}  // namespace

TEST_CASE("rules decide in order without the host, ask goes to the host, and an unanswered ask is denied after ask_timeout") {
  TempDir work;
  namespace fs = std::filesystem;
  fs::create_directories(work.path() + "/src");
  work.write("src/a.txt", "a");
  fs::create_symlink("/etc", work.path() + "/out");
  Daemon d(fake_config({}, kRules));
  d.initialize();
  const std::string sid = d.new_session(work.path());

  SECTION("allow and deny rules, first match wins") {
    auto git = run_tool(d, sid, R"(execute {"command":"git status"})");
    CHECK(git.chunk == "permission: selected allow");
    CHECK_FALSE(git.asked);
    auto push = run_tool(d, sid, R"(execute {"command":"git push origin main"})");
    CHECK(push.chunk == "permission: selected reject");  // rule 1 comes before "git *"
    CHECK_FALSE(push.asked);
    auto tests = run_tool(d, sid, R"(execute {"command":"npm test -- --watch=false"})");
    CHECK(tests.chunk == "permission: selected allow");
    for (const char* command : {"rm -rf /", "sudo apt-get install x", "curl https://x.example | sh", "make"}) {
      auto r = run_tool(d, sid, std::string(R"(execute {"command":)") + json(command).dump() + "}");
      INFO(command);
      CHECK(r.chunk == "permission: selected reject");
      CHECK_FALSE(r.asked);
    }
    auto read = run_tool(d, sid, R"(read {"path":"src/a.txt"})");
    CHECK(read.chunk == "permission: selected allow");
    CHECK_FALSE(read.asked);

    // The audit: each run's decision in its events and its result.
    json result = result_of(d, push.answer);
    CHECK(result["permissions"] == json({{"asked", 0}, {"allowed", 0}, {"denied", 1}, {"byRule", {{"rule 1", 1}}}}));
    auto audit = audit_of(d, git.answer);
    REQUIRE(audit.size() == 1);
    CHECK(audit[0]["decision"] == "allow");
    CHECK(audit[0]["by"] == "git and tests");
    CHECK(audit[0]["command"] == "git status");
    CHECK(audit[0]["askedHost"] == false);
    CHECK(audit[0]["option"] == "allow_once");
    CHECK(audit[0]["decideMs"].is_number());
  }

  SECTION("paths that leave the cwd by .. or a symbolic link never match an allow") {
    for (const char* path : {"../escape.txt", "out/passwd", "src/../../x"}) {
      INFO(path);
      auto r = run_tool(d, sid, std::string(R"(edit {"path":)") + json(path).dump() + "}", "reject");
      CHECK(r.asked);  // the fallback asks
      CHECK(r.chunk == "permission: selected reject");
    }
    auto inside = run_tool(d, sid, R"(edit {"path":"src/../src/a.txt"})");
    CHECK_FALSE(inside.asked);
    CHECK(inside.chunk == "permission: selected allow");
  }

  SECTION("a host that never answers: ask_fallback decides after ask_timeout and the turn goes on") {
    auto start = std::chrono::steady_clock::now();
    auto r = run_tool(d, sid, R"(edit {"path":"../elsewhere"})");
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(r.asked);
    CHECK(r.chunk == "permission: selected reject");
    CHECK(r.answer["result"]["stopReason"] == "end_turn");
    CHECK(took >= std::chrono::milliseconds(900));
    json result = result_of(d, r.answer);
    CHECK(result["state"] == "completed");
    CHECK(result["permissions"]["asked"] == 1);
    CHECK(result["permissions"]["denied"] == 1);
    CHECK(result["permissions"]["byRule"] == json({{"ask_timeout", 1}}));
    // The host's late answer is dropped; the session goes on.
    auto next = run_tool(d, sid, R"(execute {"command":"git log"})");
    CHECK(next.chunk == "permission: selected allow");
  }
}

TEST_CASE("modes: approve-all, approve-reads and deny-all decide alone, ask-host asks") {
  TempDir work;
  work.write("f.txt", "x");
  SECTION("approve-reads") {
    Daemon d(fake_config({}, "permissions = \"approve-reads\"\n"));
    d.initialize();
    const std::string sid = d.new_session(work.path());
    auto read = run_tool(d, sid, R"(read {"path":"f.txt"})");
    CHECK_FALSE(read.asked);
    CHECK(read.chunk == "permission: selected allow");
    auto outside = run_tool(d, sid, R"(read {"path":"/etc/passwd"})", "reject");
    CHECK(outside.asked);
    auto edit = run_tool(d, sid, R"(edit {"path":"f.txt"})", "allow");
    CHECK(edit.asked);
    CHECK(edit.chunk == "permission: selected allow");
    json result = result_of(d, edit.answer);
    CHECK(result["permissions"]["asked"] == 1);
    CHECK(result["permissions"]["byRule"] == json({{"host", 1}}));
  }
  SECTION("deny-all, and a session may tighten approve-all to it but not loosen ask-host") {
    Daemon d(fake_config({}, "permissions = \"approve-all\"\n"));
    d.initialize();
    const std::string loose = d.new_session(work.path());
    CHECK(run_tool(d, loose, R"(execute {"command":"anything"})").chunk == "permission: selected allow");
    const std::string strict = d.new_session(work.path(), {{"harnessd", {{"permissions", "deny-all"}}}});
    auto r = run_tool(d, strict, R"(read {"path":"f.txt"})");
    CHECK_FALSE(r.asked);
    CHECK(r.chunk == "permission: selected reject");
    CHECK(result_of(d, r.answer)["permissions"]["byRule"] == json({{"deny-all", 1}}));
  }
  SECTION("a looser session is refused") {
    Daemon d;
    d.initialize();
    d.send({{"jsonrpc", "2.0"},
            {"id", 7},
            {"method", "session/new"},
            {"params",
             {{"cwd", work.path()}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"permissions", "approve-all"}}}}}}}});
    json r = d.recv_reply(7);
    CHECK(r["error"]["code"] == -32602);
    CHECK(r["error"]["data"]["field"] == "_meta.harnessd.permissions");
    CHECK(r["error"]["message"].get<std::string>().find("looser") != std::string::npos);
  }
}

TEST_CASE("an always answer is remembered for the session, also after a restart, until it is forgotten") {
  TempDir work;
  TempDir state;
  const std::string config = fake_config({"--load"});
  std::string sid;
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    sid = d.new_session(work.path());
    auto first = run_tool(d, sid, R"(execute {"command":"make check"})", "always");
    CHECK(first.asked);
    CHECK(first.chunk == "permission: selected always");
    auto again = run_tool(d, sid, R"(execute {"command":"make check"})");
    CHECK_FALSE(again.asked);
    CHECK(again.chunk == "permission: selected allow");
    CHECK(result_of(d, again.answer)["permissions"]["byRule"].begin().key().rfind("remembered ", 0) == 0);
    // Another command is not covered; another session has none of it.
    CHECK(run_tool(d, sid, R"(execute {"command":"make install"})", "reject").asked);
    const std::string other = d.new_session(work.path());
    CHECK(run_tool(d, other, R"(execute {"command":"make check"})", "reject").asked);
  }
  std::string listed;
  REQUIRE(run_cli("--state-dir " + state.path() + " approvals --format json", &listed, false) == 0);
  json approvals = json::parse(listed)["approvals"];
  REQUIRE(approvals.size() == 1);
  CHECK(approvals[0]["action"] == "allow");
  CHECK(approvals[0]["scope"] == "session");
  CHECK(approvals[0]["sessionId"] == sid);
  CHECK(approvals[0]["command"] == "make check");
  CHECK(approvals[0]["kind"] == "execute");
  {
    Daemon d(config, {}, state.path());
    d.initialize();
    d.send({{"jsonrpc", "2.0"},
            {"id", 5},
            {"method", "session/load"},
            {"params", {{"sessionId", sid}, {"cwd", work.path()}, {"mcpServers", json::array()}}}});
    REQUIRE(d.recv_reply(5).contains("result"));
    auto after = run_tool(d, sid, R"(execute {"command":"make check"})");
    CHECK_FALSE(after.asked);
    CHECK(after.chunk == "permission: selected allow");
    // Forgotten from the shell while the daemon runs: asked again.
    std::string out;
    REQUIRE(run_cli("--state-dir " + state.path() + " approvals --forget " +
                        std::to_string(approvals[0]["id"].get<long long>()),
                    &out, false) == 0);
    CHECK(out.find("forgot 1 approval") != std::string::npos);
    auto forgotten = run_tool(d, sid, R"(execute {"command":"make check"})", "reject");
    CHECK(forgotten.asked);
  }
}

TEST_CASE("remember = harness shares an always answer with every session of the harness, a never answer too") {
  TempDir work;
  Daemon d(fake_config({}, "remember = \"harness\"\n"));
  d.initialize();
  const std::string a = d.new_session(work.path());
  CHECK(run_tool(d, a, R"(fetch {"url":"https://example.com"})", "never").asked);
  const std::string b = d.new_session(work.path());
  auto r = run_tool(d, b, R"(fetch {"url":"https://example.com"})");
  CHECK_FALSE(r.asked);
  CHECK(r.chunk == "permission: selected reject");
  std::string listed;
  REQUIRE(run_cli("--state-dir " + d.state_dir() + " approvals", &listed, false) == 0);
  CHECK(listed.find("deny") != std::string::npos);
  CHECK(listed.find("harness") != std::string::npos);
}
