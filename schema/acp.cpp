// Decoding of the ACP requests harnessd serves. Every check here maps to a
// rule of the ACP v1 schema; messages name the method and the field.
#include "schema/acp.h"

#include <limits>

#include "schema/decoder.h"

namespace harnessd::schema {

using nlohmann::json;

namespace {

// Paths and names become argv, file names and log lines: a NUL would cut
// them short in one place and not another, other control characters forge
// log lines and terminal output.
bool has_control(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

void check_plain(Decoder& d, std::string_view key, const std::optional<std::string>& value) {
  if (value && has_control(*value)) d.fail(key, "must not contain control characters");
}

void decode_harnessd_meta(Decoder& d, HarnessdMeta& out) {
  Decoder meta = d.nested("_meta");
  Decoder ours = meta.nested("harnessd");
  out.harness = ours.optional_string("harness");
  out.name = ours.optional_string("name");
  out.hostSession = ours.optional_string("hostSession");
  out.ensure = ours.optional_bool("ensure").value_or(false);
  out.lane = ours.optional_string("lane");
  // Up to 30 days: a deadline is for runs, not for storing forever.
  out.timeoutMs = ours.optional_int("timeoutMs", 0, 30LL * 24 * 3600 * 1000);
  out.templateName = ours.optional_string("template");
  out.mode = ours.optional_string("mode");
  if (out.mode && *out.mode != "persistent" && *out.mode != "oneshot") {
    ours.fail("mode", "must be \"persistent\" or \"oneshot\", got '" + *out.mode + "'");
  }
  out.permissions = ours.optional_string("permissions");
  if (out.permissions && *out.permissions != "ask-host" && *out.permissions != "approve-all" &&
      *out.permissions != "approve-reads" && *out.permissions != "deny-all") {
    ours.fail("permissions",
              "must be \"ask-host\", \"approve-all\", \"approve-reads\" or \"deny-all\", got '" + *out.permissions + "'");
  }
  if (ours.optional_object("sandbox")) {
    Decoder sandbox = ours.nested("sandbox");
    out.sandboxMode = sandbox.optional_string("mode");
    out.sandboxNetwork = sandbox.optional_bool("network");
    if (out.sandboxMode && *out.sandboxMode != "none" && *out.sandboxMode != "read-only" &&
        *out.sandboxMode != "workspace-write") {
      sandbox.fail("mode", "must be \"none\", \"read-only\" or \"workspace-write\"");
    }
    ours.absorb(sandbox);
  }
  if (const json* context = ours.optional_object("context")) {
    auto checked = check_context(d.method(), "_meta.harnessd.context", *context);
    if (checked) {
      out.context = *context;
    } else {
      ours.set_error(checked.error());
    }
  }
  check_plain(ours, "harness", out.harness);
  check_plain(ours, "name", out.name);
  check_plain(ours, "hostSession", out.hostSession);
  check_plain(ours, "template", out.templateName);
  check_plain(ours, "lane", out.lane);
  if (out.harness && out.harness->empty()) ours.fail("harness", "must not be empty");
  if (out.name && out.name->empty()) ours.fail("name", "must not be empty");
  if (out.hostSession && (out.hostSession->empty() || out.hostSession->size() > kMaxHostSession)) {
    ours.fail("hostSession", "must be 1 to " + std::to_string(kMaxHostSession) + " bytes");
  }
  if (out.lane && *out.lane != "interactive" && *out.lane != "scheduled" && *out.lane != "background") {
    ours.fail("lane", "must be \"interactive\", \"scheduled\" or \"background\", got '" + *out.lane + "'");
  }
  meta.absorb(ours);
  d.absorb(meta);
}

// Checks one ContentBlock (ACP "Content" section): text and resource_link are
// always accepted; image, audio and embedded resources only when advertised.
void check_content_block(Decoder& d, const json& block, std::size_t index, const PromptCapabilities& caps) {
  const std::string field = "prompt[" + std::to_string(index) + "]";
  if (!block.is_object()) {
    d.fail(field, "must be an object, not " + std::string(type_name(block)));
    return;
  }
  Decoder b = d.child(field, block);
  auto type = b.required_string("type");
  if (!type) {
    d.absorb(b);
    return;
  }
  if (*type == "text") {
    b.required_string("text");
  } else if (*type == "resource_link") {
    b.required_string("uri");
    b.required_string("name");
  } else if (*type == "image" || *type == "audio") {
    if ((*type == "image" && !caps.image) || (*type == "audio" && !caps.audio)) {
      b.fail("type", "'" + *type + "' is not supported (promptCapabilities." + *type + " is false)");
    }
    b.required_string("data");
    b.required_string("mimeType");
  } else if (*type == "resource") {
    if (!caps.embeddedContext) {
      b.fail("type", "'resource' is not supported (promptCapabilities.embeddedContext is false)");
    }
    Decoder r = b.nested("resource");
    r.required_string("uri");
    if (!r.optional_string("text") && !r.optional_string("blob") && r.ok()) {
      r.fail("text", "or blob is required");
    }
    if (!b.optional_object("resource") && b.ok()) b.fail("resource", "is required");
    b.absorb(r);
  } else {
    b.fail("type", "has unknown content type '" + *type + "'");
  }
  d.absorb(b);
}

}  // namespace

bool is_absolute_path(const std::string& path) { return !path.empty() && path.front() == '/' && !has_control(path); }

namespace {
void check_cwd(Decoder& d, const std::string& cwd) {
  if (has_control(cwd)) {
    d.fail("cwd", "must not contain control characters");
  } else if (!is_absolute_path(cwd)) {
    d.fail("cwd", "must be an absolute path, got '" + cwd + "'");
  }
}
}  // namespace

Expected<void, RpcError> check_context(const std::string& method, const std::string& prefix, const json& context) {
  auto fail = [&](const std::string& field, const std::string& problem) -> Expected<void, RpcError> {
    RpcError e = RpcError::invalid_params(method + ": " + prefix + "." + field + " " + problem);
    e.data = {{"method", method}, {"field", prefix + "." + field}};
    return e;
  };
  if (!context.is_object()) return fail("", "must be an object");
  static const char* kKnown[] = {"background", "constraints", "acceptance", "references", "outputContract", "vars"};
  for (auto& [key, value] : context.items()) {
    bool known = false;
    for (const char* k : kKnown) known = known || key == k;
    if (!known) return fail(key, "is not a context field (known: background, constraints, acceptance, references, "
                                 "outputContract, vars)");
    if (value.is_null()) continue;
    if ((key == "background" || key == "outputContract") && !value.is_string()) {
      return fail(key, "must be a string, not " + std::string(type_name(value)));
    }
    if (key == "vars" && !value.is_object()) return fail(key, "must be an object, not " + std::string(type_name(value)));
    if (key == "constraints" || key == "acceptance" || key == "references") {
      if (!value.is_array()) return fail(key, "must be an array, not " + std::string(type_name(value)));
      for (std::size_t i = 0; i < value.size(); ++i) {
        const json& item = value[i];
        std::string where = key + "[" + std::to_string(i) + "]";
        if (key != "references") {
          if (!item.is_string()) return fail(where, "must be a string, not " + std::string(type_name(item)));
          continue;
        }
        if (item.is_string()) continue;
        if (!item.is_object()) return fail(where, "must be a path or an object, not " + std::string(type_name(item)));
        for (auto& [rk, rv] : item.items()) {
          if (rk != "path" && rk != "uri" && rk != "title" && rk != "content") {
            return fail(where + "." + rk, "is not a reference field (known: path, uri, title, content)");
          }
          if (!rv.is_string()) return fail(where + "." + rk, "must be a string, not " + std::string(type_name(rv)));
        }
        if (!item.contains("path") && !item.contains("uri")) return fail(where, "needs a path or a uri");
      }
    }
  }
  return {};
}

Expected<InitializeRequest, RpcError> decode_initialize(const json& params) {
  Decoder d("initialize", params);
  InitializeRequest out;
  // Any version is accepted: the answer is always 1 (ACP "Initialization":
  // the agent replies with the latest version it supports).
  if (auto v = d.required_int("protocolVersion", 0, 65535)) out.protocolVersion = *v;
  if (const json* caps = d.optional_object("clientCapabilities")) out.clientCapabilities = *caps;
  if (const json* info = d.optional_object("clientInfo")) out.clientInfo = *info;
  if (!d.ok()) return d.error();
  return out;
}

Expected<NewSessionRequest, RpcError> decode_new_session(const json& params) {
  Decoder d("session/new", params);
  NewSessionRequest out;
  if (auto cwd = d.required_string("cwd")) {
    out.cwd = *cwd;
    check_cwd(d, out.cwd);
  }
  if (const json* servers = d.optional_array("mcpServers")) {
    for (std::size_t i = 0; i < servers->size(); ++i) {
      if (!(*servers)[i].is_object()) {
        d.fail("mcpServers[" + std::to_string(i) + "]", "must be an object");
        break;
      }
    }
    out.mcpServers = *servers;
  }
  decode_harnessd_meta(d, out.harnessd);
  if (d.ok() && out.harnessd.ensure && !out.harnessd.name) {
    Decoder meta = d.nested("_meta");
    Decoder ours = meta.nested("harnessd");
    ours.fail("ensure", "needs _meta.harnessd.name");
    meta.absorb(ours);
    d.absorb(meta);
  }
  if (!d.ok()) return d.error();
  return out;
}

Expected<PromptRequest, RpcError> decode_prompt(const json& params, const PromptCapabilities& caps) {
  Decoder d("session/prompt", params);
  PromptRequest out;
  if (auto id = d.required_string("sessionId")) out.sessionId = *id;
  if (const json* prompt = d.required_array("prompt")) {
    for (std::size_t i = 0; i < prompt->size() && d.ok(); ++i) check_content_block(d, (*prompt)[i], i, caps);
    out.prompt = *prompt;
  }
  decode_harnessd_meta(d, out.harnessd);
  if (!d.ok()) return d.error();
  return out;
}

Expected<SessionRef, RpcError> decode_session_ref(const std::string& method, const json& params) {
  Decoder d(method, params);
  SessionRef out;
  if (auto id = d.required_string("sessionId")) out.sessionId = *id;
  if (!d.ok()) return d.error();
  return out;
}

Expected<CancelRequest, RpcError> decode_cancel_request(const json& params) {
  Decoder d("$/cancel_request", params);
  CancelRequest out;
  if (const json* id = d.required_value("requestId")) {
    if (!id->is_string() && !id->is_number_integer()) {
      d.fail("requestId", "must be a string or an integer");
    } else {
      out.requestId = *id;
    }
  }
  if (!d.ok()) return d.error();
  return out;
}

Expected<LoadSessionRequest, RpcError> decode_load_session(const std::string& method, const json& params) {
  Decoder d(method, params);
  LoadSessionRequest out;
  if (auto id = d.required_string("sessionId")) out.sessionId = *id;
  if (auto cwd = d.required_string("cwd")) {
    out.cwd = *cwd;
    check_cwd(d, out.cwd);
  }
  // session/load requires mcpServers; session/resume makes it optional.
  const json* servers = method == "session/load" ? d.required_array("mcpServers") : d.optional_array("mcpServers");
  if (servers) out.mcpServers = *servers;
  if (!d.ok()) return d.error();
  return out;
}

Expected<std::string, RpcError> decode_run_get(const json& params) { return decode_run_ref("_harnessd/runs/get", params); }

Expected<std::string, RpcError> decode_run_ref(const std::string& method, const json& params) {
  Decoder d(method, params);
  auto id = d.required_string("runId");
  if (!d.ok()) return d.error();
  return *id;
}

Expected<WatchRequest, RpcError> decode_watch(const json& params) {
  Decoder d("_harnessd/sessions/watch", params);
  WatchRequest out;
  out.sessionId = d.optional_string("sessionId");
  out.name = d.optional_string("name");
  auto from = d.optional_int("fromSeq", 1, std::numeric_limits<std::int64_t>::max());
  if (d.ok() && out.sessionId.has_value() == out.name.has_value()) d.fail("sessionId", "or name is required (one of them)");
  if (!d.ok()) return d.error();
  if (from) out.fromSeq = static_cast<std::uint64_t>(*from);
  return out;
}

Expected<json, RpcError> decode_unwatch(const json& params) {
  Decoder d("_harnessd/sessions/unwatch", params);
  const json* id = d.required_value("watchId");
  if (d.ok() && !id->is_string() && !id->is_number_integer()) d.fail("watchId", "must be a string or an integer");
  if (!d.ok()) return d.error();
  return *id;
}

Expected<WaitRequest, RpcError> decode_wait(const json& params) {
  Decoder d("_harnessd/runs/wait", params);
  WaitRequest out;
  auto id = d.required_string("runId");
  // Up to a day at a time; a client waits again for longer.
  out.timeoutMs = d.optional_int("timeoutMs", 0, 86400000);
  if (!d.ok()) return d.error();
  out.runId = *id;
  return out;
}

Expected<SetConfigOptionRequest, RpcError> decode_set_config_option(const json& params) {
  Decoder d("session/set_config_option", params);
  SetConfigOptionRequest out;
  auto id = d.required_string("sessionId");
  auto config = d.required_string("configId");
  if (d.ok()) {
    if (!params.contains("value")) {
      d.fail("value", "is required");
    } else if (!params["value"].is_string() && !params["value"].is_boolean()) {
      d.fail("value", "must be a string (a value id) or a boolean, not " + std::string(type_name(params["value"])));
    }
  }
  if (!d.ok()) return d.error();
  out.sessionId = *id;
  out.configId = *config;
  out.value = params["value"];
  return out;
}

Expected<SetModeRequest, RpcError> decode_set_mode(const json& params) {
  Decoder d("session/set_mode", params);
  auto id = d.required_string("sessionId");
  auto mode = d.required_string("modeId");
  if (!d.ok()) return d.error();
  return SetModeRequest{*id, *mode};
}

Expected<SetSummaryRequest, RpcError> decode_set_summary(const json& params) {
  Decoder d("_harnessd/sessions/set_summary", params);
  SetSummaryRequest out;
  auto id = d.required_string("sessionId");
  // null clears the summary, like an empty string.
  if (params.is_object() && params.contains("summary") && params["summary"].is_null()) {
    out.summary.clear();
  } else if (auto summary = d.required_string("summary")) {
    out.summary = *summary;
  }
  if (!d.ok()) return d.error();
  out.sessionId = *id;
  return out;
}

Expected<ListRunsRequest, RpcError> decode_list_runs(const json& params) {
  Decoder d("_harnessd/runs/list", params);
  ListRunsRequest out;
  out.sessionId = d.optional_string("sessionId");
  out.name = d.optional_string("name");
  out.since = d.optional_string("since");
  out.state = d.optional_string("state");
  if (auto limit = d.optional_int("limit", 1, 100000)) out.limit = *limit;
  if (!d.ok()) return d.error();
  return out;
}

Expected<ListSessionsRequest, RpcError> decode_list_sessions(const json& params) {
  Decoder d("session/list", params);
  ListSessionsRequest out;
  out.cwd = d.optional_string("cwd");
  out.cursor = d.optional_string("cursor");
  if (out.cwd) check_cwd(d, *out.cwd);
  if (!d.ok()) return d.error();
  return out;
}

}  // namespace harnessd::schema
