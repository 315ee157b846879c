// Where a remote harness's new session goes (docs/remote.md): the worker
// host with the most free places. Pure, so that the rule is tested alone.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "harnesses/remote.h"

namespace harnessd::worker {

/// The hosts of `remote` with room for one more session, best first: by
/// most free places (capacity less the sessions `open` counts on each),
/// ties in the order of `remote.hosts`. Without a capacity every host has
/// room and the one with the fewest sessions comes first. Empty: all full.
std::vector<std::string> placement_order(const harnesses::RemoteSpec& remote,
                                         const std::map<std::string, std::size_t>& open);

}  // namespace harnessd::worker
