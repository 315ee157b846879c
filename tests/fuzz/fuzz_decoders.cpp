// fuzz_decoders: every params decoder of schema/acp.h (and the Decoder
// accessors under them) given the input, parsed as JSON, as params.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "schema/acp.h"
#include "schema/decoder.h"
#include "schema/json_parse.h"

namespace {

using harnessd::RpcError;
using harnessd::fuzz::fail;
using nlohmann::json;
namespace schema = harnessd::schema;

// A refusal is -32602 with a message; it must serialise to one line.
template <class T>
void check(const char* method, const harnessd::Expected<T, RpcError>& result) {
  if (result) return;
  const RpcError& e = result.error();
  if (e.code != harnessd::rpc_code::kInvalidParams) fail(std::string(method) + ": refused with code " + std::to_string(e.code));
  if (e.message.empty()) fail(std::string(method) + ": refused without a message");
  json wire = e;
  (void)wire.dump(-1, ' ', false, json::error_handler_t::replace);
}

void decode_all(const json& params) {
  check("initialize", schema::decode_initialize(params));
  auto created = schema::decode_new_session(params);
  check("session/new", created);
  if (created && !schema::is_absolute_path(created->cwd)) fail("session/new accepted a relative cwd");
  for (int caps = 0; caps < 8; ++caps) {
    schema::PromptCapabilities pc{(caps & 1) != 0, (caps & 2) != 0, (caps & 4) != 0};
    auto prompt = schema::decode_prompt(params, pc);
    check("session/prompt", prompt);
    if (prompt && !prompt->prompt.is_array()) fail("session/prompt accepted a prompt that is not an array");
  }
  check("session/cancel", schema::decode_session_ref("session/cancel", params));
  check("session/close", schema::decode_session_ref("session/close", params));
  check("session/list", schema::decode_list_sessions(params));
  auto cancel = schema::decode_cancel_request(params);
  check("$/cancel_request", cancel);
  if (cancel && !cancel->requestId.is_string() && !cancel->requestId.is_number_integer()) {
    fail("$/cancel_request accepted a requestId of type " + std::string(schema::type_name(cancel->requestId)));
  }
  check("session/load", schema::decode_load_session("session/load", params));
  check("session/resume", schema::decode_load_session("session/resume", params));
  check("_harnessd/runs/get", schema::decode_run_get(params));
  check("session/set_config_option", schema::decode_set_config_option(params));
  check("session/set_mode", schema::decode_set_mode(params));
  check("_harnessd/sessions/set_summary", schema::decode_set_summary(params));
  auto runs = schema::decode_list_runs(params);
  check("_harnessd/runs/list", runs);
  check("context", schema::check_context("session/prompt", "_meta.harnessd.context", params));

  // The accessors themselves, on every key of the object and of `_meta`.
  schema::Decoder d("fuzz", params);
  if (params.is_object()) {
    for (const auto& [key, value] : params.items()) {
      (void)value;
      d.optional_string(key);
      d.optional_bool(key);
      d.optional_int(key, INT64_MIN, INT64_MAX);
      d.optional_int(key, 0, 100);
      d.optional_array(key);
      d.optional_object(key);
      d.required_value(key);
      schema::Decoder n = d.nested(key);
      n.optional_string("name");
      n.required_int("x", -1, 1);
      d.absorb(n);
    }
  }
  d.required_string("sessionId");
  if (!d.ok()) check("fuzz", harnessd::Expected<int, RpcError>(d.error()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  auto parsed = schema::parse_json(std::string_view(reinterpret_cast<const char*>(bytes), size));
  if (!parsed) return 0;
  decode_all(*parsed);
  // The same value where decoders look for harnessd's extension.
  json wrapped = {{"sessionId", "s"}, {"cwd", "/"}, {"prompt", json::array({{{"type", "text"}, {"text", "t"}}})}};
  wrapped["_meta"]["harnessd"] = *parsed;
  decode_all(wrapped);
  wrapped["_meta"]["harnessd"] = {{"context", *parsed}};
  decode_all(wrapped);
  wrapped["_meta"] = *parsed;
  decode_all(wrapped);
  return 0;
}
