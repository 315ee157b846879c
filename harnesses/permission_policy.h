// Permission policy: what harnessd answers an adapter's
// session/request_permission on its own, by the profile's
// `permissions` mode and its ordered `[[harness.X.rule]]` tables, and what
// it leaves to the host. Pure code: the caller gathers what the request
// says of its tool call (facts_of) and carries the decision out.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "schema/expected.h"

namespace harnessd::harnesses {

enum class PolicyAction { kAllow, kDeny, kAsk };
const char* action_name(PolicyAction a);

struct PermissionRule {
  PolicyAction action = PolicyAction::kAsk;
  /// Each list empty: any. A rule matches when every list it has matches.
  std::vector<std::string> kinds;     // read, edit, execute, fetch, ...
  std::vector<std::string> commands;  // shell-style globs on an execute call's command
  std::vector<std::string> paths;     // globs on the call's paths, against the session cwd
  /// "rule N" (its place, from 1), or its `name`.
  std::string label;
};

struct PermissionPolicy {
  /// ask-host, approve-all, approve-reads, deny-all or rules.
  std::string mode = "ask-host";
  std::vector<PermissionRule> rules;
  /// With rules: what happens when none matches.
  PolicyAction fallback = PolicyAction::kAsk;
  /// An `ask` the host has not answered after this long (0: no bound) is
  /// decided by ask_fallback, as is one whose client is gone.
  std::chrono::milliseconds ask_timeout{0};
  PolicyAction ask_fallback = PolicyAction::kDeny;
  /// Where an "always" answer is remembered: "session" or "harness".
  std::string remember = "session";
};

/// What a permission request says of its tool call.
struct ToolCallFacts {
  std::string kind;  // "" when the request does not say
  std::optional<std::string> command;
  std::vector<std::string> paths;
};
/// From a request's `toolCall` (kind, rawInput's command and paths,
/// locations), merged over what an earlier tool_call update of the same
/// toolCallId said (`earlier`, or null).
ToolCallFacts facts_of(const nlohmann::json& tool_call, const nlohmann::json& earlier = nullptr);

struct PolicyDecision {
  PolicyAction action = PolicyAction::kAsk;
  /// What decided, in words: "approve-reads", "rule 2", "fallback".
  std::string by;
};
/// The decision for a tool call of a session in `cwd` (absolute). A path
/// that leaves the cwd (by "..", or through a symbolic link) never matches
/// a rule that allows.
PolicyDecision decide(const PermissionPolicy& policy, const ToolCallFacts& facts, const std::string& cwd);

/// Whether `path` (relative to `cwd`, or absolute) stays inside `cwd` once
/// ".." and symbolic links of the parts that exist are resolved.
bool inside(const std::string& path, const std::string& cwd);

/// A shell-style glob: `*` any run of characters (slashes too), `?` one,
/// `[...]` a class.
bool glob_match(const std::string& pattern, const std::string& text);

/// Reads `permissions`, `rule`, `fallback`, `ask_timeout`, `ask_fallback`
/// and `remember` of a [harness.X] table into `policy`; `where` names the
/// table in errors. Keys it does not know are the caller's.
Expected<void> read_policy(const toml::table& table, const std::string& where, PermissionPolicy& policy);

/// Whether `stricter` allows nothing `base` would not: a session may only
/// tighten its profile's policy (_meta.harnessd.permissions).
bool no_looser(const std::string& stricter_mode, const std::string& base_mode);

}  // namespace harnessd::harnesses
