// Built-in harness profiles, their TOML form, and the adapter environment.
#include "harnesses/profile.h"

#include <algorithm>
#include <set>
#include <string_view>

#include "harnesses/bridges.h"

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

  // Bridges: harnessd's own adapters around headless CLIs.
  HarnessProfile claude = make("claude-code", {"claude"},
                               {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL",
                                "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
                                "CLAUDE_CODE_MAX_RETRIES", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "IS_SANDBOX"},
                               "Claude Code headless (claude -p, stream-json), one process per session",
                               "npm install -g @anthropic-ai/claude-code");
  claude.kind = "claude-code";
  out["claude-code"] = claude;
  HarnessProfile opencode_run = make("opencode-run", {"opencode"},
                                     {"OPENCODE_CONFIG", "OPENCODE_CONFIG_CONTENT", "OPENCODE_CONFIG_DIR",
                                      "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY"},
                                     "OpenCode single-shot runs (opencode run --format json), continued with -s",
                                     "npm install -g opencode-ai");
  opencode_run.kind = "opencode-run";
  out["opencode-run"] = opencode_run;
  HarnessProfile openspace = make("openspace", {"openspace-worker"},
                                  {"OPENSPACE_MODEL", "OPENSPACE_LLM_API_KEY", "OPENSPACE_LLM_API_BASE",
                                   "OPENSPACE_LLM_EXTRA_HEADERS", "OPENSPACE_LLM_CONFIG", "OPENSPACE_MAX_ITERATIONS",
                                   "OPENSPACE_ENABLE_RECORDING", "OPENSPACE_BACKEND_SCOPE", "OPENSPACE_HOST_SKILL_DIRS",
                                   "OPENSPACE_API_KEY", "PYTHONPATH", "VIRTUAL_ENV"},
                                  "OpenSpace tasks through the openspace-worker shim (one task per prompt)",
                                  "pip install openspace, and put harnesses/openspace/openspace-worker on PATH");
  openspace.kind = "openspace";
  // Every OpenSpace task starts from nothing: harnessd carries the memory,
  // packed the way OpenSpace's own benchmark packs its tasks.
  openspace.mode = "oneshot";
  openspace.template_name = "openspace";
  out["openspace"] = openspace;
  HarnessProfile exec = make("exec", {"cat"}, {}, "Any command as a single-shot harness (set command = [...])",
                             "set [harness.exec] command to the program to run");
  exec.kind = "exec";
  out["exec"] = exec;
  return out;
}

std::string bridge_of(const std::string& kind) {
  const BridgeEntry* entry = bridge_for_kind(kind);
  return entry ? std::string(entry->bridge) : std::string();
}

nlohmann::json known_config_options(const HarnessProfile& profile) {
  const BridgeEntry* entry = bridge_for_kind(profile.kind);
  if (!entry) return nullptr;  // an ACP adapter says so itself
  return entry->known_options(profile.bridge_options);
}

std::vector<std::string> adapter_argv(const HarnessProfile& profile, const std::string& harnessd_exe) {
  std::string bridge = bridge_of(profile.kind);
  if (bridge.empty()) return profile.command;
  std::vector<std::string> argv = {harnessd_exe, "adapter", bridge};
  argv.insert(argv.end(), profile.bridge_options.begin(), profile.bridge_options.end());
  argv.push_back("--");
  argv.insert(argv.end(), profile.command.begin(), profile.command.end());
  return argv;
}

Expected<HarnessProfile> profile_from_toml(const std::string& name, const toml::table& table,
                                           const HarnessProfile* base) {
  HarnessProfile p = base ? *base : HarnessProfile{};
  p.name = name;
  const std::string where = "[harness." + name + "]";
  if (const toml::node* kind = table.get("kind")) {
    const auto* s = kind->as_string();
    if (!s) return Error{where + ".kind must be a string"};
    p.kind = s->get();
  }
  if (p.kind != "acp" && bridge_of(p.kind).empty()) {
    return Error{where + ".kind '" + p.kind +
                 "' is not supported (supported: acp, claude-code, opencode-run, openspace, exec)"};
  }
  // A new profile of a bridge kind starts from the built-in profile of that
  // kind: its program (claude, opencode, openspace-worker), the variables
  // it forwards, its mode and template; the table changes what it names.
  // (exec has no usual program: its command is required.)
  if (!base && p.kind != "acp" && p.kind != "exec") {
    auto builtin = builtin_profiles();
    if (auto it = builtin.find(p.kind); it != builtin.end()) {
      p = it->second;
      p.name = name;
    }
  }
  // Keys of the bridges, passed on as `--key value` options.
  static const std::map<std::string, std::set<std::string>> kBridgeKeys = {
      {"acp", {}},
      {"claude-code", {"model", "permission_mode"}},
      {"opencode-run", {"model", "agent"}},
      {"openspace", {"max_iterations", "skill_dir"}},
      {"exec", {"input", "output", "field"}}};
  static const std::set<std::string> kCommon = {"kind", "command", "env", "env_passthrough", "description",
                                                "mode", "template", "recording", "auth_env", "warm", "limits",
                                                // The permission policy (permission_policy.h).
                                                "permissions", "rule", "fallback", "ask_timeout", "ask_fallback",
                                                "remember",
                                                "sandbox", "network", "writable",
                                                "max_concurrent", "max_runs_per_hour", "max_tokens_per_day"};
  const auto& bridge_keys = kBridgeKeys.at(p.kind);
  std::vector<std::string> options;
  for (const auto& [key, value] : table) {
    std::string k(key.str());
    if (kCommon.count(k) || is_remote_key(k)) continue;
    if (!bridge_keys.count(k)) return Error{where + ": unknown key '" + k + "' for kind '" + p.kind + "'"};
    std::string text;
    if (const auto* str = value.as_string()) {
      text = str->get();
    } else if (const auto* num = value.as_integer()) {
      text = std::to_string(num->get());
    } else {
      return Error{where + "." + k + " must be a string or an integer"};
    }
    std::string flag = "--" + k;
    for (auto& c : flag) c = c == '_' ? '-' : c;
    options.push_back(flag);
    options.push_back(text);
  }
  if (!options.empty()) p.bridge_options = std::move(options);
  if (auto policy = read_policy(table, where, p.policy); !policy) return policy.error();
  if (auto remote = read_remote(table, where, name, p.remote, p.launcher); !remote) return remote.error();
  if (p.remote.enabled()) {
    // The worker is an ACP agent whatever it runs; its own profile says
    // what (kind, command, sandbox, limits).
    if (table.get("kind") && p.kind != "acp") {
      return Error{where + ": a remote profile speaks ACP to its worker; set kind in the worker's profile"};
    }
    for (const char* key : {"command", "sandbox", "network", "writable", "limits"}) {
      if (table.get(key)) {
        return Error{where + "." + key + " belongs in the worker's profile (remote_harness) on the worker host"};
      }
    }
    p.kind = "acp";
    p.bridge_options.clear();
    p.command = p.remote.command;
    p.sandbox = {};
    p.limits = {};
  }
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
      if (s->get().find('\0') != std::string::npos || key.str().find('\0') != std::string_view::npos ||
          key.str().find('=') != std::string_view::npos) {
        return Error{where + ".env." + std::string(key.str()) + ": names and values must not contain NUL, names no '='"};
      }
      p.env[std::string(key.str())] = s->get();
    }
  }
  if (const toml::node* pass = table.get("env_passthrough")) {
    auto names = string_array(*pass, where + ".env_passthrough");
    if (!names) return names.error();
    p.env_passthrough = std::move(*names);
  }
  if (const toml::node* mode = table.get("mode")) {
    const auto* s = mode->as_string();
    if (!s || (s->get() != "persistent" && s->get() != "oneshot")) {
      return Error{where + ".mode must be \"persistent\" or \"oneshot\""};
    }
    p.mode = s->get();
  }
  if (const toml::node* tmpl = table.get("template")) {
    const auto* s = tmpl->as_string();
    if (!s) return Error{where + ".template must be a string (a template name)"};
    p.template_name = s->get();
  }
  if (const toml::node* recording = table.get("recording")) {
    const auto* s = recording->as_string();
    if (!s || (s->get() != "full" && s->get() != "metadata")) {
      return Error{where + ".recording must be \"full\" or \"metadata\""};
    }
    p.record_metadata_only = s->get() == "metadata";
  }
  if (const toml::node* limits = table.get("limits")) {
    const toml::table* t = limits->as_table();
    const std::string example = " (e.g. limits = { memory = \"2G\", pids = 512, cpu = 1.5 })";
    if (!t) return Error{where + ".limits must be a table" + example};
    for (const auto& [key, value] : *t) {
      const std::string k(key.str());
      if (k == "memory") {
        std::optional<std::uint64_t> bytes;
        if (const auto* s = value.as_string()) bytes = adapters::parse_bytes(s->get());
        if (const auto* i = value.as_integer(); i && i->get() > 0) bytes = static_cast<std::uint64_t>(i->get());
        if (!bytes || *bytes < (4u << 20)) return Error{where + ".limits.memory must be a size of 4M or more" + example};
        p.limits.memory = bytes;
      } else if (k == "pids") {
        const auto* i = value.as_integer();
        if (!i || i->get() < 4) return Error{where + ".limits.pids must be a whole number, 4 or more" + example};
        p.limits.pids = static_cast<std::uint64_t>(i->get());
      } else if (k == "cpu") {
        std::optional<double> cpus;
        if (const auto* f = value.as_floating_point()) cpus = f->get();
        if (const auto* i = value.as_integer()) cpus = static_cast<double>(i->get());
        if (!cpus || !(*cpus >= 0.01) || *cpus > 1024) return Error{where + ".limits.cpu must be a number of CPUs, 0.01 or more" + example};
        p.limits.cpu = cpus;
      } else {
        return Error{where + ".limits: unknown key '" + k + "' (memory, pids, cpu)"};
      }
    }
  }
  if (const toml::node* warm = table.get("warm")) {
    const auto* n = warm->as_integer();
    if (!n || n->get() < 0 || n->get() > 64) return Error{where + ".warm must be a whole number from 0 to 64"};
    p.warm = static_cast<std::size_t>(n->get());
  }
  if (const toml::node* sandbox = table.get("sandbox")) {
    const auto* s = sandbox->as_string();
    if (!s || !adapters::is_sandbox_mode(s->get())) {
      return Error{where + ".sandbox must be \"none\", \"read-only\" or \"workspace-write\""};
    }
    p.sandbox.mode = s->get();
  }
  if (const toml::node* network = table.get("network")) {
    const auto* b = network->as_boolean();
    if (!b) return Error{where + ".network must be true or false"};
    p.sandbox.network = b->get();
  }
  if (const toml::node* writable = table.get("writable")) {
    auto paths = string_array(*writable, where + ".writable");
    if (!paths) return paths.error();
    for (const auto& path : *paths) {
      if (path.empty() || (path.front() != '/' && path != "~" && path.rfind("~/", 0) != 0) ||
          path.find('\0') != std::string::npos) {
        return Error{where + ".writable: '" + path + "' must be an absolute path or start with ~/"};
      }
    }
    p.sandbox.writable = std::move(*paths);
  }
  // Only a sandbox can take the network away: never a profile that only
  // looks cut off.
  if (!p.sandbox.network && !p.sandbox.enabled()) {
    return Error{where + ".network = false needs sandbox = \"read-only\" or \"workspace-write\" (bubblewrap)"};
  }
  // Concurrency and budgets: whole numbers, 0 for no limit.
  for (const char* key : {"max_concurrent", "max_runs_per_hour", "max_tokens_per_day"}) {
    const toml::node* node = table.get(key);
    if (!node) continue;
    const auto* n = node->as_integer();
    if (!n || n->get() < 0) return Error{where + "." + key + " must be a whole number, 0 for no limit"};
    const std::int64_t v = n->get();
    if (std::string_view(key) == "max_concurrent") p.max_concurrent = static_cast<std::size_t>(v);
    if (std::string_view(key) == "max_runs_per_hour") p.max_runs_per_hour = static_cast<std::size_t>(v);
    if (std::string_view(key) == "max_tokens_per_day") p.max_tokens_per_day = v;
  }
  if (const toml::node* auth = table.get("auth_env")) {
    const auto* s = auth->as_string();
    if (!s || s->get().empty() || s->get().find_first_of("=\0") != std::string::npos) {
      return Error{where + ".auth_env must name an environment variable"};
    }
    p.auth_env = s->get();
  }
  if (p.warm > 0 && (p.remote.enabled() || !p.launcher.empty())) {
    // A warm adapter starts before its session exists: before a host is
    // chosen, before the launcher's placeholders are known.
    return Error{where + ": warm adapters cannot be remote or launched; set warm = 0"};
  }
  if (p.warm > 0 && p.sandbox.enabled()) {
    // A warm adapter starts before its session's cwd is known, and the
    // sandbox makes that cwd writable.
    return Error{where + ": warm adapters cannot be sandboxed (the sandbox binds the session's cwd); set warm = 0"};
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

}  // namespace harnessd::harnesses
