#include "harnesses/permission_policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

namespace harnessd::harnesses {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::set<std::string> kModes = {"ask-host", "approve-all", "approve-reads", "deny-all", "rules"};
// What approve-reads lets through without asking: calls that change nothing.
const std::set<std::string> kReadKinds = {"read", "search", "fetch", "think"};

std::optional<PolicyAction> parse_action(const std::string& s) {
  if (s == "allow") return PolicyAction::kAllow;
  if (s == "deny") return PolicyAction::kDeny;
  if (s == "ask") return PolicyAction::kAsk;
  return std::nullopt;
}

// A string or an array of strings, as a list.
Expected<std::vector<std::string>> strings(const toml::node& node, const std::string& where) {
  if (const auto* s = node.as_string()) return std::vector<std::string>{s->get()};
  const toml::array* arr = node.as_array();
  if (!arr) return Error{where + " must be a string or an array of strings"};
  std::vector<std::string> out;
  for (const auto& item : *arr) {
    const auto* s = item.as_string();
    if (!s || s->get().empty()) return Error{where + " must contain only non-empty strings"};
    out.push_back(s->get());
  }
  if (out.empty()) return Error{where + " must not be empty (leave it out to match anything)"};
  return out;
}

std::string joined(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  std::string out;
  if (v.is_array()) {
    for (const json& part : v) {
      if (!part.is_string()) continue;
      out += (out.empty() ? "" : " ") + part.get<std::string>();
    }
  }
  return out;
}

fs::path resolved(const std::string& path, const std::string& cwd) {
  fs::path p = fs::path(path).is_absolute() ? fs::path(path) : fs::path(cwd) / path;
  std::error_code ec;
  // Symbolic links of the parts that exist are followed, ".." folded.
  fs::path r = fs::weakly_canonical(p.lexically_normal(), ec);
  return ec ? p.lexically_normal() : r;
}

fs::path resolved_root(const std::string& cwd) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::path(cwd).lexically_normal(), ec);
  return ec ? fs::path(cwd).lexically_normal() : r;
}

bool within(const fs::path& p, const fs::path& root) {
  auto rel = p.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

// One path against one glob: an absolute glob sees the resolved absolute
// path, a relative one the path relative to the cwd (never a path outside).
bool path_matches(const std::string& glob, const std::string& path, const std::string& cwd) {
  const fs::path root = resolved_root(cwd);
  const fs::path p = resolved(path, cwd);
  if (!glob.empty() && glob.front() == '/') return glob_match(glob, p.string());
  if (!within(p, root)) return false;
  return glob_match(glob, p.lexically_relative(root).string());
}

bool matches(const PermissionRule& rule, const ToolCallFacts& facts, const std::string& cwd) {
  if (!rule.kinds.empty() && std::find(rule.kinds.begin(), rule.kinds.end(), facts.kind) == rule.kinds.end()) {
    return false;
  }
  if (!rule.commands.empty()) {
    if (!facts.command) return false;
    bool any = false;
    for (const auto& g : rule.commands) any = any || glob_match(g, *facts.command);
    if (!any) return false;
  }
  const bool allows = rule.action == PolicyAction::kAllow;
  // An allow never covers a path outside the cwd, whatever its globs say.
  if (allows) {
    for (const auto& p : facts.paths) {
      if (!inside(p, cwd)) return false;
    }
  }
  if (!rule.paths.empty()) {
    if (facts.paths.empty()) return false;
    auto covered = [&](const std::string& p) {
      return std::any_of(rule.paths.begin(), rule.paths.end(), [&](const auto& g) { return path_matches(g, p, cwd); });
    };
    // An allow must cover every path of the call; a deny or an ask needs one.
    if (allows ? !std::all_of(facts.paths.begin(), facts.paths.end(), covered)
               : !std::any_of(facts.paths.begin(), facts.paths.end(), covered)) {
      return false;
    }
  }
  return true;
}

}  // namespace

const char* action_name(PolicyAction a) {
  switch (a) {
    case PolicyAction::kAllow: return "allow";
    case PolicyAction::kDeny: return "deny";
    case PolicyAction::kAsk: return "ask";
  }
  return "ask";
}

bool glob_match(const std::string& pattern, const std::string& text) {
  return ::fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

bool inside(const std::string& path, const std::string& cwd) {
  const fs::path root = resolved_root(cwd);
  const fs::path p = resolved(path, cwd);
  return p == root || within(p, root);
}

ToolCallFacts facts_of(const json& tool_call, const json& earlier) {
  json merged = earlier.is_object() ? earlier : json::object();
  if (tool_call.is_object()) {
    for (const auto& [k, v] : tool_call.items()) {
      if (!v.is_null()) merged[k] = v;
    }
  }
  ToolCallFacts f;
  if (merged.contains("kind") && merged["kind"].is_string()) f.kind = merged["kind"].get<std::string>();
  const json raw = merged.contains("rawInput") && merged["rawInput"].is_object() ? merged["rawInput"] : json::object();
  for (const char* key : {"command", "cmd"}) {
    if (!raw.contains(key)) continue;
    std::string c = joined(raw[key]);
    if (!c.empty()) {
      f.command = c;
      break;
    }
  }
  if (!f.command && f.kind == "execute" && merged.contains("title") && merged["title"].is_string()) {
    // Some adapters name the command only in the title, in backquotes.
    std::string t = merged["title"].get<std::string>();
    if (t.size() >= 2 && t.front() == '`' && t.back() == '`') t = t.substr(1, t.size() - 2);
    if (!t.empty()) f.command = t;
  }
  if (merged.contains("locations") && merged["locations"].is_array()) {
    for (const json& l : merged["locations"]) {
      if (l.is_object() && l.contains("path") && l["path"].is_string()) f.paths.push_back(l["path"].get<std::string>());
    }
  }
  for (const char* key : {"path", "file_path", "filePath", "notebook_path"}) {
    if (raw.contains(key) && raw[key].is_string()) f.paths.push_back(raw[key].get<std::string>());
  }
  if (raw.contains("paths") && raw["paths"].is_array()) {
    for (const json& p : raw["paths"]) {
      if (p.is_string()) f.paths.push_back(p.get<std::string>());
    }
  }
  std::sort(f.paths.begin(), f.paths.end());
  f.paths.erase(std::unique(f.paths.begin(), f.paths.end()), f.paths.end());
  return f;
}

PolicyDecision decide(const PermissionPolicy& policy, const ToolCallFacts& facts, const std::string& cwd) {
  if (policy.mode == "approve-all") return {PolicyAction::kAllow, "approve-all"};
  if (policy.mode == "deny-all") return {PolicyAction::kDeny, "deny-all"};
  if (policy.mode == "approve-reads") {
    const bool read = kReadKinds.count(facts.kind) > 0 &&
                      std::all_of(facts.paths.begin(), facts.paths.end(), [&](const auto& p) { return inside(p, cwd); });
    return {read ? PolicyAction::kAllow : PolicyAction::kAsk, "approve-reads"};
  }
  if (policy.mode != "rules") return {PolicyAction::kAsk, "ask-host"};
  for (const PermissionRule& rule : policy.rules) {
    if (matches(rule, facts, cwd)) return {rule.action, rule.label};
  }
  return {policy.fallback, "fallback"};
}

Expected<void> read_policy(const toml::table& table, const std::string& where, PermissionPolicy& policy) {
  if (const toml::node* n = table.get("permissions")) {
    const auto* s = n->as_string();
    if (!s || !kModes.count(s->get())) {
      return Error{where + ".permissions must be \"ask-host\", \"approve-all\", \"approve-reads\", \"deny-all\" or \"rules\""};
    }
    policy.mode = s->get();
  }
  auto action_of = [&](const char* key, bool ask_allowed) -> Expected<std::optional<PolicyAction>> {
    const toml::node* n = table.get(key);
    if (!n) return std::optional<PolicyAction>();
    const auto* s = n->as_string();
    auto a = s ? parse_action(s->get()) : std::nullopt;
    if (!a || (!ask_allowed && *a == PolicyAction::kAsk)) {
      return Error{where + "." + key + (ask_allowed ? " must be \"allow\", \"deny\" or \"ask\"" : " must be \"allow\" or \"deny\"")};
    }
    return a;
  };
  auto fallback = action_of("fallback", true);
  if (!fallback) return fallback.error();
  if (*fallback) policy.fallback = **fallback;
  auto ask_fallback = action_of("ask_fallback", false);
  if (!ask_fallback) return ask_fallback.error();
  if (*ask_fallback) policy.ask_fallback = **ask_fallback;
  if (const toml::node* n = table.get("ask_timeout")) {
    std::optional<double> secs;
    if (const auto* i = n->as_integer()) secs = static_cast<double>(i->get());
    if (const auto* d = n->as_floating_point()) secs = d->get();
    if (!secs || !std::isfinite(*secs) || *secs < 0 || *secs > 86400) {
      return Error{where + ".ask_timeout must be a number of seconds, 0 to 86400 (0: no bound)"};
    }
    policy.ask_timeout = std::chrono::milliseconds(static_cast<long long>(std::llround(*secs * 1000)));
  }
  if (const toml::node* n = table.get("remember")) {
    const auto* s = n->as_string();
    if (!s || (s->get() != "session" && s->get() != "harness")) {
      return Error{where + ".remember must be \"session\" or \"harness\""};
    }
    policy.remember = s->get();
  }
  if (const toml::node* n = table.get("rule")) {
    const toml::array* rules = n->as_array();
    if (!rules) return Error{where + ".rule must be an array of tables: [[" + where.substr(1, where.size() - 2) + ".rule]]"};
    if (policy.mode != "rules") return Error{where + ": rules apply only with permissions = \"rules\""};
    std::size_t index = 0;
    for (const auto& item : *rules) {
      ++index;
      const std::string at = where + ".rule[" + std::to_string(index) + "]";
      const toml::table* t = item.as_table();
      if (!t) return Error{at + " must be a table"};
      PermissionRule rule;
      rule.label = "rule " + std::to_string(index);
      for (const auto& [key, value] : *t) {
        const std::string k(key.str());
        if (k == "action") {
          const auto* s = value.as_string();
          auto a = s ? parse_action(s->get()) : std::nullopt;
          if (!a) return Error{at + ".action must be \"allow\", \"deny\" or \"ask\""};
          rule.action = *a;
        } else if (k == "kind" || k == "command" || k == "path") {
          auto list = strings(value, at + "." + k);
          if (!list) return list.error();
          (k == "kind" ? rule.kinds : k == "command" ? rule.commands : rule.paths) = std::move(*list);
        } else if (k == "name") {
          const auto* s = value.as_string();
          if (!s || s->get().empty()) return Error{at + ".name must be a non-empty string"};
          rule.label = s->get();
        } else {
          return Error{at + ": unknown key '" + k + "' (action, kind, command, path, name)"};
        }
      }
      if (!t->contains("action")) return Error{at + ".action is required"};
      policy.rules.push_back(std::move(rule));
    }
  }
  return {};
}

bool no_looser(const std::string& stricter_mode, const std::string& base_mode) {
  if (stricter_mode == base_mode || stricter_mode == "deny-all") return true;
  // Asking the host instead of allowing, or allowing only reads.
  if (base_mode == "approve-all") return stricter_mode == "approve-reads" || stricter_mode == "ask-host";
  if (base_mode == "approve-reads") return stricter_mode == "ask-host";
  return false;
}

}  // namespace harnessd::harnesses
