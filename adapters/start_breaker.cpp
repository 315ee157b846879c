// A harness's circuit breaker on adapter starts.
#include "adapters/start_breaker.h"

namespace harnessd::adapters {

using nlohmann::json;

namespace {

long long ms_until(StartBreaker::Clock::time_point t, StartBreaker::Clock::time_point now) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
  return left > 0 ? left : 0;
}

}  // namespace

std::optional<RpcError> StartBreaker::admit(Clock::time_point now) {
  if (!open_until_) return std::nullopt;
  if (now >= *open_until_ && !probing_) {
    probing_ = true;  // this start is the probe
    return std::nullopt;
  }
  // Open, or a probe is under way: refused without a start.
  const long long retry = probing_ ? 1000 : ms_until(*open_until_, now);
  const std::string last = last_error_ ? last_error_->message : "";
  RpcError e{rpc_code::kHarnessUnavailable,
             "harness '" + harness_ + "' is unavailable: its last " + std::to_string(consecutive_) +
                 " adapter starts failed" + (probing_ ? " and a new start is being tried" : "") +
                 "; retry in " + std::to_string((retry + 999) / 1000) + " s. The last failure: " + last,
             {{"harness", harness_}, {"reason", "unavailable"}, {"retryAfterMs", retry},
              {"consecutiveFailures", consecutive_}}};
  if (last_error_) {
    e.data["lastError"] = {{"code", last_error_->code}, {"message", last_error_->message}};
    if (!last_error_->data.is_null()) e.data["lastError"]["data"] = last_error_->data;
  }
  return e;
}

void StartBreaker::failed(const RpcError& why, Clock::time_point now) {
  probing_ = false;
  ++consecutive_;
  last_error_ = why;
  if (options_.failures > 0 && consecutive_ >= options_.failures) open_until_ = now + options_.cooldown;
  if (on_change_) on_change_();
}

void StartBreaker::succeeded() {
  probing_ = false;
  const bool changed = consecutive_ > 0 || open_until_;
  consecutive_ = 0;
  open_until_.reset();
  last_error_.reset();
  if (changed && on_change_) on_change_();
}

void StartBreaker::abandoned() { probing_ = false; }

const char* StartBreaker::state(Clock::time_point now) const {
  if (!open_until_) return "available";
  if (probing_) return "probing";
  return now < *open_until_ ? "unavailable" : "available";
}

json StartBreaker::status(Clock::time_point now) const {
  json s = {{"state", state(now)}, {"consecutiveFailures", consecutive_}};
  if (open_until_ && now < *open_until_) s["retryAfterMs"] = ms_until(*open_until_, now);
  if (last_error_) s["lastError"] = {{"code", last_error_->code}, {"message", last_error_->message}};
  return s;
}

}  // namespace harnessd::adapters
