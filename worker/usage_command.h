// `harnessd usage`: what the runs of a state directory used, summed by
// harness, session or day, read from the state database (no daemon needed).
#pragma once

#include <optional>
#include <string>

namespace harnessd::worker {

struct UsageQuery {
  std::string state_dir;
  /// Only runs queued at or after this: a date (2026-12-01, midnight UTC),
  /// an ISO time, or a duration back from now (90m, 24h, 7d).
  std::optional<std::string> since;
  std::string by = "harness";   // harness, session or day (UTC, of the run's end)
  std::string format = "text";  // text or json
};

/// The ISO time `since` stands for, or nothing when it is none of the
/// forms UsageQuery::since takes.
std::optional<std::string> usage_since(const std::string& since);

/// Prints the sums, one row (text) or line (json) per group, in key order;
/// text ends with a total. Returns the exit code (2: a bad --since).
int usage_command(const UsageQuery& query);

}  // namespace harnessd::worker
