#include "worker/usage.h"

#include <cstdio>

namespace harnessd::worker::usage {

using nlohmann::json;

namespace {

bool count(const json& j, const char* key, std::int64_t& out) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer() || it->get<std::int64_t>() < 0) return false;
  out = it->get<std::int64_t>();
  return true;
}

bool amount_of(const json& cost, double& amount, std::string& currency) {
  if (!cost.is_object() || !cost.contains("amount") || !cost["amount"].is_number() || !cost.contains("currency") ||
      !cost["currency"].is_string()) {
    return false;
  }
  amount = cost["amount"].get<double>();
  currency = cost["currency"].get<std::string>();
  return true;
}

}  // namespace

json of_run(const json& reported, const json& update, const json& cost_before) {
  json out = json::object();
  for (const char* key : kTokenFields) {
    std::int64_t n = 0;
    if (count(reported, key, n)) out[key] = n;
  }
  // ACP makes totalTokens required; an adapter that leaves it out still
  // gets a total, so budgets see its tokens.
  if (!out.contains("totalTokens") && (out.contains("inputTokens") || out.contains("outputTokens"))) {
    out["totalTokens"] = out.value("inputTokens", std::int64_t{0}) + out.value("outputTokens", std::int64_t{0});
  }
  if (update.is_object()) {
    std::int64_t used = 0, size = 0;
    if (count(update, "used", used) && count(update, "size", size)) out["context"] = {{"used", used}, {"size", size}};
    double amount = 0, before = 0;
    std::string currency, before_currency;
    if (amount_of(update.value("cost", json()), amount, currency)) {
      // usage_update's cost is the session's cumulative cost (ACP session
      // usage): the run's share is what it grew by during the turn. A
      // smaller figure means the adapter counts afresh (a new process).
      if (amount_of(cost_before, before, before_currency) && before_currency == currency && before <= amount) {
        amount -= before;
      }
      out["cost"] = {{"amount", amount}, {"currency", currency}};
    }
  }
  return out.empty() ? json() : out;
}

std::int64_t tokens(const json& run_usage) {
  std::int64_t n = 0;
  return count(run_usage, "totalTokens", n) ? n : 0;
}

json empty_sum() {
  json sum = {{"runs", 0}};
  for (const char* key : kTokenFields) sum[key] = 0;
  sum["cost"] = json::object();
  return sum;
}

void add(json& sum, const json& run_usage) {
  if (!sum.is_object()) sum = empty_sum();
  sum["runs"] = sum.value("runs", std::int64_t{0}) + 1;
  for (const char* key : kTokenFields) {
    std::int64_t n = 0;
    count(run_usage, key, n);
    sum[key] = sum.value(key, std::int64_t{0}) + n;
  }
  json& cost = sum["cost"];
  if (!cost.is_object()) cost = json::object();
  double amount = 0;
  std::string currency;
  if (run_usage.is_object() && amount_of(run_usage.value("cost", json()), amount, currency)) {
    cost[currency] = cost.value(currency, 0.0) + amount;
  }
}

std::string cost_text(const json& cost) {
  // A run's {amount, currency}, or a sum's {currency: amount}.
  std::string out;
  auto one = [&out](double amount, const std::string& currency) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4f %s", amount, currency.c_str());
    out += (out.empty() ? "" : ", ") + std::string(buf);
  };
  double amount = 0;
  std::string currency;
  if (amount_of(cost, amount, currency)) {
    one(amount, currency);
  } else if (cost.is_object()) {
    for (const auto& [c, a] : cost.items()) {
      if (a.is_number()) one(a.get<double>(), c);
    }
  }
  return out.empty() ? "-" : out;
}

}  // namespace harnessd::worker::usage
