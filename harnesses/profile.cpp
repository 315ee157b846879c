// Built-in harness profiles, their TOML form, and the adapter environment.
#include "harnesses/profile.h"

#include <algorithm>
#include <set>

extern char** environ;

namespace harnessd::harnesses {

namespace {

HarnessProfile make(std::string name, std::vector<std::string> command, std::vector<std::string> passthrough,
                    std::string description, std::string hint) {
  HarnessProfile p;
  p.name = std::move(name);
  p.command = std::move(command);
  p.env_passthrough = std::move(passthrough);
  p.description = std::move(description);
  p.install_hint = std::move(hint);
  return p;
}

Expected<std::vector<std::string>> string_array(const toml::node& node, const std::string& where) {
  const toml::array* arr = node.as_array();
  if (!arr) return Error{where + " must be an array of strings"};
  std::vector<std::string> out;
  for (const auto& item : *arr) {
    const auto* s = item.as_string();
    if (!s) return Error{where + " must contain only strings"};
    out.push_back(s->get());
  }
  return out;
}

}  // namespace

std::map<std::string, HarnessProfile> builtin_profiles() {
  std::map<std::string, HarnessProfile> out;
  // Provider credentials are forwarded only to the harness that uses them.
  out["claude"] = make("claude", {"claude-agent-acp"},
                       {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL",
                        "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
                        "CLAUDE_CODE_MAX_RETRIES", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"},
                       "Claude Code through the claude-agent-acp adapter",
                       "npm install -g @agentclientprotocol/claude-agent-acp");
  out["opencode"] = make("opencode", {"opencode", "acp"},
                         {"OPENCODE_CONFIG", "OPENCODE_CONFIG_DIR", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                          "OPENROUTER_API_KEY", "GEMINI_API_KEY"},
                         "OpenCode's native ACP mode", "npm install -g opencode-ai");
  out["gemini"] = make("gemini", {"gemini", "--acp"},
                       {"GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"},
                       "Gemini CLI in ACP mode", "npm install -g @google/gemini-cli");
  out["codex"] = make("codex", {"codex-acp"}, {"OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"},
                      "Codex through the codex-acp adapter", "npm install -g @agentclientprotocol/codex-acp");
  return out;
}

Expected<HarnessProfile> profile_from_toml(const std::string& name, const toml::table& table,
                                           const HarnessProfile* base) {
  HarnessProfile p = base ? *base : HarnessProfile{};
  p.name = name;
  const std::string where = "[harness." + name + "]";
  static const std::set<std::string> kKnown = {"kind", "command", "env", "env_passthrough", "description"};
  for (const auto& [key, value] : table) {
    if (!kKnown.count(std::string(key.str()))) {
      return Error{where + ": unknown key '" + std::string(key.str()) + "'"};
    }
  }
  if (const toml::node* kind = table.get("kind")) {
    const auto* s = kind->as_string();
    if (!s) return Error{where + ".kind must be a string"};
    p.kind = s->get();
  }
  if (p.kind != "acp") return Error{where + ".kind '" + p.kind + "' is not supported (supported: acp)"};
  if (const toml::node* command = table.get("command")) {
    auto argv = string_array(*command, where + ".command");
    if (!argv) return argv.error();
    p.command = std::move(*argv);
  }
  if (p.command.empty() || p.command[0].empty()) {
    return Error{where + ".command must be a non-empty array (argv, no shell)"};
  }
  if (const toml::node* env = table.get("env")) {
    const toml::table* t = env->as_table();
    if (!t) return Error{where + ".env must be a table of strings"};
    for (const auto& [key, value] : *t) {
      const auto* s = value.as_string();
      if (!s) return Error{where + ".env." + std::string(key.str()) + " must be a string"};
      p.env[std::string(key.str())] = s->get();
    }
  }
  if (const toml::node* pass = table.get("env_passthrough")) {
    auto names = string_array(*pass, where + ".env_passthrough");
    if (!names) return names.error();
    p.env_passthrough = std::move(*names);
  }
  if (const toml::node* desc = table.get("description")) {
    if (const auto* s = desc->as_string()) p.description = s->get();
  }
  return p;
}

const std::vector<std::string>& safe_environment_names() {
  static const std::vector<std::string> kNames = {
      "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM",
      "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"};
  return kNames;
}

std::vector<std::string> adapter_environment(const HarnessProfile& profile, const std::vector<std::string>& parent) {
  std::map<std::string, std::string> env;
  auto copy = [&](const std::string& name) {
    for (const auto& entry : parent) {
      if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 && entry[name.size()] == '=') {
        env[name] = entry.substr(name.size() + 1);
      }
    }
  };
  for (const auto& name : safe_environment_names()) copy(name);
  for (const auto& name : profile.env_passthrough) copy(name);
  for (const auto& [name, value] : profile.env) env[name] = value;
  if (!env.count("PATH")) env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [name, value] : env) out.push_back(name + "=" + value);
  return out;
}

std::vector<std::string> current_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

}  // namespace harnessd::harnesses
