// Shape checks for relayed updates, kind by kind, after the ACP v1 schema
// (session/update, ContentBlock, ToolCallContent). Fields the schema marks
// optional are checked only when present; unknown fields pass, as they do
// for the SDKs' own validators.
#include "schema/session_update.h"

#include <array>

#include "schema/decoder.h"

namespace harnessd::schema {

using nlohmann::json;

namespace {

using Problem = std::optional<std::string>;

constexpr std::array<std::string_view, 11> kKinds = {
    "user_message_chunk",        "agent_message_chunk", "agent_thought_chunk",  "tool_call",
    "tool_call_update",          "plan",                "available_commands_update",
    "current_mode_update",       "config_option_update", "session_info_update", "usage_update"};

constexpr std::array<std::string_view, 10> kToolKinds = {"read", "edit",  "delete",      "move",  "search",
                                                         "execute", "think", "fetch", "switch_mode", "other"};
constexpr std::array<std::string_view, 4> kToolStatuses = {"pending", "in_progress", "completed", "failed"};

template <std::size_t N>
bool one_of(const std::array<std::string_view, N>& set, const json& v) {
  if (!v.is_string()) return false;
  const auto& s = v.get_ref<const std::string&>();
  for (auto x : set) {
    if (x == s) return true;
  }
  return false;
}

std::string type_of(const json& v) { return std::string(type_name(v)); }

// A required field of type `want` ("string", "object", ...).
Problem need(const json& obj, const char* key, json::value_t want, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return where + key + " is required";
  bool ok = want == json::value_t::number_unsigned ? it->is_number_unsigned() || (it->is_number_integer() && *it >= 0)
                                                   : it->type() == want;
  if (!ok && want == json::value_t::number_unsigned) return where + key + " must be a non-negative integer";
  if (!ok) return where + key + " must be a " + std::string(json(want).type_name()) + ", not " + type_of(*it);
  return std::nullopt;
}

// An optional field: absent (or null where `null_ok`) passes.
Problem may(const json& obj, const char* key, json::value_t want, const std::string& where, bool null_ok = false) {
  auto it = obj.find(key);
  if (it == obj.end() || (null_ok && it->is_null())) return std::nullopt;
  return need(obj, key, want, where);
}

Problem check_block(const json& block, const std::string& where) {
  if (!block.is_object()) return where + " must be an object, not " + type_of(block);
  const std::string at = where + ".";
  if (auto p = need(block, "type", json::value_t::string, at)) return p;
  const std::string& type = block["type"].get_ref<const std::string&>();
  if (auto p = may(block, "annotations", json::value_t::object, at)) return p;
  if (type == "text") return need(block, "text", json::value_t::string, at);
  if (type == "image" || type == "audio") {
    if (auto p = need(block, "data", json::value_t::string, at)) return p;
    if (auto p = need(block, "mimeType", json::value_t::string, at)) return p;
    return may(block, "uri", json::value_t::string, at, true);
  }
  if (type == "resource_link") {
    if (auto p = need(block, "uri", json::value_t::string, at)) return p;
    return need(block, "name", json::value_t::string, at);
  }
  if (type == "resource") {
    if (auto p = need(block, "resource", json::value_t::object, at)) return p;
    const json& r = block["resource"];
    if (auto p = need(r, "uri", json::value_t::string, at + "resource.")) return p;
    if (!r.contains("text") && !r.contains("blob")) return at + "resource needs text or blob";
    if (auto p = may(r, "text", json::value_t::string, at + "resource.")) return p;
    return may(r, "blob", json::value_t::string, at + "resource.");
  }
  return at + "type '" + type + "' is not a content type";
}

Problem check_tool_content(const json& items, const std::string& where) {
  if (!items.is_array()) return where + " must be an array, not " + type_of(items);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const json& c = items[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!c.is_object()) return at + " must be an object, not " + type_of(c);
    if (auto p = need(c, "type", json::value_t::string, at + ".")) return p;
    const std::string& type = c["type"].get_ref<const std::string&>();
    Problem p;
    if (type == "content") {
      p = c.contains("content") ? check_block(c["content"], at + ".content") : Problem(at + ".content is required");
    } else if (type == "diff") {
      p = need(c, "path", json::value_t::string, at + ".");
      if (!p) p = need(c, "newText", json::value_t::string, at + ".");
      if (!p) p = may(c, "oldText", json::value_t::string, at + ".", true);
    } else if (type == "terminal") {
      p = need(c, "terminalId", json::value_t::string, at + ".");
    } else {
      p = at + ".type '" + type + "' is not a tool call content type";
    }
    if (p) return p;
  }
  return std::nullopt;
}

// The fields tool_call and tool_call_update share; `full` is tool_call,
// which also needs a title.
Problem check_tool_call(const json& u, bool full) {
  if (auto p = need(u, "toolCallId", json::value_t::string, "")) return p;
  if (full) {
    if (auto p = need(u, "title", json::value_t::string, "")) return p;
  } else if (auto p = may(u, "title", json::value_t::string, "", true)) {
    return p;
  }
  if (auto it = u.find("kind"); it != u.end() && !it->is_null() && !one_of(kToolKinds, *it)) {
    return "kind " + it->dump() + " is not a tool kind";
  }
  if (auto it = u.find("status"); it != u.end() && !it->is_null() && !one_of(kToolStatuses, *it)) {
    return "status " + it->dump() + " is not a tool call status";
  }
  if (auto it = u.find("content"); it != u.end() && !it->is_null()) {
    if (auto p = check_tool_content(*it, "content")) return p;
  }
  if (auto it = u.find("locations"); it != u.end() && !it->is_null()) {
    if (!it->is_array()) return "locations must be an array, not " + type_of(*it);
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& l = (*it)[i];
      const std::string at = "locations[" + std::to_string(i) + "]";
      if (!l.is_object()) return at + " must be an object";
      if (auto p = need(l, "path", json::value_t::string, at + ".")) return p;
      if (auto p = may(l, "line", json::value_t::number_unsigned, at + ".", true)) return p;
    }
  }
  return std::nullopt;
}

Problem check_array_of_objects(const json& u, const char* key, std::initializer_list<const char*> strings) {
  if (auto p = need(u, key, json::value_t::array, "")) return p;
  const json& items = u[key];
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string at = std::string(key) + "[" + std::to_string(i) + "]";
    if (!items[i].is_object()) return at + " must be an object, not " + type_of(items[i]);
    for (const char* s : strings) {
      if (auto p = need(items[i], s, json::value_t::string, at + ".")) return p;
    }
  }
  return std::nullopt;
}

}  // namespace

bool is_known_update_kind(std::string_view kind) {
  for (auto k : kKinds) {
    if (k == kind) return true;
  }
  return false;
}

std::optional<std::string> check_content(const json& block) { return check_block(block, "content"); }

std::optional<std::string> check_session_update(const json& u) {
  if (!u.is_object()) return "update must be an object, not " + type_of(u);
  if (auto p = need(u, "sessionUpdate", json::value_t::string, "")) return p;
  const std::string& kind = u["sessionUpdate"].get_ref<const std::string&>();
  if (auto p = may(u, "_meta", json::value_t::object, "", true)) return p;
  if (kind == "user_message_chunk" || kind == "agent_message_chunk" || kind == "agent_thought_chunk") {
    if (!u.contains("content")) return "content is required";
    if (auto p = may(u, "messageId", json::value_t::string, "", true)) return p;
    return check_block(u["content"], "content");
  }
  if (kind == "tool_call") return check_tool_call(u, true);
  if (kind == "tool_call_update") return check_tool_call(u, false);
  if (kind == "plan") {
    if (auto p = need(u, "entries", json::value_t::array, "")) return p;
    static constexpr std::array<std::string_view, 3> kPriorities = {"high", "medium", "low"};
    static constexpr std::array<std::string_view, 3> kStatuses = {"pending", "in_progress", "completed"};
    const json& entries = u["entries"];
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const json& e = entries[i];
      const std::string at = "entries[" + std::to_string(i) + "]";
      if (!e.is_object()) return at + " must be an object, not " + type_of(e);
      if (auto p = need(e, "content", json::value_t::string, at + ".")) return p;
      if (!one_of(kPriorities, e.value("priority", json()))) return at + ".priority must be high, medium or low";
      if (!one_of(kStatuses, e.value("status", json()))) return at + ".status must be pending, in_progress or completed";
    }
    return std::nullopt;
  }
  if (kind == "available_commands_update") {
    if (auto p = check_array_of_objects(u, "availableCommands", {"name", "description"})) return p;
    for (const json& c : u["availableCommands"]) {
      if (auto it = c.find("input"); it != c.end() && !it->is_null()) {
        if (!it->is_object()) return "availableCommands[].input must be an object";
        if (auto p = need(*it, "hint", json::value_t::string, "availableCommands[].input.")) return p;
      }
    }
    return std::nullopt;
  }
  if (kind == "current_mode_update") return need(u, "currentModeId", json::value_t::string, "");
  if (kind == "config_option_update") return check_array_of_objects(u, "configOptions", {"id", "name"});
  if (kind == "session_info_update") {
    if (auto p = may(u, "title", json::value_t::string, "", true)) return p;
    return may(u, "updatedAt", json::value_t::string, "", true);
  }
  if (kind == "usage_update") {
    if (auto p = need(u, "used", json::value_t::number_unsigned, "")) return p;
    if (auto p = need(u, "size", json::value_t::number_unsigned, "")) return p;
    if (auto it = u.find("cost"); it != u.end() && !it->is_null()) {
      if (!it->is_object()) return "cost must be an object, not " + type_of(*it);
      if (!it->contains("amount") || !(*it)["amount"].is_number()) return "cost.amount must be a number";
      if (auto p = need(*it, "currency", json::value_t::string, "cost.")) return p;
    }
    return std::nullopt;
  }
  return "sessionUpdate '" + kind + "' is not an ACP v1 update";
}

}  // namespace harnessd::schema
