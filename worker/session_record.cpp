#include "worker/session_record.h"

#include "acp/files.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

json or_null(const std::optional<std::string>& s) { return s ? json(*s) : json(); }

std::optional<std::string> optional_string(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

json SessionRecord::to_json() const {
  json j = {{"sessionId", session_id},
          {"name", or_null(name)},
          {"hostSession", or_null(host_session)},
          {"harness", harness},
          {"cwd", cwd},
          {"mode", mode},
          {"template", or_null(template_name)},
          {"summary", or_null(summary)},
          {"history", history},
          {"mcpServers", mcp_servers},
          {"adapterSessionId", or_null(adapter_session_id)},
          {"runTimeoutMs", run_timeout_ms},
          {"lane", lane},
          {"configOptions", config_options},
          {"adapterOptions", adapter_options},
          {"adapter", adapter},
          {"usage", usage},
          {"closed", closed},
          {"daemon", daemon},
          {"createdAt", created_at},
          {"updatedAt", updated_at}};
  if (permissions) j["permissions"] = *permissions;
  if (!sandbox.is_null()) j["sandbox"] = sandbox;
  if (worker_host) j["host"] = *worker_host;
  return j;
}

Expected<SessionRecord, std::string> SessionRecord::from_json(const json& j) {
  if (auto problem = session_record_problem(j)) return *problem;
  SessionRecord r;
  r.session_id = j.value("sessionId", "");
  r.name = optional_string(j, "name");
  r.host_session = optional_string(j, "hostSession");
  r.harness = j.value("harness", "");
  r.cwd = j.value("cwd", "");
  r.mode = j.value("mode", "persistent") == "oneshot" ? "oneshot" : "persistent";
  r.template_name = optional_string(j, "template");
  r.summary = optional_string(j, "summary");
  r.permissions = optional_string(j, "permissions");
  r.worker_host = optional_string(j, "host");
  if (auto it = j.find("sandbox"); it != j.end() && it->is_object()) r.sandbox = *it;
  if (auto it = j.find("history"); it != j.end() && it->is_array()) r.history = *it;
  if (auto it = j.find("mcpServers"); it != j.end() && it->is_array()) r.mcp_servers = *it;
  r.adapter_session_id = optional_string(j, "adapterSessionId");
  r.run_timeout_ms = j.value("runTimeoutMs", std::int64_t{0});
  r.lane = j.value("lane", "interactive");
  if (auto it = j.find("configOptions"); it != j.end() && it->is_object()) r.config_options = *it;
  if (auto it = j.find("adapterOptions"); it != j.end() && it->is_array()) r.adapter_options = *it;
  if (auto it = j.find("adapter"); it != j.end() && it->is_object()) r.adapter = *it;
  if (auto it = j.find("usage"); it != j.end() && it->is_object()) r.usage = *it;
  r.closed = j.value("closed", false);
  r.daemon = j.value("daemon", "");
  r.created_at = j.value("createdAt", "");
  r.updated_at = j.value("updatedAt", "");
  return r;
}

std::optional<std::string> session_record_problem(const json& record) {
  if (!record.is_object()) return "not an object";
  auto id = record.find("sessionId");
  if (id != record.end() && (!id->is_string() || !acp::is_safe_id(id->get_ref<const std::string&>()))) {
    return "sessionId is not a session id";
  }
  enum Type { kString, kStringOrNull, kBool, kInteger, kArray, kObject };
  static const std::pair<const char*, Type> kFields[] = {
      {"name", kStringOrNull},    {"harness", kString},        {"cwd", kString},
      {"mode", kString},          {"template", kStringOrNull}, {"summary", kStringOrNull},
      {"history", kArray},        {"mcpServers", kArray},      {"adapterSessionId", kStringOrNull},
      {"runTimeoutMs", kInteger}, {"lane", kString},           {"configOptions", kObject},
      {"adapterOptions", kArray}, {"closed", kBool},           {"createdAt", kString},
      {"updatedAt", kString},     {"daemon", kString},         {"hostSession", kStringOrNull},
      {"adapter", kObject},       {"permissions", kStringOrNull},
      {"usage", kObject},         {"host", kStringOrNull}};
  static const char* const kTypeNames[] = {"a string", "a string or null", "a boolean",
                                           "an integer", "an array or null", "an object or null"};
  for (const auto& [field, type] : kFields) {
    auto it = record.find(field);
    if (it == record.end()) continue;
    bool ok = false;
    switch (type) {
      case kString: ok = it->is_string(); break;
      case kStringOrNull: ok = it->is_string() || it->is_null(); break;
      case kBool: ok = it->is_boolean(); break;
      case kInteger: ok = it->is_number_integer() && (*it).get<long long>() >= 0; break;
      // Null until known (an adapter's options before it started).
      case kArray: ok = it->is_array() || it->is_null(); break;
      case kObject: ok = it->is_object() || it->is_null(); break;
    }
    if (!ok) return std::string(field) + " must be " + kTypeNames[type];
  }
  auto sandbox = record.find("sandbox");
  if (sandbox != record.end() && !sandbox->is_object() && !sandbox->is_null()) {
    return "sandbox must be an object or null";
  }
  return std::nullopt;
}

}  // namespace harnessd::worker
