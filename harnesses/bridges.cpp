#include "harnesses/bridges.h"

#include "harnesses/claude_code/claude_bridge.h"

namespace harnessd::harnesses {

namespace {

nlohmann::json no_options(const std::vector<std::string>&) { return nlohmann::json::array(); }

// The claude-code bridge's --model and --permission-mode.
nlohmann::json claude_options(const std::vector<std::string>& bridge_options) {
  std::string model, mode;
  for (std::size_t i = 0; i + 1 < bridge_options.size(); i += 2) {
    if (bridge_options[i] == "--model") model = bridge_options[i + 1];
    if (bridge_options[i] == "--permission-mode") mode = bridge_options[i + 1];
  }
  return claude_config_options(model, mode);
}

constexpr BridgeEntry kBridges[] = {
    {"claude-code", "claude-code", claude_options},
    {"opencode-run", "opencode", no_options},
    {"openspace", "openspace", no_options},
    {"exec", "exec", no_options},
};

}  // namespace

const BridgeEntry* bridge_for_kind(std::string_view kind) {
  for (const auto& entry : kBridges) {
    if (entry.kind == kind) return &entry;
  }
  return nullptr;
}

}  // namespace harnessd::harnesses
