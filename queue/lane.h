// Lanes: the priority classes of prompts (`_meta.harnessd.lane`).
#pragma once

#include <optional>
#include <string_view>

namespace harnessd::queue {

enum class Lane { kInteractive = 0, kScheduled = 1, kBackground = 2 };
inline constexpr int kLaneCount = 3;

/// "interactive", "scheduled" or "background"; nothing for anything else.
std::optional<Lane> parse_lane(std::string_view name);
const char* lane_name(Lane lane);

}  // namespace harnessd::queue
