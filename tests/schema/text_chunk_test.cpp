// Text chunks recognised without a parse (schema/text_chunk): what is
// taken must read as the parser reads it; anything else is declined.
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include "schema/text_chunk.h"

using harnessd::schema::scan_text_chunk;
using nlohmann::json;

TEST_CASE("scan_text_chunk takes the commonest update and reads it as the parser does") {
  const std::string plain =
      R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"a-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"hi \"there\"\n\\ \/ \t"}}}})";
  auto chunk = scan_text_chunk(plain);
  REQUIRE(chunk);
  CHECK(chunk->kind == "agent_message_chunk");
  CHECK(chunk->text == json::parse(plain)["params"]["update"]["content"]["text"]);
  CHECK(plain.substr(chunk->session_id.first, chunk->session_id.second - chunk->session_id.first) == "\"a-1\"");

  // Spaced out, members in another order, each kind of chunk.
  for (const char* kind : {"user_message_chunk", "agent_thought_chunk"}) {
    const std::string spaced = std::string(R"( { "params" : { "update" : { "content" : { "text" : "x" , "type" : "text" } , )") +
                               R"("sessionUpdate" : ")" + kind + R"(" } , "sessionId" : "b" } , "method" : "session/update" , )"
                               R"("jsonrpc" : "2.0" } )";
    auto c = scan_text_chunk(spaced);
    REQUIRE(c);
    CHECK(c->kind == kind);
    CHECK(c->text == "x");
    CHECK(spaced.substr(c->session_id.first, c->session_id.second - c->session_id.first) == "\"b\"");
  }
}

TEST_CASE("scan_text_chunk declines what it does not fully understand, for the parser to handle") {
  const std::string head = R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"a","update":)";
  for (const std::string& line : {
           // Other shapes and extra members.
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"},"messageId":"m"}}})",
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"image","data":"x","mimeType":"a"}}}})",
           head + R"({"sessionUpdate":"plan","entries":[]}}})",
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x","_meta":{}}}}})",
           std::string(R"({"jsonrpc":"2.0","id":1,"method":"session/update","params":{}})"),
           // Escapes it leaves to the parser, and malformed strings.
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"\u0041"}}}})",
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"\x"}}}})",
           head + "{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"type\":\"text\",\"text\":\"a\tb\"}}}}",
           head + "{\"sessionUpdate\":\"agent_message_chunk\",\t\"content\":{\"type\":\"text\",\"text\":\"ab\"}}}}",
           std::string(R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"a\"b","update":)") +
               R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}})",
           // A member twice, a missing member, a wrong value.
           head + R"({"sessionUpdate":"agent_message_chunk","sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}})",
           head + R"({"sessionUpdate":"agent_message_chunk"}}})",
           std::string(R"({"jsonrpc":"1.0","method":"session/update","params":{"sessionId":"a","update":)") +
               R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}})",
           // Truncated, trailing bytes, trailing commas.
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}})",
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x"}}}} x)",
           head + R"({"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"x",}}}})",
       }) {
    INFO(line);
    CHECK_FALSE(scan_text_chunk(line));
  }
}
