#include "worker/budgets.h"

#include <algorithm>

#include "worker/inspect_text.h"
#include "worker/usage.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

std::optional<Budgets::Clock::time_point> parse_time(const std::string& iso) {
  const long long ms = iso_ms(iso);
  if (ms < 0) return std::nullopt;
  return Budgets::Clock::time_point(std::chrono::milliseconds(ms));
}

long long ms_until(Budgets::Clock::time_point at, Budgets::Clock::time_point now) {
  // At least 1: a refusal always tells the host to wait.
  return std::max<long long>(1, std::chrono::ceil<std::chrono::milliseconds>(at - now).count());
}

}  // namespace

void Budgets::queued(const std::string& harness, Clock::time_point at) {
  // What left the windows goes at every change, so that the counts of a
  // harness without limits (never checked) stay as small as its last hour.
  Counts& c = counts_[harness];
  expire(c, at);
  c.runs.push_back(at);
}

void Budgets::ran(const std::string& harness, std::int64_t tokens, Clock::time_point at) {
  if (tokens <= 0) return;
  Counts& c = counts_[harness];
  expire(c, at);
  c.used.emplace_back(at, tokens);
  c.tokens += tokens;
}

void Budgets::expire(Counts& c, Clock::time_point now) {
  while (!c.runs.empty() && c.runs.front() <= now - kRunWindow) c.runs.pop_front();
  while (!c.used.empty() && c.used.front().first <= now - kTokenWindow) {
    c.tokens -= c.used.front().second;
    c.used.pop_front();
  }
}

std::optional<RpcError> Budgets::check(const std::string& harness, const BudgetLimits& limits, Clock::time_point now) {
  if (!limits.max_runs_per_hour && !limits.max_tokens_per_day) return std::nullopt;
  Counts& c = counts_[harness];
  expire(c, now);
  if (limits.max_runs_per_hour && c.runs.size() >= limits.max_runs_per_hour) {
    // The oldest run of the window leaves it first; with it a place frees.
    const auto free_at = c.runs[c.runs.size() - limits.max_runs_per_hour] + kRunWindow;
    return RpcError{rpc_code::kBudgetExceeded,
                    "harness " + harness + " already ran " + std::to_string(c.runs.size()) +
                        " prompts in the last hour (max_runs_per_hour " + std::to_string(limits.max_runs_per_hour) +
                        "); retry later",
                    {{"retryable", true},
                     {"retryAfterMs", ms_until(free_at, now)},
                     {"budget", "max_runs_per_hour"},
                     {"harness", harness},
                     {"limit", limits.max_runs_per_hour},
                     {"used", c.runs.size()}}};
  }
  if (limits.max_tokens_per_day && c.tokens >= limits.max_tokens_per_day) {
    // Tokens leave the window run by run, oldest first: the wait lasts
    // until enough have left to be under the limit again.
    std::int64_t left = c.tokens;
    Clock::time_point free_at = now;
    for (const auto& [at, n] : c.used) {
      left -= n;
      free_at = at + kTokenWindow;
      if (left < limits.max_tokens_per_day) break;
    }
    return RpcError{rpc_code::kBudgetExceeded,
                    "harness " + harness + " used " + std::to_string(c.tokens) +
                        " tokens in the last 24 hours (max_tokens_per_day " +
                        std::to_string(limits.max_tokens_per_day) + "); retry later",
                    {{"retryable", true},
                     {"retryAfterMs", ms_until(free_at, now)},
                     {"budget", "max_tokens_per_day"},
                     {"harness", harness},
                     {"limit", limits.max_tokens_per_day},
                     {"used", c.tokens}}};
  }
  return std::nullopt;
}

void Budgets::load(const std::vector<RunRecord>& runs, Clock::time_point now) {
  counts_.clear();
  struct Seen {
    Clock::time_point at;
    std::string harness;
    std::int64_t tokens;
  };
  std::vector<Seen> queued, used;
  for (const RunRecord& r : runs) {
    if (auto at = parse_time(r.queuedAt); at && *at > now - kRunWindow) queued.push_back({*at, r.harness, 0});
    if (!r.ended()) continue;
    const std::int64_t n = usage::tokens(r.outcome.value("usage", json()));
    auto at = parse_time(r.endedAt);
    if (n > 0 && at && *at > now - kTokenWindow) used.push_back({*at, r.harness, n});
  }
  auto by_time = [](const Seen& a, const Seen& b) { return a.at < b.at; };
  std::sort(queued.begin(), queued.end(), by_time);
  std::sort(used.begin(), used.end(), by_time);
  for (const Seen& s : queued) this->queued(s.harness, s.at);
  for (const Seen& s : used) ran(s.harness, s.tokens, s.at);
}

}  // namespace harnessd::worker
