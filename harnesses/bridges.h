// The table of built-in bridges: for each profile kind that runs a bridge,
// the bridge's name (`harnessd adapter <bridge>`) and the config options it
// offers before it runs. What a particular bridge knows stays in its folder;
// the rest of harnesses/ asks this table.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace harnessd::harnesses {

struct BridgeEntry {
  std::string_view kind;    // the profile kind: "claude-code", "opencode-run", "openspace", "exec"
  std::string_view bridge;  // the bridge it runs: "claude-code", "opencode", "openspace", "exec"
  /// The config options the bridge offers, from the profile's bridge
  /// options (flag, value, flag, value, ...); an empty array when it has none.
  nlohmann::json (*known_options)(const std::vector<std::string>& bridge_options);
};

/// The entry of a kind, or null for "acp" (and unknown kinds).
const BridgeEntry* bridge_for_kind(std::string_view kind);

}  // namespace harnessd::harnesses
