// Budgets: per-harness limits on how many prompts may start a run in a
// sliding hour and how many tokens its runs may use in a sliding 24 hours
// (issue 17). What counts is kept in memory and rebuilt from the ledger at
// start, so a restart forgets nothing; refusals are -32018.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "schema/rpc_error.h"
#include "worker/ledger.h"

namespace harnessd::worker {

struct BudgetLimits {
  std::size_t max_runs_per_hour = 0;    // 0: no limit
  std::int64_t max_tokens_per_day = 0;  // 0: no limit
};

/// Loop thread only. Times are wall-clock (the ledger's).
class Budgets {
 public:
  using Clock = std::chrono::system_clock;
  static constexpr std::chrono::hours kRunWindow{1};
  static constexpr std::chrono::hours kTokenWindow{24};

  /// A prompt of `harness` was accepted (queued) at `at`.
  void queued(const std::string& harness, Clock::time_point at = Clock::now());
  /// A run of `harness` ended at `at` having used `tokens` (its totalTokens).
  void ran(const std::string& harness, std::int64_t tokens, Clock::time_point at = Clock::now());
  /// The error that refuses a new prompt of `harness` under `limits`
  /// (-32018, retryable, with retryAfterMs and the budget's name), or
  /// nothing when the prompt may be queued.
  std::optional<RpcError> check(const std::string& harness, const BudgetLimits& limits,
                                Clock::time_point now = Clock::now());
  /// Counts again from recorded runs: those queued in the last hour, and
  /// the tokens of those that ended in the last 24 hours.
  void load(const std::vector<RunRecord>& runs, Clock::time_point now = Clock::now());

  /// How far back load() needs runs (by their queuedAt): a run queued
  /// earlier may have ended inside the token window.
  static constexpr std::chrono::hours kLookBack{48};

 private:
  struct Counts {
    std::deque<Clock::time_point> runs;                           // queued, oldest first
    std::deque<std::pair<Clock::time_point, std::int64_t>> used;  // ended with tokens, oldest first
    std::int64_t tokens = 0;                                      // the sum of `used`
  };
  void expire(Counts& c, Clock::time_point now);
  std::map<std::string, Counts> counts_;
};

}  // namespace harnessd::worker
