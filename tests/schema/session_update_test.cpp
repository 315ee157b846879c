// The ACP v1 shapes of relayed session/update objects.
#include <catch2/catch.hpp>

#include "schema/session_update.h"

using namespace harnessd::schema;
using nlohmann::json;

namespace {
bool passes(const char* text) {
  auto problem = check_session_update(json::parse(text));
  if (problem) UNSCOPED_INFO(text << ": " << *problem);
  return !problem;
}
}  // namespace

TEST_CASE("well-formed updates of every v1 kind pass") {
  CHECK(passes(R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"hi"},"messageId":"m"})"));
  CHECK(passes(R"({"sessionUpdate":"user_message_chunk","content":{"type":"image","data":"AA==","mimeType":"image/png"}})"));
  CHECK(passes(R"({"sessionUpdate":"agent_thought_chunk","content":{"type":"resource","resource":{"uri":"a","blob":"AA=="}}})"));
  CHECK(passes(R"({"sessionUpdate":"tool_call","toolCallId":"t","title":"x","kind":"execute","status":"pending","rawInput":{"a":[1]}})"));
  CHECK(passes(R"({"sessionUpdate":"tool_call_update","toolCallId":"t","content":[{"type":"terminal","terminalId":"1"}]})"));
  CHECK(passes(R"({"sessionUpdate":"plan","entries":[{"content":"a","priority":"low","status":"completed"}]})"));
  CHECK(passes(R"({"sessionUpdate":"available_commands_update","availableCommands":[{"name":"t","description":"d","input":{"hint":"h"}}]})"));
  CHECK(passes(R"({"sessionUpdate":"current_mode_update","currentModeId":"code"})"));
  CHECK(passes(R"({"sessionUpdate":"config_option_update","configOptions":[{"id":"model","name":"Model","type":"select","currentValue":"a","options":[]}]})"));
  CHECK(passes(R"({"sessionUpdate":"session_info_update"})"));
  CHECK(passes(R"({"sessionUpdate":"usage_update","used":1,"size":2})"));
}

TEST_CASE("malformed updates say what is wrong") {
  auto problem = [](const char* text) { return check_session_update(json::parse(text)).value_or("(passes)"); };
  CHECK(problem(R"({"sessionUpdate":"agent_message_chunk"})") == "content is required");
  CHECK(problem(R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":42}})") ==
        "content.text must be a string, not integer");
  CHECK(problem(R"({"sessionUpdate":"agent_message_chunk","content":{"type":"image","data":"AA=="}})") ==
        "content.mimeType is required");
  CHECK(problem(R"({"sessionUpdate":"tool_call","toolCallId":"t"})") == "title is required");
  CHECK(problem(R"({"sessionUpdate":"tool_call","toolCallId":"t","title":"x","kind":"nope"})") ==
        "kind \"nope\" is not a tool kind");
  CHECK(problem(R"({"sessionUpdate":"current_mode_update","modeId":"x"})") == "currentModeId is required");
  CHECK(problem(R"({"sessionUpdate":"usage_update","used":-1,"size":2})") == "used must be a non-negative integer");
  CHECK(problem(R"({"sessionUpdate":"what"})") == "sessionUpdate 'what' is not an ACP v1 update");
  CHECK(problem(R"("agent_message_chunk")") == "update must be an object, not string");
  CHECK_FALSE(is_known_update_kind("notice"));
  CHECK(is_known_update_kind("usage_update"));
}
