// Ledger lines, the run index, and tolerant JSONL reading.
#include "worker/ledger.h"
#include "schema/json_parse.h"
#include "acp/json_write.h"
#include "acp/utf8.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <type_traits>


namespace harnessd::worker {

using nlohmann::json;

bool is_terminal_event(const std::string& e) {
  return e == run_event::kCompleted || e == run_event::kFailed || e == run_event::kCancelled ||
         e == run_event::kTimeout || e == run_event::kInterrupted;
}

json LedgerEntry::to_json() const {
  json j = {{"time", time},         {"event", event},     {"runId", runId},     {"sessionId", sessionId},
            {"name", name ? json(*name) : json()}, {"harness", harness}, {"requestId", requestId}, {"daemon", daemon}};
  if (hostSession) j["hostSession"] = *hostSession;
  for (auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

namespace {

void append_value(std::string& out, const json& v) { acp::append_json(out, v); }

}  // namespace

bool is_common_field(std::string_view key) {
  static constexpr std::string_view kCommon[] = {"time",        "event",   "runId",     "sessionId", "name",
                                                 "hostSession", "harness", "requestId", "daemon"};
  for (std::string_view c : kCommon) {
    if (key == c) return true;
  }
  return false;
}

std::string LedgerEntry::to_line() const {
  const bool has_extra = extra.is_object() && !extra.empty();
  std::string out;
  out.reserve(224);
  out += '{';
  auto key = [&](std::string_view k) {
    if (out.size() > 1) out += ',';
    acp::utf8::append_json_string(out, k);
    out += ':';
  };
  auto field = [&](std::string_view k, const auto& v) {
    if (has_extra && extra.contains(k)) return;
    key(k);
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, json>) {
      append_value(out, v);
    } else {
      acp::utf8::append_json_string(out, v);
    }
  };
  field("time", time);
  field("event", event);
  field("runId", runId);
  field("sessionId", sessionId);
  if (name) {
    field("name", *name);
  } else {
    field("name", json());
  }
  field("harness", harness);
  field("requestId", requestId);
  field("daemon", daemon);
  if (hostSession) field("hostSession", *hostSession);
  if (has_extra) {
    for (const auto& [k, v] : extra.items()) {
      key(k);
      append_value(out, v);
    }
  }
  out += '}';
  return out;
}

std::optional<LedgerEntry> LedgerEntry::from_json(const json& j) {
  if (!j.is_object()) return std::nullopt;
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto it = j.find(k);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  auto event = str("event");
  auto run = str("runId");
  if (!event || !run) return std::nullopt;
  LedgerEntry e;
  e.event = *event;
  e.runId = *run;
  e.time = str("time").value_or("");
  e.sessionId = str("sessionId").value_or("");
  e.name = str("name");
  e.hostSession = str("hostSession");
  e.harness = str("harness").value_or("");
  e.requestId = j.value("requestId", json());
  e.daemon = str("daemon").value_or("");
  for (auto& [k, v] : j.items()) {
    if (!is_common_field(k)) e.extra[k] = v;
  }
  return e;
}

json RunRecord::to_json() const {
  json j = {{"runId", runId},         {"sessionId", sessionId}, {"name", name ? json(*name) : json()},
            {"harness", harness},     {"requestId", requestId}, {"state", state},
            {"queuedAt", queuedAt.empty() ? json() : json(queuedAt)},
            {"startedAt", startedAt.empty() ? json() : json(startedAt)},
            {"endedAt", endedAt.empty() ? json() : json(endedAt)}};
  if (hostSession) j["hostSession"] = *hostSession;
  for (auto& [k, v] : outcome.items()) j[k] = v;
  return j;
}

void RunIndex::apply(const LedgerEntry& e) {
  auto [it, fresh] = runs_.try_emplace(e.runId);
  if (fresh) order_.push_back(e.runId);
  it->second.apply(e);
}

void RunRecord::apply(const LedgerEntry& e) {
  RunRecord& r = *this;
  r.runId = e.runId;
  if (!e.sessionId.empty()) r.sessionId = e.sessionId;
  if (e.name) r.name = e.name;
  if (e.hostSession) r.hostSession = e.hostSession;
  if (!e.harness.empty()) r.harness = e.harness;
  if (!e.requestId.is_null()) r.requestId = e.requestId;
  if (!e.daemon.empty()) r.daemon = e.daemon;
  if (is_terminal_event(e.event)) {
    ++r.terminal_entries;
    if (r.terminal_entries > 1) return;  // a second end is a bug; the first one stands
    r.endedAt = e.time;
    r.outcome = e.extra;
  } else if (e.event == run_event::kQueued) {
    r.queuedAt = e.time;
  } else if (e.event == run_event::kStarted) {
    r.startedAt = e.time;
  }
  r.state = e.event;
}

const RunRecord* RunIndex::find(const std::string& run_id) const {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : &it->second;
}

JsonlRead parse_jsonl(std::string_view content) {
  JsonlRead out;
  out.cut = !content.empty() && content.back() != '\n';
  std::size_t start = 0, number = 0;
  while (start < content.size()) {
    std::size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    ++number;
    std::string_view line = content.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) {
      // The state directory is outside input too: bounded parsing.
      auto j = schema::parse_json(line);
      if (!j) {
        out.bad_lines.push_back(number);
      } else {
        out.lines.push_back(std::move(*j));
      }
    }
    start = end + 1;
  }
  return out;
}

JsonlRead read_jsonl(const std::string& path) {
  JsonlRead out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    out.missing = true;
    if (errno != ENOENT) out.refused = path + ": " + std::strerror(errno);
    return out;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    out.missing = true;
    out.refused = path + " is not a regular file";
    return out;
  }
  std::string content;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) content.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return parse_jsonl(content);
}

}  // namespace harnessd::worker
