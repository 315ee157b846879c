// Re-addressing a frame by its bytes (schema/frame_edit).
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "schema/frame_edit.h"

using harnessd::schema::session_id_span;
using nlohmann::json;

namespace {

// The line with its session id replaced where session_id_span says, or
// "" when it says the line cannot be edited so.
std::string readdress(const std::string& line, const std::string& id) {
  auto span = session_id_span(line);
  if (!span) return "";
  return line.substr(0, span->first) + json(id).dump() + line.substr(span->second);
}

}  // namespace

TEST_CASE("session_id_span finds params.sessionId and nothing that only looks like it") {
  const std::string plain =
      R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"a1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}})";
  std::string out = readdress(plain, "sess_host");
  REQUIRE_FALSE(out.empty());
  json want = json::parse(plain);
  want["params"]["sessionId"] = "sess_host";
  CHECK(json::parse(out) == want);

  // Spaces, another order, a sessionId inside the update and inside text,
  // strings holding braces, quotes and escapes before the real one.
  const std::string tricky =
      R"( { "params" : { "update" : { "sessionId" : "inner", "text" : "}{\"sessionId\":\"no\"]" , "n" : [1, {"sessionId": "x"}] } ,)"
      R"( "sessionId" : "a\"1" } , "method" : "session/update" , "jsonrpc" : "2.0" } )";
  out = readdress(tricky, "sess_host");
  REQUIRE_FALSE(out.empty());
  want = json::parse(tricky);
  want["params"]["sessionId"] = "sess_host";
  CHECK(json::parse(out) == want);
  CHECK(json::parse(out)["params"]["update"]["sessionId"] == "inner");
}

TEST_CASE("session_id_span refuses lines that replacing one value would not re-address exactly") {
  const char* refused[] = {
      // sessionId twice: a reader keeps the last one.
      R"({"jsonrpc":"2.0","method":"m","params":{"sessionId":"a","sessionId":"b"}})",
      // Written with an escape, so not found by its bytes.
      R"({"jsonrpc":"2.0","method":"m","params":{"session\u0049d":"a"}})",
      R"({"jsonrpc":"2.0","method":"m","par\u0061ms":{"sessionId":"a"}})",
      // Not a string, or missing.
      R"({"jsonrpc":"2.0","method":"m","params":{"sessionId":7}})",
      R"({"jsonrpc":"2.0","method":"m","params":{"update":{}}})",
      // A member other than the three, or one of them twice.
      R"({"jsonrpc":"2.0","method":"m","params":{"sessionId":"a"},"extra":1})",
      R"({"jsonrpc":"2.0","jsonrpc":"2.0","method":"m","params":{"sessionId":"a"}})",
      // params not an object; not an object at all; something after it.
      R"({"jsonrpc":"2.0","method":"m","params":["sessionId","a"]})",
      R"(["jsonrpc"])",
      R"({"jsonrpc":"2.0","method":"m","params":{"sessionId":"a"}} {})",
      // A raw control character (a CR at the end of the line).
      "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"sessionId\":\"a\"}}\r",
  };
  for (const char* line : refused) {
    INFO(line);
    CHECK_FALSE(session_id_span(line));
  }
}
