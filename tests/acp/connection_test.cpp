// The JSON-RPC connection without I/O: envelopes, dispatch, reply-once,
// outgoing calls and what happens when the peer goes away.
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "acp/connection.h"

using namespace harnessd;
using nlohmann::json;

namespace {
struct Wire {
  std::vector<json> out;
  std::vector<std::string> raw;
  acp::Connection::Send sender() {
    return [this](std::string line) {
      REQUIRE(!line.empty());
      REQUIRE(line.back() == '\n');
      REQUIRE(line.find('\n') == line.size() - 1);  // exactly one line
      raw.push_back(line);
      out.push_back(json::parse(line));
    };
  }
};

acp::ConnectionOptions agent_side() {
  acp::ConnectionOptions o;
  o.peer = "test";
  o.require_initialize = true;
  return o;
}
}  // namespace

TEST_CASE("requests are dispatched and ids echoed with their JSON type") {
  Wire w;
  acp::Connection c(agent_side(), w.sender());
  c.on_request("initialize", [&](const json&, acp::Reply r) {
    r.result({{"ok", true}});
    c.mark_initialized();
  });
  c.on_request("echo", [](const json& p, acp::Reply r) { r.result(p); });
  c.receive_line(R"({"jsonrpc":"2.0","id":"abc","method":"initialize","params":{}})");
  c.receive_line(R"({"jsonrpc":"2.0","id":7,"method":"echo","params":{"x":1}})");
  c.receive_line(R"({"jsonrpc":"2.0","id":null,"method":"echo"})");
  REQUIRE(w.out.size() == 3);
  CHECK(w.out[0]["id"] == "abc");
  CHECK(w.out[1]["id"] == 7);
  CHECK(w.out[1]["result"] == json{{"x", 1}});
  CHECK(w.out[2]["id"].is_null());
  CHECK(w.out[2]["result"] == json::object());  // absent params read as {}
}

TEST_CASE("requests before initialize get -32600 and notifications get nothing") {
  Wire w;
  acp::Connection c(agent_side(), w.sender());
  int notified = 0;
  c.on_request("session/new", [](const json&, acp::Reply r) { r.result({}); });
  c.on_notification("session/cancel", [&](const json&) { ++notified; });
  c.receive_line(R"({"jsonrpc":"2.0","id":1,"method":"session/new","params":{}})");
  c.receive_line(R"({"jsonrpc":"2.0","method":"session/cancel","params":{}})");
  REQUIRE(w.out.size() == 1);
  CHECK(w.out[0]["error"]["code"] == -32600);
  CHECK(w.out[0]["id"] == 1);
  CHECK(notified == 0);
}

TEST_CASE("malformed envelopes get the right code") {
  Wire w;
  acp::Connection c(agent_side(), w.sender());
  c.mark_initialized();
  struct Case {
    const char* line;
    int code;
    json id;
  };
  std::vector<Case> cases = {
      {"not json", -32700, nullptr},
      {"[1,2]", -32600, nullptr},
      {"42", -32600, nullptr},
      {R"({"jsonrpc":"1.0","id":3,"method":"x"})", -32600, 3},
      {R"({"id":4,"method":"x"})", -32600, 4},
      {R"({"jsonrpc":"2.0","id":5,"method":7})", -32600, 5},
      {R"({"jsonrpc":"2.0","id":6})", -32600, 6},
      {R"({"jsonrpc":"2.0","id":{"a":1},"method":"x"})", -32600, nullptr},
      {R"({"jsonrpc":"2.0","id":8,"method":"x","params":"s"})", -32600, 8},
      {R"({"jsonrpc":"2.0","id":9,"method":"nope"})", -32601, 9},
      {R"({"jsonrpc":"2.0","id":10,"method":"_vendor/thing"})", -32601, 10},
  };
  for (const auto& k : cases) {
    w.out.clear();
    c.receive_line(k.line);
    INFO(k.line);
    REQUIRE(w.out.size() == 1);
    CHECK(w.out[0]["error"]["code"] == k.code);
    CHECK(w.out[0]["id"] == k.id);
    CHECK(w.out[0]["jsonrpc"] == "2.0");
    CHECK_FALSE(w.out[0]["error"]["message"].get<std::string>().empty());
  }
  w.out.clear();
  c.receive_line(R"({"jsonrpc":"2.0","method":"unknown/notification"})");
  CHECK(w.out.empty());
}

TEST_CASE("bind decodes params with a callable that carries context, and answers a failure with its error") {
  Wire w;
  acp::Connection c({}, w.sender());
  struct Count {
    std::int64_t n = 0;
  };
  const std::int64_t max = 10;  // the context the decoder needs besides the params
  auto decode = [max](const json& p) -> Expected<Count, RpcError> {
    if (!p.contains("n") || !p.at("n").is_number_integer() || p.at("n").get<std::int64_t>() > max) {
      RpcError e = RpcError::invalid_params("count: n must be an integer up to " + std::to_string(max));
      e.data = {{"method", "count"}, {"field", "n"}};
      return e;
    }
    return Count{p.at("n").get<std::int64_t>()};
  };
  std::vector<std::int64_t> handled;
  c.bind<Count>("count", decode, [&](Count req, acp::Reply r) {
    handled.push_back(req.n);
    r.result({{"n", req.n}});
  });
  c.receive_line(R"({"jsonrpc":"2.0","id":1,"method":"count","params":{"n":7}})");
  c.receive_line(R"({"jsonrpc":"2.0","id":2,"method":"count","params":{"n":11}})");
  c.receive_line(R"({"jsonrpc":"2.0","id":3,"method":"count"})");
  REQUIRE(w.out.size() == 3);
  CHECK(w.out[0]["id"] == 1);
  CHECK(w.out[0]["result"] == json{{"n", 7}});
  const json refused = {{"code", -32602},
                        {"message", "count: n must be an integer up to 10"},
                        {"data", {{"method", "count"}, {"field", "n"}}}};
  CHECK(w.out[1]["id"] == 2);
  CHECK(w.out[1]["error"] == refused);
  CHECK(w.out[2]["id"] == 3);
  CHECK(w.out[2]["error"] == refused);
  CHECK(handled == std::vector<std::int64_t>{7});  // only the request that decoded
}

TEST_CASE("bind_notification passes decoded params on and drops those that do not decode, unanswered") {
  Wire w;
  acp::Connection c({}, w.sender());
  const std::string prefix = "seen:";
  std::vector<std::string> handled;
  c.bind_notification<std::string>(
      "poke",
      [prefix](const json& p) -> Expected<std::string, RpcError> {
        if (!p.contains("id") || !p.at("id").is_string()) return RpcError::invalid_params("poke: id must be a string");
        return prefix + p.at("id").get<std::string>();
      },
      [&](std::string id) { handled.push_back(std::move(id)); });
  c.receive_line(R"({"jsonrpc":"2.0","method":"poke","params":{"id":"a"}})");
  c.receive_line(R"({"jsonrpc":"2.0","method":"poke","params":{"id":1}})");
  c.receive_line(R"({"jsonrpc":"2.0","method":"poke","params":{"id":"b"}})");
  CHECK(handled == std::vector<std::string>{"seen:a", "seen:b"});
  CHECK(w.out.empty());
}

TEST_CASE("a Reply answers exactly once, and a forgotten one answers -32603") {
  Wire w;
  acp::Connection c({}, w.sender());
  std::optional<acp::Reply> kept;
  c.on_request("twice", [](const json&, acp::Reply r) {
    r.result({{"n", 1}});
    r.result({{"n", 2}});  // dropped and logged
  });
  c.on_request("keep", [&](const json&, acp::Reply r) { kept.emplace(std::move(r)); });
  c.on_request("forget", [](const json&, acp::Reply) {});
  c.on_request("throw", [](const json&, acp::Reply) { throw std::runtime_error("boom"); });
  c.receive_line(R"({"jsonrpc":"2.0","id":1,"method":"twice"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":2,"method":"forget"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":3,"method":"keep"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":4,"method":"throw"})");
  REQUIRE(w.out.size() == 3);
  CHECK(w.out[0]["result"]["n"] == 1);
  CHECK(w.out[1]["id"] == 2);
  CHECK(w.out[1]["error"]["code"] == -32603);
  CHECK(w.out[2]["id"] == 4);
  CHECK(w.out[2]["error"]["code"] == -32603);
  // The answer says what went wrong, not only that nothing answered.
  CHECK(w.out[1]["error"]["message"].get<std::string>().find("was not answered") != std::string::npos);
  CHECK(w.out[2]["error"]["message"] == "Internal error: throw failed: boom");
  REQUIRE(kept->pending());
  kept->result({});
  CHECK(w.out.size() == 4);
  CHECK_FALSE(kept->pending());
}

TEST_CASE("a result line made ahead is the line result() sends, and answers once") {
  Wire made, sent;
  acp::Connection by_line({}, made.sender());
  acp::Connection by_result({}, sent.sender());
  const std::vector<json> values = {json{{"stopReason", "end_turn"}, {"_meta", {{"x", "caf\xc3\xa9 \xff"}}}}, nullptr,
                                    json::array({1, "two"})};
  std::vector<std::string> lines;
  for (auto* c : {&by_line, &by_result}) {
    c->on_request("ask", [&, c, n = std::size_t{0}](const json&, acp::Reply r) mutable {
      const json& value = values[n++ % values.size()];
      if (c == &by_result) return r.result(value);
      lines.push_back(r.result_line(value));
      r.send_result_line(lines.back());
      r.send_result_line(lines.back());  // dropped and logged
      CHECK_FALSE(r.pending());
    });
  }
  for (const char* id : {"7", "\"r-1\"", "null"}) {
    const std::string line = std::string(R"({"jsonrpc":"2.0","id":)") + id + R"(,"method":"ask"})";
    by_line.receive_line(line);
    by_result.receive_line(line);
  }
  CHECK(made.raw == sent.raw);
  CHECK(made.raw.size() == 3);
  CHECK(made.raw == lines);
}

TEST_CASE("a reply dropped by an exception that the handler catches itself is still answered once") {
  Wire w;
  acp::Connection c({}, w.sender());
  c.on_request("inner", [](const json&, acp::Reply r) {
    try {
      acp::Reply moved = std::move(r);
      throw std::runtime_error("inside");
    } catch (const std::exception&) {
    }
  });
  c.receive_line(R"({"jsonrpc":"2.0","id":9,"method":"inner"})");
  REQUIRE(w.out.size() == 1);
  CHECK(w.out[0]["id"] == 9);
  CHECK(w.out[0]["error"]["code"] == -32603);
  c.receive_line(R"({"jsonrpc":"2.0","id":10,"method":"inner"})");
  CHECK(w.out.size() == 2);  // nothing of the first dispatch is answered again
}

TEST_CASE("replies after the connection closed are dropped silently") {
  Wire w;
  std::optional<acp::Reply> kept;
  {
    acp::Connection c({}, w.sender());
    c.on_request("keep", [&](const json&, acp::Reply r) { kept.emplace(std::move(r)); });
    c.receive_line(R"({"jsonrpc":"2.0","id":1,"method":"keep"})");
  }
  kept->result({});
  kept.reset();
  CHECK(w.out.empty());
}

TEST_CASE("outgoing calls get their answers, errors, and fail when the peer goes") {
  Wire w;
  std::vector<acp::Connection::CallResult> got;
  acp::Connection c({}, w.sender());
  auto collect = [&](acp::Connection::CallResult r) { got.push_back(std::move(r)); };
  auto id0 = c.call("a", {{"x", 1}}, collect);
  auto id1 = c.call("b", nullptr, collect);
  c.call("c", {}, collect);
  REQUIRE(w.out.size() == 3);
  CHECK(w.out[0]["method"] == "a");
  CHECK(w.out[0]["id"] == id0);
  CHECK_FALSE(w.out[1].contains("params"));
  // A call's line is written as its message's value would be.
  CHECK(w.raw[0] == R"({"id":)" + std::to_string(id0) + R"(,"jsonrpc":"2.0","method":"a","params":{"x":1}})" "\n");
  CHECK(w.raw[0] == w.out[0].dump() + "\n");
  // Params given as text go out as they are, in the same place.
  auto id3 = c.call_text("d\"q", R"({"prompt":[{"text":"é","type":"text"}],"sessionId":"s"})", collect);
  CHECK(w.raw[3] == R"({"id":)" + std::to_string(id3) +
                        R"(,"jsonrpc":"2.0","method":"d\"q","params":{"prompt":[{"text":"é","type":"text"}],"sessionId":"s"}})"
                        "\n");
  CHECK(w.raw[3] == w.out[3].dump() + "\n");
  c.receive_line(json({{"jsonrpc", "2.0"}, {"id", id3}, {"result", {}}}).dump());
  got.clear();
  c.receive_line(json({{"jsonrpc", "2.0"}, {"id", id1}, {"result", {{"ok", 1}}}}).dump());
  c.receive_line(json({{"jsonrpc", "2.0"}, {"id", id0}, {"error", {{"code", -5}, {"message", "no"}}}}).dump());
  c.receive_line(json({{"jsonrpc", "2.0"}, {"id", 999}, {"result", {}}}).dump());  // unknown: ignored
  REQUIRE(got.size() == 2);
  CHECK((*got[0])["ok"] == 1);
  CHECK(got[1].error().code == -5);
  CHECK(c.pending_calls() == 1);
  c.close();
  REQUIRE(got.size() == 3);
  CHECK(got[2].error().code == rpc_code::kPeerGone);
  c.call("after", {}, collect);
  CHECK(got.back().error().code == rpc_code::kPeerGone);
}

TEST_CASE("the table of outgoing calls is bounded") {
  Wire w;
  acp::ConnectionOptions o;
  o.max_pending_calls = 2;
  std::vector<int> codes;  // outlives the connection, whose destructor fails the pending calls
  acp::Connection c(o, w.sender());
  for (int i = 0; i < 3; ++i)
    c.call("m", {}, [&](acp::Connection::CallResult r) { codes.push_back(r ? 0 : r.error().code); });
  REQUIRE(codes.size() == 1);
  CHECK(codes[0] == rpc_code::kTooManyPending);
  CHECK(w.out.size() == 2);
}

TEST_CASE("an over-long request is answered with its id when the id can be read") {
  Wire w;
  acp::Connection c(agent_side(), w.sender());
  c.receive_overlong(R"({"jsonrpc":"2.0","id":42,"method":"session/prompt","params":{"prompt":[{"text":"xxx)", 99999999,
                     1000);
  REQUIRE(w.out.size() == 1);
  CHECK(w.out[0]["id"] == 42);
  CHECK(w.out[0]["error"]["code"] == -32600);
  CHECK(w.out[0]["error"]["data"]["size"] == 99999999);

  w.out.clear();
  c.receive_overlong(R"({"jsonrpc":"2.0","params":{"nested":{"id":5}},"xx)", 5000, 1000);
  REQUIRE(w.out.size() == 1);
  CHECK(w.out[0]["id"].is_null());  // only a top-level id counts
}

TEST_CASE("output is valid UTF-8 even when strings are not") {
  Wire w;
  acp::Connection c({}, w.sender());
  c.notify("n", {{"text", std::string("bad \xff byte")}});
  REQUIRE(w.raw.size() == 1);
  CHECK(w.raw[0].find("\xef\xbf\xbd") != std::string::npos);
}

TEST_CASE("an adapter-side connection repairs invalid UTF-8 and does not answer garbage") {
  Wire w;
  acp::ConnectionOptions o;
  o.repair_utf8 = true;
  o.answer_malformed = false;
  acp::Connection c(o, w.sender());
  std::string seen;
  c.on_notification("session/update", [&](const json& p) { seen = p["t"].get<std::string>(); });
  c.receive_line(std::string("{\"jsonrpc\":\"2.0\",\"method\":\"session/update\",\"params\":{\"t\":\"a\xff\"}}"));
  CHECK(seen == "a\xef\xbf\xbd");
  c.receive_line("Starting server on port 1234...");
  CHECK(w.out.empty());
}

TEST_CASE("when_all_answered waits for every request read, however it is answered") {
  Wire w;
  acp::ConnectionOptions o = agent_side();
  o.require_initialize = false;
  acp::Connection c(o, w.sender());
  std::vector<acp::Reply> held;
  c.on_request("later", [&](const json&, acp::Reply r) { held.push_back(std::move(r)); });
  c.on_request("now", [](const json&, acp::Reply r) { r.result({}); });
  c.on_request("throws", [](const json&, acp::Reply) { throw std::runtime_error("boom"); });

  int waited = 0;
  c.when_all_answered([&] { ++waited; });  // nothing open: at once
  CHECK(waited == 1);

  c.receive_line(R"({"jsonrpc":"2.0","id":1,"method":"later"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":2,"method":"later"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":3,"method":"now"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":4,"method":"throws"})");
  c.receive_line(R"({"jsonrpc":"2.0","id":5,"method":"missing"})");
  CHECK(c.unanswered_requests() == 2);
  c.when_all_answered([&] {
    ++waited;
    CHECK(w.out.back()["id"] == 2);  // after the last answer is on the wire
  });
  held[0].result({});
  CHECK(waited == 1);
  { acp::Reply dropped = std::move(held[1]); }  // the safety net answers it
  CHECK(waited == 2);
  CHECK(c.unanswered_requests() == 0);

  // A waiter can be forgotten.
  c.receive_line(R"({"jsonrpc":"2.0","id":6,"method":"later"})");
  c.when_all_answered([&] { ++waited; });
  c.when_all_answered(nullptr);
  held[2].result({});
  CHECK(waited == 2);
}

TEST_CASE("a fast path sees lines before the parse, declines to the parser, and goes with the handlers") {
  Wire w;
  acp::ConnectionOptions o;
  o.peer = "adapter";
  o.repair_utf8 = true;
  acp::Connection c(o, w.sender());
  std::vector<std::string> taken, parsed, tapped;
  c.set_inbound_tap([&](std::string_view line, bool) { tapped.emplace_back(line); });
  c.set_fast_path([&](std::string_view line) {
    if (line.find("fast") == std::string_view::npos) return false;
    c.tap_inbound(line);
    taken.emplace_back(line);
    return true;
  });
  c.on_notification("note", [&](const json& params) { parsed.push_back(params.value("v", "")); });
  c.receive_line(R"({"jsonrpc":"2.0","method":"note","params":{"v":"fast"}})");
  c.receive_line(R"({"jsonrpc":"2.0","method":"note","params":{"v":"slow"}})");
  CHECK(taken.size() == 1);
  CHECK(parsed == std::vector<std::string>{"slow"});
  CHECK(tapped.size() == 2);  // each line shown once, whichever path took it

  c.clear_handlers();
  c.receive_line(R"({"jsonrpc":"2.0","method":"note","params":{"v":"fast again"}})");
  CHECK(taken.size() == 1);
  CHECK(parsed.size() == 1);
}

TEST_CASE("a connection that does not repair UTF-8 offers no line to a fast path") {
  Wire w;
  acp::ConnectionOptions o;
  o.peer = "host";
  acp::Connection c(o, w.sender());
  int taken = 0;
  std::vector<std::string> parsed;
  c.set_fast_path([&](std::string_view) { return ++taken > 0; });
  c.on_notification("note", [&](const json& params) { parsed.push_back(params.value("v", "")); });
  c.receive_line(R"({"jsonrpc":"2.0","method":"note","params":{"v":"fast"}})");
  CHECK(taken == 0);
  CHECK(parsed == std::vector<std::string>{"fast"});
}
