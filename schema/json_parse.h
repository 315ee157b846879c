// Bounded JSON parsing for everything harnessd reads from outside: host and
// adapter lines, state files, context files. Nesting is limited (a deep tree
// would overflow the stack when copied) and no nlohmann exception escapes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "schema/expected.h"

namespace harnessd::schema {

/// Arrays and objects nested deeper than this are refused. ACP messages use
/// a handful of levels; tool inputs from a model rarely more than a few dozen.
inline constexpr std::size_t kMaxJsonDepth = 256;

struct JsonError {
  enum class Kind {
    kSyntax,       // not JSON, cut short, or bytes after the value
    kTooDeep,      // well-formed so far, but nested deeper than the limit
    kNumberRange,  // a number that does not fit a double (1e400)
    kNulByte,      // a raw NUL byte, which JSON never allows outside strings or in them
  };
  Kind kind = Kind::kSyntax;
  /// One sentence, e.g. "nesting deeper than 256 levels at byte 1030".
  std::string message;
  /// Byte offset where parsing stopped.
  std::size_t offset = 0;
};

/// Parses exactly one JSON value that fills `text` (surrounding whitespace
/// allowed). Never throws; the tree it returns is at most `max_depth` deep.
Expected<nlohmann::json, JsonError> parse_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

/// parse_json for call sites written in nlohmann's no-exception style: the
/// value, or a discarded value (is_discarded()) on any error.
nlohmann::json parse_or_discard(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

/// Whether parse_json would succeed, without building the value.
bool accept_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

}  // namespace harnessd::schema
