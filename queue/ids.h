// Identifiers that stay unique across runs of the daemon (acpx keys its
// records by session id, so an id must never be reused).
#pragma once

#include <string>
#include <string_view>

namespace harnessd::queue {

/// Returns `<prefix><26 chars>`: 48 bits of milliseconds since the epoch and
/// 80 random bits in Crockford base32, so ids sort by creation time.
std::string make_id(std::string_view prefix);

}  // namespace harnessd::queue
