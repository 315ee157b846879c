// StartBreaker: one harness's circuit breaker on adapter starts. After
// `failures` starts in a row fail, the harness is unavailable for
// `cooldown`: starts are refused at once with the last failure and how long
// to wait, so queued prompts do not each pay for a start that is bound to
// fail. When the cooldown ends one start goes ahead as a probe; its success
// makes the harness available again, its failure starts a new cooldown.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "schema/rpc_error.h"

namespace harnessd::adapters {

struct BreakerOptions {
  /// Failed starts in a row that make the harness unavailable (0: never).
  std::size_t failures = 3;
  std::chrono::milliseconds cooldown{30000};
};

class StartBreaker {
 public:
  using Clock = std::chrono::steady_clock;

  StartBreaker() = default;
  StartBreaker(std::string harness, BreakerOptions options) : harness_(std::move(harness)), options_(options) {}

  /// Whether a start may go ahead now: nullopt (then it must be followed by
  /// exactly one of failed(), succeeded() or abandoned()), or the error to
  /// refuse it with (-32010, data.retryAfterMs and data.lastError).
  std::optional<RpcError> admit(Clock::time_point now = Clock::now());
  /// The start admitted last failed with `why`.
  void failed(const RpcError& why, Clock::time_point now = Clock::now());
  /// The start admitted last brought an adapter up.
  void succeeded();
  /// The start admitted last was stopped by its owner before it could tell.
  void abandoned();

  /// "available", "unavailable" or "probing".
  const char* state(Clock::time_point now = Clock::now()) const;
  /// {state, consecutiveFailures, retryAfterMs?, lastError?} for the status
  /// outputs.
  nlohmann::json status(Clock::time_point now = Clock::now()) const;
  /// Runs after each change of state or of the failure count.
  void on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

 private:
  std::string harness_;
  BreakerOptions options_;
  std::size_t consecutive_ = 0;
  std::optional<Clock::time_point> open_until_;  // set while the breaker is open
  bool probing_ = false;
  std::optional<RpcError> last_error_;
  std::function<void()> on_change_;
};

}  // namespace harnessd::adapters
