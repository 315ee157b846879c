// Harness profiles: how to start the adapter for a harness. Built-in
// profiles cover the common ACP agents; users add or override profiles in
// the config file under [harness.<name>].
#pragma once

#include <map>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "schema/expected.h"

namespace harnessd::harnesses {

struct HarnessProfile {
  std::string name;
  /// "acp": the command is an ACP agent. Bridge kinds come later.
  std::string kind = "acp";
  /// argv of the adapter; argv[0] is resolved on PATH, never via a shell.
  std::vector<std::string> command;
  /// Variables set for the adapter.
  std::map<std::string, std::string> env;
  /// Variables copied from harnessd's own environment when set.
  std::vector<std::string> env_passthrough;
  /// One line for `harnessd harnesses`.
  std::string description;
  /// How to install what `command` needs, shown when it is missing.
  std::string install_hint;
};

/// The built-in profiles: claude (claude-agent-acp), opencode (opencode acp),
/// gemini (gemini --acp) and codex (codex-acp).
std::map<std::string, HarnessProfile> builtin_profiles();

/// Reads one [harness.<name>] table. When `base` is given (a built-in of the
/// same name), keys that are absent keep the base's values.
Expected<HarnessProfile> profile_from_toml(const std::string& name, const toml::table& table,
                                           const HarnessProfile* base);

/// Variables every adapter gets from harnessd's environment when they are
/// set: enough for programs to run, nothing secret.
const std::vector<std::string>& safe_environment_names();

/// The adapter environment for `profile`: the safe variables and the
/// profile's passthrough names copied from `parent` (NAME=value strings),
/// then the profile's own `env`, which wins.
std::vector<std::string> adapter_environment(const HarnessProfile& profile, const std::vector<std::string>& parent);

/// The environment of this process as NAME=value strings.
std::vector<std::string> current_environment();

}  // namespace harnessd::harnesses
