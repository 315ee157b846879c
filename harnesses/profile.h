// Harness profiles: how to start the adapter for a harness. Built-in
// profiles cover the common ACP agents; users add or override profiles in
// the config file under [harness.<name>].
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "harnesses/permission_policy.h"
#include "harnesses/remote.h"

#include "adapters/cgroups.h"
#include "adapters/sandbox.h"
#include "schema/expected.h"

namespace harnessd::harnesses {

struct HarnessProfile {
  std::string name;
  /// "acp": `command` is an ACP agent. Otherwise a built-in bridge drives
  /// `command`: "claude-code", "opencode-run", "openspace" or "exec".
  std::string kind = "acp";
  /// argv of the ACP agent, or of the harness CLI a bridge drives; argv[0]
  /// is resolved on PATH, never via a shell.
  std::vector<std::string> command;
  /// Options of the bridge, as `--name value` pairs (from the table's
  /// bridge-specific keys, e.g. model, input, output).
  std::vector<std::string> bridge_options;
  /// Variables set for the adapter.
  std::map<std::string, std::string> env;
  /// Variables copied from harnessd's own environment when set.
  std::vector<std::string> env_passthrough;
  /// "persistent": one adapter per session, which keeps its own memory.
  /// "oneshot": a fresh adapter for every prompt; harnessd carries the
  /// session's memory (task and answer of each turn) in the packaged prompt.
  std::string mode = "persistent";
  /// The packaging template for its prompts (docs/packaging.md); empty: the
  /// prompt goes to the harness as the host sent it, unless the prompt or
  /// the mode asks for packaging ("oneshot" uses "single-shot").
  std::string template_name;
  /// "metadata": the run's recording keeps sizes, times and message kinds
  /// but no content (no prompt, frames, stderr or transcript), for
  /// sensitive work. "full" (default): everything.
  bool record_metadata_only = false;
  /// A variable holding the harness's API key: harnessd authenticates an
  /// adapter that offers an "env_var" auth method reading it (ACP
  /// `authenticate`). Empty: never.
  std::string auth_env;
  /// Limits on each adapter tree (a cgroup of its own); none by default.
  adapters::ResourceLimits limits;
  /// The sandbox of each adapter tree (bubblewrap); none by default.
  adapters::Sandbox sandbox;
  /// Adapters of this harness kept started and initialized ahead of need.
  std::size_t warm = 0;
  /// What harnessd answers the adapter's permission requests on its own.
  PermissionPolicy policy;
  /// Runs of this harness at once across all sessions (0: only the daemon's
  /// max_concurrent_runs); others wait in their queues.
  std::size_t max_concurrent = 0;
  /// Prompts of this harness accepted in any sliding hour (0: no limit);
  /// past it a prompt is refused with -32018.
  std::size_t max_runs_per_hour = 0;
  /// Tokens (totalTokens of the runs' usage) of this harness in any sliding
  /// 24 hours (0: no limit); once reached, prompts are refused with -32018.
  std::int64_t max_tokens_per_day = 0;
  /// Where the adapter runs when not here: a harnessd worker on one of
  /// these hosts over OpenSSH (docs/remote.md). Then `command` is the
  /// worker's argv.
  RemoteSpec remote;
  /// An argv prefix for the adapter (a container or pod runner), with the
  /// placeholders of remote.h filled per session; empty: none.
  std::vector<std::string> launcher;
  /// One line for `harnessd harnesses`.
  std::string description;
  /// How to install what `command` needs, shown when it is missing.
  std::string install_hint;
};

/// The built-in profiles: the ACP agents claude (claude-agent-acp), opencode
/// (opencode acp), gemini (gemini --acp) and codex (codex-acp), and the
/// bridges claude-code, opencode-run, openspace and exec.
std::map<std::string, HarnessProfile> builtin_profiles();

/// The bridge a kind runs ("claude-code", "opencode", "openspace", "exec"),
/// or empty for "acp".
std::string bridge_of(const std::string& kind);

/// The config options the profile's adapter will offer when harnessd knows
/// them without starting it: a bridge's list (empty for bridges without
/// options). Null for an ACP adapter, which only tells once it runs.
nlohmann::json known_config_options(const HarnessProfile& profile);

/// The argv that starts the profile's adapter: its command for an ACP
/// agent, `<harnessd> adapter <bridge> <options> -- <command>` for a bridge.
std::vector<std::string> adapter_argv(const HarnessProfile& profile, const std::string& harnessd_exe);

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

}  // namespace harnessd::harnesses
