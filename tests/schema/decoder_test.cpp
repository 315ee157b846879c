// Decoding of the ACP requests harnessd serves: every wrong field is named.
#include <catch2/catch.hpp>

#include "schema/acp.h"
#include "schema/decoder.h"

using harnessd::schema::decode_initialize;
using harnessd::schema::decode_list_sessions;
using harnessd::schema::decode_new_session;
using harnessd::schema::decode_prompt;
using harnessd::schema::decode_session_ref;
using harnessd::schema::PromptCapabilities;
using nlohmann::json;

TEST_CASE("initialize accepts any version number and keeps capabilities") {
  for (int v : {0, 1, 2, 65535}) {
    auto r = decode_initialize({{"protocolVersion", v}, {"clientCapabilities", {{"terminal", true}}}});
    REQUIRE(r);
    CHECK(r->protocolVersion == v);
    CHECK(r->clientCapabilities == json{{"terminal", true}});
  }
}

TEST_CASE("initialize names the wrong field") {
  auto missing = decode_initialize(json::object());
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == -32602);
  CHECK(missing.error().message == "initialize: protocolVersion is required");

  auto text = decode_initialize({{"protocolVersion", "1"}});
  REQUIRE_FALSE(text);
  CHECK(text.error().message == "initialize: protocolVersion must be an integer, not string");
  CHECK(text.error().data["field"] == "protocolVersion");

  auto caps = decode_initialize({{"protocolVersion", 1}, {"clientCapabilities", json::array()}});
  REQUIRE_FALSE(caps);
  CHECK(caps.error().message == "initialize: clientCapabilities must be an object, not array");

  auto params = decode_initialize(json::array());
  REQUIRE_FALSE(params);
  CHECK(params.error().message == "initialize: params must be an object, not array");
}

TEST_CASE("session/new requires an absolute cwd and reads _meta.harnessd") {
  auto ok = decode_new_session({{"cwd", "/work"},
                                {"mcpServers", json::array()},
                                {"_meta", {{"harnessd", {{"harness", "claude"}, {"name", "agent:x"}}}}}});
  REQUIRE(ok);
  CHECK(ok->cwd == "/work");
  CHECK(ok->harnessd.harness == "claude");
  CHECK(ok->harnessd.name == "agent:x");

  auto relative = decode_new_session({{"cwd", "work"}, {"mcpServers", json::array()}});
  REQUIRE_FALSE(relative);
  CHECK(relative.error().message == "session/new: cwd must be an absolute path, got 'work'");

  auto no_servers = decode_new_session({{"cwd", "/w"}});  // lenient: absent means none
  REQUIRE(no_servers);
  CHECK(no_servers->mcpServers == json::array());

  auto bad_servers = decode_new_session({{"cwd", "/w"}, {"mcpServers", "x"}});
  REQUIRE_FALSE(bad_servers);
  CHECK(bad_servers.error().data["field"] == "mcpServers");

  auto bad_meta = decode_new_session({{"cwd", "/w"}, {"_meta", {{"harnessd", {{"harness", 3}}}}}});
  REQUIRE_FALSE(bad_meta);
  CHECK(bad_meta.error().message == "session/new: _meta.harnessd.harness must be a string, not integer");

  auto unknown_meta = decode_new_session({{"cwd", "/w"}, {"_meta", {{"other.vendor", 1}}}});
  CHECK(unknown_meta);  // other vendors' _meta is none of our business
}

TEST_CASE("session/prompt checks each content block against the capabilities") {
  PromptCapabilities caps{false, false, true};
  auto ok = decode_prompt({{"sessionId", "s"},
                           {"prompt",
                            {{{"type", "text"}, {"text", "hi"}},
                             {{"type", "resource_link"}, {"uri", "file:///a"}, {"name", "a"}},
                             {{"type", "resource"}, {"resource", {{"uri", "file:///b"}, {"text", "b"}}}}}}},
                          caps);
  REQUIRE(ok);
  CHECK(ok->prompt.size() == 3);

  auto image = decode_prompt(
      {{"sessionId", "s"}, {"prompt", {{{"type", "image"}, {"data", "AA=="}, {"mimeType", "image/png"}}}}}, caps);
  REQUIRE_FALSE(image);
  CHECK(image.error().message ==
        "session/prompt: prompt[0].type 'image' is not supported (promptCapabilities.image is false)");

  auto no_text = decode_prompt({{"sessionId", "s"}, {"prompt", {{{"type", "text"}}}}}, caps);
  REQUIRE_FALSE(no_text);
  CHECK(no_text.error().message == "session/prompt: prompt[0].text is required");

  auto unknown = decode_prompt({{"sessionId", "s"}, {"prompt", {{{"type", "video"}}}}}, caps);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().data["field"] == "prompt[0].type");

  auto not_object = decode_prompt({{"sessionId", "s"}, {"prompt", {"hello"}}}, caps);
  REQUIRE_FALSE(not_object);
  CHECK(not_object.error().message == "session/prompt: prompt[0] must be an object, not string");

  auto no_session = decode_prompt({{"prompt", json::array()}}, caps);
  REQUIRE_FALSE(no_session);
  CHECK(no_session.error().message == "session/prompt: sessionId is required");

  auto prompt_string = decode_prompt({{"sessionId", "s"}, {"prompt", "hi"}}, caps);
  REQUIRE_FALSE(prompt_string);
  CHECK(prompt_string.error().message == "session/prompt: prompt must be an array, not string");
}

TEST_CASE("session references and list params") {
  CHECK(decode_session_ref("session/cancel", {{"sessionId", "a"}})->sessionId == "a");
  auto bad = decode_session_ref("session/close", {{"sessionId", 1}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "session/close: sessionId must be a string, not integer");

  CHECK(decode_list_sessions(nullptr));  // params may be omitted
  auto relative = decode_list_sessions({{"cwd", "x"}});
  REQUIRE_FALSE(relative);
  CHECK(relative.error().data["field"] == "cwd");
}

TEST_CASE("the packaging context and the mode are checked, naming the field") {
  PromptCapabilities caps{true, false, true};
  auto with = [&](json context) {
    return decode_prompt({{"sessionId", "s"},
                          {"prompt", {{{"type", "text"}, {"text", "do it"}}}},
                          {"_meta", {{"harnessd", {{"context", context}, {"template", "plain"}}}}}},
                         caps);
  };
  auto ok = with({{"background", "b"},
                  {"constraints", {"c1"}},
                  {"acceptance", {"a1"}},
                  {"references", {"docs/a.md", {{"path", "b.md"}, {"title", "B"}, {"content", "x"}}}},
                  {"outputContract", "end with DONE"},
                  {"vars", {{"k", "v"}}}});
  REQUIRE(ok);
  CHECK(ok->harnessd.context["constraints"][0] == "c1");
  CHECK(ok->harnessd.templateName == "plain");

  auto constraint = with({{"constraints", {"ok", 3}}});
  REQUIRE_FALSE(constraint);
  CHECK(constraint.error().code == -32602);
  CHECK(constraint.error().data["field"] == "_meta.harnessd.context.constraints[1]");
  CHECK(constraint.error().message ==
        "session/prompt: _meta.harnessd.context.constraints[1] must be a string, not integer");

  auto unknown = with({{"goal", "x"}});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().data["field"] == "_meta.harnessd.context.goal");

  auto reference = with({{"references", {{{"title", "no path"}}}}});
  REQUIRE_FALSE(reference);
  CHECK(reference.error().message == "session/prompt: _meta.harnessd.context.references[0] needs a path or a uri");

  auto background = with({{"background", json::array()}});
  REQUIRE_FALSE(background);
  CHECK(background.error().data["field"] == "_meta.harnessd.context.background");

  auto not_object = decode_prompt(
      {{"sessionId", "s"}, {"prompt", json::array()}, {"_meta", {{"harnessd", {{"context", "text"}}}}}}, caps);
  REQUIRE_FALSE(not_object);
  CHECK(not_object.error().data["field"] == "_meta.harnessd.context");

  auto mode = decode_new_session({{"cwd", "/w"}, {"_meta", {{"harnessd", {{"mode", "sometimes"}}}}}});
  REQUIRE_FALSE(mode);
  CHECK(mode.error().data["field"] == "_meta.harnessd.mode");
  auto oneshot = decode_new_session({{"cwd", "/w"}, {"_meta", {{"harnessd", {{"mode", "oneshot"}}}}}});
  REQUIRE(oneshot);
  CHECK(oneshot->harnessd.mode == "oneshot");
}
