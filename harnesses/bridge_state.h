// Small per-session state files of a bridge: what it must remember to
// continue a harness's session after the bridge itself restarted.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace harnessd::harnesses {

/// $HARNESSD_STATE_DIR/bridges/<bridge> (harnessd sets it for its
/// adapters), else $XDG_STATE_HOME/harnessd/bridges/<bridge>.
std::string bridge_state_dir(const std::string& bridge);

/// Reads <dir>/<session>.json; nothing if missing or unreadable.
std::optional<nlohmann::json> load_bridge_state(const std::string& bridge, const std::string& session);
/// Writes <dir>/<session>.json atomically (0600; folders 0700). Small and
/// rare (once per harness session), so written directly.
bool save_bridge_state(const std::string& bridge, const std::string& session, const nlohmann::json& state);

}  // namespace harnessd::harnesses
