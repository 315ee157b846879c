// Reading the store from the command line. Text output is for people (one
// line per run or session); json output is one JSON object per line.
#include "worker/inspect.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "worker/ledger.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

volatile sig_atomic_t g_stop = 0;

void print_line(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

bool run_matches(const RunRecord& r, const RunsQuery& q) {
  if (q.session && r.sessionId != *q.session && r.name != *q.session) return false;
  if (q.state && r.state != *q.state) return false;
  return true;
}

std::string describe_run(const RunRecord& r) {
  std::string outcome = r.state;
  if (r.outcome.contains("stopReason")) outcome += " (" + r.outcome["stopReason"].get<std::string>() + ")";
  if (r.outcome.contains("error") && r.outcome["error"].is_object()) {
    outcome += " (" + r.outcome["error"].value("message", "") + ")";
  }
  if (r.outcome.contains("reason") && r.outcome["reason"].is_string()) {
    outcome += " (" + r.outcome["reason"].get<std::string>() + ")";
  }
  std::string who = r.sessionId + (r.name ? " [" + *r.name + "]" : "");
  std::string when = r.queuedAt + (r.endedAt.empty() ? "" : " .. " + r.endedAt);
  return r.runId + "  " + who + "  " + r.harness + "  " + when + "  " + outcome;
}

std::string describe_entry(const LedgerEntry& e) {
  std::string line = e.time + "  " + e.runId + "  " + e.sessionId + (e.name ? " [" + *e.name + "]" : "") + "  " +
                     e.event;
  if (e.extra.contains("stopReason")) line += " (" + e.extra["stopReason"].get<std::string>() + ")";
  if (e.extra.contains("reason") && e.extra["reason"].is_string()) {
    line += " (" + e.extra["reason"].get<std::string>() + ")";
  }
  return line;
}

}  // namespace

int runs_command(const RunsQuery& q) {
  std::string ledger = q.state_dir + "/ledger.jsonl";
  JsonlRead read = read_jsonl(ledger);
  for (std::size_t n : read.bad_lines) {
    std::fprintf(stderr, "harnessd: ledger.jsonl line %zu is not JSON (cut by a crash?); skipped\n", n);
  }
  RunIndex index;
  for (const auto& line : read.lines) {
    if (auto e = LedgerEntry::from_json(line)) index.apply(*e);
  }
  for (const auto& id : index.order()) {
    const RunRecord& r = *index.find(id);
    if (!run_matches(r, q)) continue;
    if (q.format == "json") {
      json j = r.to_json();
      if (!r.startedAt.empty()) j["recording"] = q.state_dir + "/" + Store::run_dir(r.runId);
      print_line(j.dump());
    } else {
      print_line(describe_run(r));
    }
  }
  if (!q.follow) return 0;

  // Follow: print each ledger line written from now on. The file only
  // grows (append-only), so remember the offset and poll.
  signal(SIGINT, [](int) { g_stop = 1; });
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGPIPE, [](int) { g_stop = 1; });
  struct stat st {};
  off_t offset = ::stat(ledger.c_str(), &st) == 0 ? st.st_size : 0;
  std::string partial;
  while (!g_stop) {
    if (::stat(ledger.c_str(), &st) == 0 && st.st_size > offset) {
      std::ifstream in(ledger, std::ios::binary);
      in.seekg(offset);
      std::string chunk(static_cast<std::size_t>(st.st_size - offset), '\0');
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      chunk.resize(static_cast<std::size_t>(in.gcount()));
      offset += static_cast<off_t>(chunk.size());
      partial += chunk;
      std::size_t nl;
      while ((nl = partial.find('\n')) != std::string::npos) {
        std::string line = partial.substr(0, nl);
        partial.erase(0, nl + 1);
        json j = json::parse(line, nullptr, false);
        auto e = j.is_discarded() ? std::nullopt : LedgerEntry::from_json(j);
        if (!e) continue;
        index.apply(*e);
        const RunRecord* r = index.find(e->runId);
        if (!r || !run_matches(*r, RunsQuery{q.state_dir, q.session, std::nullopt, false, q.format})) continue;
        if (q.state && e->event != *q.state) continue;
        print_line(q.format == "json" ? e->to_json().dump() : describe_entry(*e));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

int sessions_command(const std::string& state_dir, const std::string& format, bool all) {
  std::map<std::string, json> records;
  if (DIR* d = ::opendir((state_dir + "/sessions").c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string file = e->d_name;
      if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
      JsonlRead rec = read_jsonl(state_dir + "/sessions/" + file);
      if (rec.lines.size() == 1 && rec.lines[0].is_object()) records[file.substr(0, file.size() - 5)] = rec.lines[0];
    }
    ::closedir(d);
  }
  // Run counts per session from the ledger.
  RunIndex index;
  for (const auto& line : read_jsonl(state_dir + "/ledger.jsonl").lines) {
    if (auto e = LedgerEntry::from_json(line)) index.apply(*e);
  }
  std::map<std::string, std::map<std::string, int>> counts;
  for (const auto& [id, r] : index.runs()) ++counts[r.sessionId][r.state];
  for (const auto& [id, r] : records) {
    bool closed = r.value("closed", false);
    if (closed && !all) continue;
    json runs = counts.count(id) ? json(counts[id]) : json::object();
    if (format == "json") {
      json out = r;
      out["runs"] = runs;
      print_line(out.dump());
    } else {
      std::string name = r.contains("name") && r["name"].is_string() ? r["name"].get<std::string>() : "-";
      std::string summary;
      for (auto& [state, n] : runs.items()) summary += (summary.empty() ? "" : ", ") + std::to_string(n.get<int>()) + " " + state;
      print_line(id + "  " + name + "  " + r.value("harness", "") + "  " + r.value("cwd", "") + "  " +
                 (closed ? "closed" : "open") + "  " + r.value("updatedAt", "") + "  " +
                 (summary.empty() ? "no runs" : summary));
    }
  }
  return 0;
}

}  // namespace harnessd::worker
