#include "worker/placement.h"

#include <algorithm>
#include <limits>

namespace harnessd::worker {

std::vector<std::string> placement_order(const harnesses::RemoteSpec& remote,
                                         const std::map<std::string, std::size_t>& open) {
  struct Candidate {
    std::size_t free;
    std::size_t order;
    const std::string* host;
  };
  std::vector<Candidate> candidates;
  for (std::size_t i = 0; i < remote.hosts.size(); ++i) {
    auto it = open.find(remote.hosts[i]);
    const std::size_t used = it == open.end() ? 0 : it->second;
    const std::size_t capacity = remote.capacity ? remote.capacity : std::numeric_limits<std::size_t>::max();
    if (used >= capacity) continue;
    candidates.push_back({capacity - used, i, &remote.hosts[i]});
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.free > b.free; });
  std::vector<std::string> out;
  out.reserve(candidates.size());
  for (const auto& c : candidates) out.push_back(*c.host);
  return out;
}

}  // namespace harnessd::worker
