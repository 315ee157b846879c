// The shapes of the session/update notifications harnessd relays from an
// adapter to its host (ACP v1 "session/update"), checked so that the host
// never receives an update its own schema would reject.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace harnessd::schema {

/// True for the `sessionUpdate` kinds of ACP v1 that harnessd relays.
bool is_known_update_kind(std::string_view kind);

/// Checks `update` (the `update` object of session/update params) against
/// the ACP v1 schema of its kind. Returns nothing when it conforms, else
/// what is wrong ("content.text must be a string"). Unknown kinds are
/// reported as such.
std::optional<std::string> check_session_update(const nlohmann::json& update);

/// Checks one ContentBlock as an agent may send it (every content type).
std::optional<std::string> check_content(const nlohmann::json& block);

}  // namespace harnessd::schema
