// UTF-8 validation and repair for bytes that come from adapters and models.
#pragma once

#include <string>
#include <string_view>

namespace harnessd::acp::utf8 {

/// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values
/// above U+10FFFF).
bool valid(std::string_view s);

/// Returns `s` with every ill-formed sequence replaced by U+FFFD.
std::string repair(std::string_view s);

/// Appends the JSON string literal of repair(s) to `out`: quotes, with `"`,
/// `\` and control characters escaped and everything else as it is. The
/// text of a recording passes through here; nearly all of it is copied in
/// stretches.
void append_json_string(std::string& out, std::string_view s);

}  // namespace harnessd::acp::utf8

namespace harnessd::acp::utf8 {
/// The largest n <= max such that cutting `s` after n bytes does not split
/// a multi-byte sequence.
std::size_t safe_cut(std::string_view s, std::size_t max);
}  // namespace harnessd::acp::utf8
