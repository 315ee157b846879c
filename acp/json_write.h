// JSON text of a value, as nlohmann's dump() writes it with the replace
// error handler (ill-formed UTF-8 in strings becomes U+FFFD), but appended
// to a string the caller owns. Every line harnessd sends and every record it
// stores is written here: dump() sets up a serializer, a shared output
// adapter and a new string per call, and escapes strings one character at
// a time, which costs more than the rest of a small line's handling.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace harnessd::acp {

/// Appends `value` to `out`: compact with `indent` < 0, else one member or
/// element per line, `indent` spaces per level (dump(indent)'s layout).
/// A value that starts `depth` levels deep (a member written by hand) is
/// laid out as it would be there.
void append_json(std::string& out, const nlohmann::json& value, int indent = -1, int depth = 0);

/// The text of `value` as append_json writes it.
std::string json_text(const nlohmann::json& value, int indent = -1);

}  // namespace harnessd::acp
