// Editing a frame's bytes without parsing it again: the relay re-addresses
// an adapter's session/update to the host's session by replacing the
// session id in the line it already has, instead of serialising the parse.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace harnessd::schema {

/// In `line`, one JSON message that already parsed, the bytes [first, last)
/// of the string value of params.sessionId, quotes included, when replacing
/// them alone re-addresses the message exactly: its members are "jsonrpc",
/// "method" and "params", once each; "params" is an object with
/// "sessionId" once, a string; no member name at those two levels is
/// written with an escape; and the line holds no raw control character.
/// Otherwise nothing, and the caller serialises the parse instead.
std::optional<std::pair<std::size_t, std::size_t>> session_id_span(std::string_view line);

/// `line` with the bytes [span.first, span.second) replaced by `quoted_id`
/// (a JSON string, quotes included), then a newline.
std::string readdress(std::string_view line, std::pair<std::size_t, std::size_t> span, std::string_view quoted_id);

}  // namespace harnessd::schema
