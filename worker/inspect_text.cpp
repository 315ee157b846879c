// Text for people only: json output never goes through here.
#include "worker/inspect_text.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Columns a cell takes: its code points (names may be any UTF-8).
std::size_t utf8_width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

void print_line(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

long long iso_ms(const std::string& t) {
  std::tm tm{};
  int ms = 0;
  if (t.size() < 20 || !::strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return -1;
  if (t.size() >= 23 && t[19] == '.') ms = std::atoi(t.substr(20, 3).c_str());
  return static_cast<long long>(::timegm(&tm)) * 1000 + ms;
}

std::string duration_words(long long ms) {
  char buf[48];
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%lld ms", ms);
  } else if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000);
  } else if (ms < 3'600'000) {
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", ms / 60'000, ms / 1000 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", ms / 3'600'000, ms / 60'000 % 60);
  }
  return buf;
}

std::string short_time(const std::string& t) {
  if (t.size() < 19) return t.empty() ? "-" : t;
  std::string out = t.substr(0, 19);
  out[10] = ' ';
  return out;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], utf8_width(row[i]));
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - utf8_width(row[i]) + 2, ' ');
    }
    print_line(line);
  }
}

std::string string_field(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string run_state_words(const RunRecord& r) {
  std::string words = r.state == "timeout" ? "timed out" : r.state;
  std::string reason = string_field(r.outcome, "stopReason");
  if (!reason.empty() && reason != "end_turn") words += " (" + reason + ")";
  if (r.outcome.contains("error") && r.outcome["error"].is_object()) {
    std::string message = string_field(r.outcome["error"], "message");
    if (!message.empty()) words += ": " + message;
  }
  if (std::string why = string_field(r.outcome, "reason"); !why.empty()) words += " (" + why + ")";
  return words;
}

std::string describe_entry(const LedgerEntry& e) {
  std::string line = e.time + "  " + e.runId + "  " + e.sessionId + (e.name ? " [" + *e.name + "]" : "") + "  " +
                     e.event;
  if (e.extra.contains("stopReason") && e.extra["stopReason"].is_string()) {
    line += " (" + e.extra["stopReason"].get<std::string>() + ")";
  }
  if (e.extra.contains("reason") && e.extra["reason"].is_string()) {
    line += " (" + e.extra["reason"].get<std::string>() + ")";
  }
  return line;
}

}  // namespace harnessd::worker
