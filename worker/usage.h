// Usage accounting: what a run used, from what its adapter reported (ACP
// PromptResponse.usage and usage_update), and the sums per session, per
// harness and per day built from runs. Pure JSON in, JSON out: the daemon
// and the command line share it.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace harnessd::worker::usage {

/// The token counts of ACP's Usage (PromptResponse.usage), in the order
/// tables show them.
inline constexpr const char* kTokenFields[] = {"inputTokens",      "outputTokens",      "totalTokens",
                                               "cachedReadTokens", "cachedWriteTokens", "thoughtTokens"};

/// A run's usage object, or null when the adapter reported nothing.
/// `reported`: the adapter's PromptResponse.usage (null if none): its token
/// counts are copied, totalTokens worked out from input and output when
/// missing. `update`: the turn's last usage_update without its
/// sessionUpdate (null if none): `context` {used, size}, and with a `cost`
/// the run's own cost, which is that cumulative session cost less
/// `cost_before` (the session's last reported cost before the turn) when
/// it is in the same currency and not smaller, else the cost as reported.
nlohmann::json of_run(const nlohmann::json& reported, const nlohmann::json& update, const nlohmann::json& cost_before);

/// The tokens a run counts against a token budget: its totalTokens (0
/// without usage).
std::int64_t tokens(const nlohmann::json& run_usage);

/// An empty sum: {runs: 0, every token field 0, cost: {}}.
nlohmann::json empty_sum();
/// Adds one run to `sum` (made empty_sum() if it is not an object): runs
/// +1, its token counts, its cost under its currency (cost is
/// {currency: amount}). A run without usage counts as a run only.
void add(nlohmann::json& sum, const nlohmann::json& run_usage);

/// A run's cost ({amount, currency}) or a sum's ({currency: amount}) as
/// text ("0.0300 USD"), "-" when there is none.
std::string cost_text(const nlohmann::json& cost);

}  // namespace harnessd::worker::usage
