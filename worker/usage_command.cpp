#include "worker/usage_command.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <regex>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "worker/inspect.h"
#include "worker/inspect_text.h"
#include "worker/state_db.h"
#include "worker/state_dir.h"
#include "worker/usage.h"

namespace harnessd::worker {

using nlohmann::json;

std::optional<std::string> usage_since(const std::string& since) {
  static const std::regex kDate(R"(\d{4}-\d{2}-\d{2})");
  static const std::regex kDuration(R"((\d+)([smhdw]))");
  std::smatch m;
  if (std::regex_match(since, kDate)) {
    const std::string iso = since + "T00:00:00.000Z";
    if (iso_ms(iso) < 0) return std::nullopt;
    return iso;
  }
  if (iso_ms(since) >= 0 && since.size() >= 20 && since.back() == 'Z') return since;
  if (std::regex_match(since, m, kDuration)) {
    const long long n = std::stoll(m[1].str());
    static const std::map<char, long long> kSeconds = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 604800}};
    const long long s = n * kSeconds.at(m[2].str()[0]);
    return acp::iso_time(std::chrono::system_clock::now() - std::chrono::seconds(s));
  }
  return std::nullopt;
}

int usage_command(const UsageQuery& q) {
  StateDb::RunFilter filter;
  if (q.since) {
    filter.since = usage_since(*q.since);
    if (!filter.since) {
      std::fprintf(stderr, "harnessd: --since %s is neither a date (2026-12-01), an ISO time nor a duration (24h, 7d)\n",
                   q.since->c_str());
      return 2;
    }
  }
  // The state database, read only; nothing recorded yet prints nothing.
  std::vector<RunRecord> runs;
  std::map<std::string, json> sessions;  // by id, for names
  auto root = open_state_dir(q.state_dir, StateAccess::kReadOnly);
  if (!root && root.error().err != ENOENT) {
    std::fprintf(stderr, "harnessd: %s\n", root.error().message.c_str());
    return 1;
  }
  if (root) {
    auto db = open_state_db(q.state_dir, root->get());
    if (!db) {
      std::fprintf(stderr, "harnessd: %s\n", db.error().message.c_str());
      return 1;
    }
    if (*db) {
      auto read = (*db)->runs(filter);
      if (!read) {
        std::fprintf(stderr, "harnessd: %s\n", read.error().message.c_str());
        return 1;
      }
      runs = std::move(*read);
      if (q.by == "session") {
        if (auto records = (*db)->sessions()) {
          for (auto& r : *records) {
            std::string id = r.value("sessionId", "");
            sessions[id] = std::move(r);
          }
        }
      }
    }
  }
  // Runs that ended: their usage is known then (an open run has none yet).
  std::map<std::string, json> groups;
  std::map<std::string, std::string> harness_of;  // --by session
  json total = usage::empty_sum();
  for (const RunRecord& r : runs) {
    if (!r.ended()) continue;
    const json used = r.outcome.value("usage", json());
    std::string key = q.by == "session" ? r.sessionId
                      : q.by == "day"   ? r.endedAt.substr(0, 10)
                                        : r.harness;
    usage::add(groups[key], used);
    usage::add(total, used);
    if (q.by == "session") harness_of[key] = r.harness;
  }
  auto name_of = [&](const std::string& id) -> json {
    auto it = sessions.find(id);
    if (it == sessions.end()) return nullptr;
    const json& n = it->second.contains("name") && it->second["name"].is_string() ? it->second["name"]
                                                                                   : it->second.value("hostSession", json());
    return n.is_string() ? n : json();
  };
  if (q.format == "json") {
    for (auto& [key, sum] : groups) {
      json line = {{"version", 1}, {"by", q.by}, {"key", key}, {"since", filter.since ? json(*filter.since) : json()}};
      if (q.by == "session") {
        line["harness"] = harness_of[key];
        line["name"] = name_of(key);
      }
      line.update(sum);
      print_line(line.dump());
    }
    return 0;
  }
  const std::string head = q.by == "session" ? "SESSION" : q.by == "day" ? "DAY (UTC)" : "HARNESS";
  std::vector<std::vector<std::string>> rows = {
      {head, "RUNS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "TOTAL", "COST"}};
  auto row = [&rows](std::string key, const json& sum) {
    auto n = [&sum](const char* k) { return std::to_string(sum.value(k, std::int64_t{0})); };
    rows.push_back({std::move(key), n("runs"), n("inputTokens"), n("outputTokens"), n("cachedReadTokens"),
                    n("cachedWriteTokens"), n("totalTokens"), usage::cost_text(sum.value("cost", json()))});
  };
  for (const auto& [key, sum] : groups) {
    std::string label = key;
    if (q.by == "session") {
      json name = name_of(key);
      if (name.is_string()) label += " (" + name.get<std::string>() + ")";
    }
    row(label, sum);
  }
  row("total", total);
  print_table(rows);
  return 0;
}

}  // namespace harnessd::worker
