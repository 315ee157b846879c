// fuzz_relay: adapter lines in, host lines out. The relay itself
// (Session::relay_update) needs a running adapter, so this target runs the
// path around it: the adapter-side Connection (UTF-8 repair, no answers to
// malformed lines) parses each line, a session/update is checked against
// the ACP v1 shape of its kind (schema::check_session_update) and re-addressed to the host's session id as the relay does, and
// the host-side Connection writes it. Every host line must parse with the
// bounded parser and have the shape of an ACP session/update notification,
// and where the relay would re-address the adapter's bytes instead
// (schema::session_id_span), they must say exactly what the parse says.
// A line the relay's no-parse path takes (schema::scan_text_chunk) must be
// one the parse path would have relayed, with the same values, and is
// relayed from its bytes as the relay does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/utf8.h"
#include "fuzz_support.h"
#include "schema/frame_edit.h"
#include "schema/json_parse.h"
#include "schema/session_update.h"
#include "schema/text_chunk.h"

namespace {

using nlohmann::json;
using namespace harnessd;

// The relay's own gate (Session::relay_update): an update of a kind ACP v1
// defines, in that kind's shape; nothing else reaches a host that did not
// opt into unstable kinds.
bool relayable(const json& params) {
  if (!params.is_object()) return false;
  auto it = params.find("update");
  if (it == params.end() || !it->is_object()) return false;
  auto kind = it->find("sessionUpdate");
  if (kind == it->end() || !kind->is_string()) return false;
  return schema::is_known_update_kind(kind->get_ref<const std::string&>()) && !schema::check_session_update(*it);
}

// What scan_text_chunk accepts, the parser accepts with the same values.
void check_scan(std::string_view line) {
  auto chunk = schema::scan_text_chunk(line);
  if (!chunk) return;
  auto parsed = schema::parse_json(line);
  if (!parsed) fuzz::fail("scan_text_chunk took a line the parser refuses: " + parsed.error().message);
  const json& msg = *parsed;
  if (!msg.is_object() || msg.size() != 3 || msg.value("jsonrpc", json()) != "2.0" ||
      msg.value("method", json()) != "session/update" || !msg.contains("params") || !relayable(msg["params"])) {
    fuzz::fail("scan_text_chunk took a line that is not a relayable session/update");
  }
  const json& params = msg["params"];
  const json& update = params["update"];
  const auto [first, last] = chunk->session_id;
  if (!params["sessionId"].is_string() || line.substr(first + 1, last - first - 2) != params["sessionId"].get<std::string>()) {
    fuzz::fail("scan_text_chunk's session id span holds another id than the parse");
  }
  if (schema::session_id_span(line) != chunk->session_id) fuzz::fail("scan_text_chunk and session_id_span disagree");
  if (update["sessionUpdate"] != chunk->kind || update["content"]["type"] != "text" ||
      update["content"]["text"] != chunk->text || update.size() != 2 || update["content"].size() != 2 ||
      params.size() != 2) {
    fuzz::fail("scan_text_chunk read other values than the parse");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  std::vector<std::string> to_host, to_adapter;
  acp::ConnectionOptions host_options;
  host_options.peer = "host";
  acp::Connection host(host_options, [&](std::string line) { to_host.push_back(std::move(line)); });
  acp::ConnectionOptions adapter_options;
  adapter_options.peer = "adapter 1";
  adapter_options.repair_utf8 = true;
  adapter_options.answer_malformed = false;
  acp::Connection adapter(adapter_options, [&](std::string line) { to_adapter.push_back(std::move(line)); });
  std::size_t relayed = 0;
  std::string_view inbound;  // the line being dispatched, as the relay's tap keeps it
  adapter.set_inbound_tap([&](std::string_view line, bool is_json) { inbound = is_json ? line : std::string_view(); });
  adapter.set_fast_path([&](std::string_view line) {
    // The relay's fast path: a text chunk relayed from its bytes.
    auto chunk = schema::scan_text_chunk(line);
    if (!chunk) return false;
    adapter.tap_inbound(line);
    const auto [first, last] = chunk->session_id;
    to_host.push_back(std::string(line.substr(0, first)) + "\"sess_host-1\"" + std::string(line.substr(last)) + "\n");
    ++relayed;
    return true;
  });
  adapter.on_notification("session/update", [&](const json& params) {
    if (!relayable(params)) return;
    json out = params;
    out["sessionId"] = "sess_host-1";
    // The relay's fast path: the adapter's bytes with the id replaced must
    // say exactly what the serialised parse says.
    if (auto span = schema::session_id_span(inbound)) {
      std::string edited = std::string(inbound.substr(0, span->first)) + "\"sess_host-1\"" +
                           std::string(inbound.substr(span->second));
      auto reparsed = schema::parse_json(edited);
      if (!reparsed) fuzz::fail("a re-addressed line does not parse: " + reparsed.error().message);
      json want = {{"jsonrpc", "2.0"}, {"method", "session/update"}, {"params", out}};
      if (*reparsed != want) fuzz::fail("a re-addressed line says something else than the parse");
    }
    host.notify("session/update", std::move(out));
    ++relayed;
  });

  for (std::string_view line : fuzz::split_lines(input)) {
    check_scan(acp::utf8::valid(line) ? std::string(line) : acp::utf8::repair(line));
    adapter.receive_line(line);
  }

  if (to_host.size() != relayed) fuzz::fail("the host got another number of lines than were relayed");
  for (const std::string& line : to_host) {
    if (line.empty() || line.back() != '\n' || line.find('\n') != line.size() - 1) {
      fuzz::fail("a host line is not one line ending in LF");
    }
    std::string_view body(line.data(), line.size() - 1);
    if (!acp::utf8::valid(body)) fuzz::fail("a host line is not valid UTF-8");
    auto parsed = schema::parse_json(body);
    if (!parsed) fuzz::fail("a host line does not parse with the bounded parser: " + parsed.error().message);
    const json& msg = *parsed;
    if (!msg.is_object() || msg.value("jsonrpc", json()) != "2.0" || msg.value("method", json()) != "session/update" ||
        msg.contains("id")) {
      fuzz::fail("a host line is not a session/update notification");
    }
    if (!msg.contains("params") || msg["params"].value("sessionId", json()) != "sess_host-1" ||
        !relayable(msg["params"])) {
      fuzz::fail("a host line fails the ACP shape of its update");
    }
  }
  // What the adapter is answered (requests with no handler here) is JSON-RPC too.
  for (const std::string& line : to_adapter) {
    auto parsed = schema::parse_json(std::string_view(line.data(), line.size() - 1));
    if (!parsed || !parsed->is_object() || !parsed->contains("id")) fuzz::fail("the adapter got a malformed answer");
  }
  return 0;
}
