// Packaging through the daemon: templates chosen per harness, session or
// prompt; the files a packaged prompt lists; oneshot sessions whose memory
// harnessd carries across fresh adapters, summaries and restarts.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "daemon_process.h"
#include "stored_session.h"

using namespace harnessd::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json text(const std::string& t) { return {{"type", "text"}, {"text", t}}; }

json prompt_with(Daemon& d, int id, const std::string& sid, const json& blocks, const json& harnessd_meta,
                 std::vector<json>* seen = nullptr) {
  json params = {{"sessionId", sid}, {"prompt", blocks}};
  if (!harnessd_meta.is_null()) params["_meta"] = {{"harnessd", harnessd_meta}};
  d.send(request(id, "session/prompt", params));
  return d.recv_reply(id, seen);
}

std::string run_dir(Daemon& d, const json& answer) {
  return d.state_dir() + "/runs/" + answer["result"]["_meta"]["harnessd"]["runId"].get<std::string>();
}

// The fake agent trims what it echoes.
std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

int run_count(const std::string& state) {
  if (!fs::exists(state + "/runs")) return 0;
  int n = 0;
  for (const auto& e : fs::directory_iterator(state + "/runs")) n += e.is_directory() ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("a oneshot session: a fresh adapter per prompt, and the memory in the packaged prompt") {
  TempDir state;
  std::string sid;
  {
    Daemon d(fake_config(), {}, state.path());
    d.initialize();
    sid = d.new_session("/tmp", {{"harnessd", {{"mode", "oneshot"}, {"name", "memo"}}}});
    std::vector<json> first, second;
    d.prompt(sid, "pid", &first);
    d.prompt(sid, "pid", &second);
    CHECK(message_text(first).substr(0, 4) == "pid ");
    CHECK(message_text(first) != message_text(second));  // each prompt had its own adapter
    d.prompt(sid, "echo alpha answer");
    std::vector<json> seen;
    json third = d.prompt(sid, "show-prompt", &seen);
    std::string packaged = message_text(seen);
    // single-shot, with the earlier turns, oldest first, each task with its answer.
    CHECK(packaged.find("[TASK]\nshow-prompt") != std::string::npos);
    auto alpha = packaged.find("- Task: echo alpha answer\n  Answer: alpha answer");
    auto pid = packaged.find("- Task: pid\n  Answer: " + message_text(first));
    CHECK(pid != std::string::npos);
    CHECK(alpha != std::string::npos);
    CHECK(pid < alpha);
    // What the harness was given is the recording's prompt.md.
    CHECK(trimmed(run_file(d.state_dir(), run_id_of(third), "prompt.md").value_or("")) == packaged);
    // No adapter stays behind between the prompts of a oneshot session.
    CHECK(eventually([&] {
      d.send(request(8, "_harnessd/sessions/list", json::object()));
      return d.recv_reply(8)["result"]["sessions"][0]["adapterPid"].is_null();
    }));

    d.send(request(9, "_harnessd/sessions/set_summary", {{"sessionId", sid}, {"summary", "Two pids, then alpha."}}));
    CHECK(d.recv_reply(9)["result"] == json::object());
    seen.clear();
    d.prompt(sid, "show-prompt", &seen);
    CHECK(message_text(seen).find("Summary of this session so far: Two pids, then alpha.") != std::string::npos);
  }
  // The memory is in the store: a later daemon packs it the same way.
  Daemon d(fake_config(), {}, state.path());
  d.initialize();
  std::string again = d.new_session("/tmp", {{"harnessd", {{"name", "memo"}, {"ensure", true}}}});
  CHECK(again == sid);
  std::vector<json> seen;
  d.prompt(sid, "show-prompt", &seen);
  std::string packaged = message_text(seen);
  CHECK(packaged.find("- Task: echo alpha answer\n  Answer: alpha answer") != std::string::npos);
  CHECK(packaged.find("Summary of this session so far: Two pids, then alpha.") != std::string::npos);
  json record = stored_session(state.path(), sid);
  CHECK(record["mode"] == "oneshot");
  CHECK(record["history"].size() == 6);
  CHECK(record["history"][2]["runId"].get<std::string>().rfind("run_", 0) == 0);
}

TEST_CASE("a prompt's context and references: packaged, with large resources and images as files") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session();
  std::string big(6000, 'x');
  json blocks = {text("show-prompt"),
                 {{"type", "resource"}, {"resource", {{"uri", "file:///repo/big.log"}, {"text", big}}}},
                 {{"type", "resource"}, {"resource", {{"uri", "file:///repo/small.md"}, {"text", "small note"}}}},
                 {{"type", "image"}, {"mimeType", "image/png"}, {"data", "aGVsbG8="}}};
  json context = {{"background", "The user ships on Fridays."},
                  {"constraints", {"Touch nothing outside src/"}},
                  {"acceptance", {"make test passes"}},
                  {"references", {"docs/design.md"}},
                  {"outputContract", "End with DONE."}};
  std::vector<json> seen;
  json r = prompt_with(d, 1, sid, blocks, {{"context", context}}, &seen);
  REQUIRE(r.contains("result"));
  std::string packaged = message_text(seen);
  const std::string dir = run_dir(d, r);
  for (const char* part : {"[ACCEPTANCE CRITERIA]\n- make test passes", "[CONSTRAINTS]\n- Touch nothing outside src/",
                           "The user ships on Fridays.", "- docs/design.md", "small note", "End with DONE."}) {
    INFO(part);
    CHECK(packaged.find(part) != std::string::npos);
  }
  // The large resource and the image are files of the run, listed by path.
  CHECK(packaged.find(big) == std::string::npos);
  CHECK(packaged.find(dir + "/references/") != std::string::npos);
  CHECK(packaged.find(dir + "/images/") != std::string::npos);
  bool found_big = false, found_image = false;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string content = read_file(e.path());
    found_big = found_big || content == big;
    found_image = found_image || content == "hello";
    CHECK(mode_of(e.path()) == 0600);
  }
  CHECK(found_big);
  CHECK(found_image);
  CHECK(mode_of(dir + "/references") == 0700);
  CHECK(trimmed(run_file(d.state_dir(), run_id_of(r), "prompt.md").value_or("")) == packaged);
  // show gives them as files of the run too.
  for (const auto& e : fs::directory_iterator(dir + "/references")) {
    const std::string name = "references/" + e.path().filename().string();
    INFO(name);
    CHECK(run_file(d.state_dir(), run_id_of(r), name) == read_file(e.path()));
  }

  // Without a context or template the prompt goes as sent.
  seen.clear();
  d.prompt(sid, "show-prompt", &seen);
  CHECK(message_text(seen) == "show-prompt");
  // The plain template, asked for by the prompt.
  seen.clear();
  prompt_with(d, 2, sid, json::array({text("echo hi")}), {{"template", "plain"}, {"context", {{"references", {"a.md"}}}}},
              &seen);
  CHECK(message_text(seen) == "hi\n\nReferences:\n- a.md");
}

TEST_CASE("a bad context or template is refused naming the field, and nothing runs") {
  TempDir templates;
  templates.write("mine.tmpl", "[TASK]\n{{task}}\nmine for {{vars.who}} in {{session}}\n");
  templates.write("broken.tmpl", "{{#section task}}\n{{task}}\n");
  std::string config = fake_config({}, "template = \"mine\"", "template_dir = \"" + templates.path() + "\"");
  Daemon d(config);
  d.initialize();
  std::string sid = d.new_session("/tmp", {{"harnessd", {{"name", "t"}}}});

  json bad = prompt_with(d, 1, sid, json::array({text("echo x")}), {{"context", {{"constraints", {"fine", 7}}}}});
  REQUIRE(bad.contains("error"));
  CHECK(bad["error"]["code"] == -32602);
  CHECK(bad["error"]["data"]["field"] == "_meta.harnessd.context.constraints[1]");

  json unknown = prompt_with(d, 2, sid, json::array({text("echo x")}), {{"template", "nope"}});
  REQUIRE(unknown.contains("error"));
  CHECK(unknown["error"]["code"] == -32602);
  CHECK(unknown["error"]["data"]["field"] == "_meta.harnessd.template");
  CHECK(unknown["error"]["message"].get<std::string>().find("nope") != std::string::npos);

  json broken = prompt_with(d, 3, sid, json::array({text("echo x")}), {{"template", "broken"}});
  REQUIRE(broken.contains("error"));
  CHECK(broken["error"]["message"].get<std::string>().find("never closed") != std::string::npos);

  d.send(request(4, "session/new",
                 {{"cwd", "/tmp"}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"template", "nope"}}}}}}));
  CHECK(d.recv_reply(4)["error"]["data"]["field"] == "_meta.harnessd.template");
  CHECK(run_count(d.state_dir()) == 0);

  // The harness's own template, from the user's folder, with vars; the daemon kept serving.
  std::vector<json> seen;
  json ok = prompt_with(d, 5, sid, json::array({text("show-prompt")}), {{"context", {{"vars", {{"who", "ana"}}}}}}, &seen);
  REQUIRE(ok.contains("result"));
  CHECK(message_text(seen) == "[TASK]\nshow-prompt\nmine for ana in t");
}
