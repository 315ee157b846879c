// Lane names.
#include "queue/lane.h"

namespace harnessd::queue {

std::optional<Lane> parse_lane(std::string_view name) {
  if (name == "interactive") return Lane::kInteractive;
  if (name == "scheduled") return Lane::kScheduled;
  if (name == "background") return Lane::kBackground;
  return std::nullopt;
}

const char* lane_name(Lane lane) {
  switch (lane) {
    case Lane::kInteractive: return "interactive";
    case Lane::kScheduled: return "scheduled";
    case Lane::kBackground: return "background";
  }
  return "interactive";
}

}  // namespace harnessd::queue
