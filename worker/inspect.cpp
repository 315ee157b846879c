// Reading the store from the command line. Text output is for people (one
// line per run or session); json output is one JSON object per line.
#include "worker/inspect.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "adapters/process.h"
#include "harnesses/profile.h"
#include "worker/config.h"
#include "schema/json_parse.h"
#include "worker/harness_probe.h"
#include "worker/inspect_text.h"
#include "worker/ledger.h"
#include "worker/run_recording.h"
#include "worker/state_dir.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

volatile sig_atomic_t g_stop = 0;

bool run_matches(const RunRecord& r, const RunsQuery& q) {
  if (q.session && r.sessionId != *q.session && r.name != *q.session && r.hostSession != *q.session) return false;
  if (q.state && r.state != *q.state) return false;
  return true;
}

// The state directory for reading: never through a link, only this user's,
// and not one that others can write to (its content could be planted).
// Missing is no error (nothing recorded yet): an empty fd.
Expected<UniqueFd> open_for_reading(const std::string& state_dir) {
  auto root = open_state_dir(state_dir, StateAccess::kReadOnly);
  if (root) return std::move(*root);
  if (root.error().err == ENOENT) return UniqueFd();
  return Error{root.error().message};
}

}  // namespace

int runs_command(const RunsQuery& q) {
  auto root = open_for_reading(q.state_dir);
  if (!root) {
    std::fprintf(stderr, "harnessd: %s\n", root.error().message.c_str());
    return 1;
  }
  JsonlRead read;
  read.missing = true;
  if (*root) read = read_jsonl_beneath(root->get(), "ledger.jsonl", StateAccess::kReadOnly);
  if (!read.refused.empty()) {
    std::fprintf(stderr, "harnessd: %s\n", read.refused.c_str());
    return 1;
  }
  for (std::size_t n : read.bad_lines) {
    std::fprintf(stderr, "harnessd: ledger.jsonl line %zu is not JSON (cut by a crash?); skipped\n", n);
  }
  RunIndex index;
  for (const auto& line : read.lines) {
    if (auto e = LedgerEntry::from_json(line)) index.apply(*e);
  }
  // Both --transitions and --follow print entries this way.
  auto print_entry = [&q](const LedgerEntry& e) {
    if (q.format == "json") {
      json entry = e.to_json();
      entry["version"] = 1;
      print_line(entry.dump());
    } else {
      print_line(describe_entry(e));
    }
  };
  const RunsQuery by_session{q.state_dir, q.session, std::nullopt, false, false, q.format};
  if (q.transitions) {
    bool any = false;
    for (const auto& line : read.lines) {
      auto e = LedgerEntry::from_json(line);
      if (!e) continue;
      const RunRecord* r = index.find(e->runId);
      if (!r || !run_matches(*r, by_session) || (q.state && e->event != *q.state)) continue;
      print_entry(*e);
      any = true;
    }
    if (!any && !q.follow && q.format != "json") {
      std::fprintf(stderr, "harnessd: no matching transitions are recorded in %s\n", q.state_dir.c_str());
      return 1;
    }
  }
  std::vector<std::vector<std::string>> rows = {{"RUN", "SESSION", "HARNESS", "QUEUED (UTC)", "TOOK", "STATE"}};
  const long long now = iso_ms(acp::iso_time());
  for (const auto& id : q.transitions ? std::vector<std::string>{} : index.order()) {
    const RunRecord& r = *index.find(id);
    if (!run_matches(r, q)) continue;
    if (q.format == "json") {
      json j = r.to_json();
      j["version"] = 1;
      if (!r.startedAt.empty()) j["recording"] = q.state_dir + "/" + Store::run_dir(r.runId);
      print_line(j.dump());
      continue;
    }
    long long start = iso_ms(r.startedAt), end = r.endedAt.empty() ? now : iso_ms(r.endedAt);
    std::string took = start < 0 || end < start ? "-" : duration_words(end - start);
    if (r.endedAt.empty() && start >= 0) took += " so far";
    rows.push_back({r.runId, r.name ? *r.name : r.sessionId, r.harness.empty() ? "-" : r.harness,
                    short_time(r.queuedAt), took, run_state_words(r)});
  }
  if (q.format != "json" && !q.transitions) {
    if (rows.size() > 1) {
      print_table(rows);
    } else if (!q.follow) {
      // Said on stderr, and an exit code scripts can test.
      std::string filter = q.session ? " of session '" + *q.session + "'" : "";
      if (q.state) filter += " in state '" + *q.state + "'";
      std::fprintf(stderr, "harnessd: no runs%s are recorded in %s\n", filter.c_str(), q.state_dir.c_str());
      return 1;
    }
  }
  if (!q.follow) return 0;

  // Follow: print each ledger line written from now on. The file only
  // grows (append-only), so remember the offset and poll. It is opened
  // beneath the directory, like everything else, once it exists.
  signal(SIGINT, [](int) { g_stop = 1; });
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGPIPE, [](int) { g_stop = 1; });
  UniqueFd ledger;
  off_t offset = -1;  // unknown until the file is open
  std::string partial;
  while (!g_stop) {
    if (!*root) {
      if (auto opened = open_for_reading(q.state_dir); opened && *opened) root = std::move(opened);
    }
    if (*root && !ledger) {
      auto opened = open_beneath(root->get(), "ledger.jsonl", O_RDONLY, 0, StateAccess::kReadOnly);
      if (opened) {
        ledger = std::move(*opened);
        struct stat st {};
        // Already printed up to its size at the start; a ledger that
        // appeared later is printed from its beginning.
        offset = read.missing ? 0 : (::fstat(ledger.get(), &st) == 0 ? st.st_size : 0);
      } else if (opened.error().err != ENOENT) {
        std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
        return 1;
      }
    }
    struct stat st {};
    if (ledger && ::fstat(ledger.get(), &st) == 0 && st.st_size > offset) {
      std::string chunk(static_cast<std::size_t>(st.st_size - offset), '\0');
      ssize_t n = ::pread(ledger.get(), chunk.data(), chunk.size(), offset);
      chunk.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
      offset += static_cast<off_t>(chunk.size());
      partial += chunk;
      std::size_t nl;
      while ((nl = partial.find('\n')) != std::string::npos) {
        std::string line = partial.substr(0, nl);
        partial.erase(0, nl + 1);
        auto j = schema::parse_json(line);
        auto e = j ? LedgerEntry::from_json(*j) : std::nullopt;
        if (!e) continue;
        index.apply(*e);
        const RunRecord* r = index.find(e->runId);
        if (!r || !run_matches(*r, by_session)) continue;
        if (q.state && e->event != *q.state) continue;
        print_entry(*e);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

int harnesses_command(const Config& config, bool check, const std::string& format) {
  std::vector<std::string> parent = adapters::current_environment();
  bool default_found = false;
  for (const auto& [name, profile] : config.harnesses) {
    const HarnessProbe probe = probe_harness(profile, parent, check);
    const Expected<std::string>& found = probe.found;
    const std::string& version = probe.version;
    bool is_default = name == config.daemon.default_harness;
    if (is_default) default_found = static_cast<bool>(found);
    if (format == "json") {
      json j = {{"version", 1},
                {"name", name},
                {"kind", profile.kind},
                {"default", is_default},
                {"command", profile.command},
                {"path", found ? json(*found) : json()},
                {"description", profile.description}};
      if (!found) {
        j["missing"] = found.error().message;
        j["install"] = profile.install_hint;
      }
      if (check) j["programVersion"] = version;  // what `<program> --version` said
      print_line(j.dump());
      continue;
    }
    std::string line = name + (is_default ? " (default)" : "") + "  [" + profile.kind + "]  " + profile.description;
    print_line(line);
    if (found) {
      print_line("    runs " + *found + (version.empty() ? "" : "  (" + version + ")"));
    } else {
      print_line("    missing: " + found.error().message);
      if (!profile.install_hint.empty()) print_line("    install: " + profile.install_hint);
    }
  }
  if (check && !default_found) {
    // Sessions that name no harness would fail: --check says so.
    if (config.daemon.default_harness_given) {
      std::fprintf(stderr, "harnessd: the default harness '%s' cannot run\n", config.daemon.default_harness.c_str());
    } else {
      std::fprintf(stderr, "harnessd: %s", no_harness_installed_message(config).c_str());
    }
    return 1;
  }
  return 0;
}

RunIndex run_index_beneath(int root) {
  RunIndex index;
  for (const auto& line : read_jsonl_beneath(root, "ledger.jsonl", StateAccess::kReadOnly).lines) {
    if (auto e = LedgerEntry::from_json(line)) index.apply(*e);
  }
  return index;
}

std::map<std::string, SessionRecord> session_records_beneath(int root) {
  std::map<std::string, SessionRecord> records;
  auto dir = open_beneath(root, "sessions", O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
  if (!dir) {
    if (dir.error().err != ENOENT) std::fprintf(stderr, "harnessd: %s\n", dir.error().message.c_str());
    return records;
  }
  if (DIR* d = ::fdopendir(dir->release())) {
    while (dirent* e = ::readdir(d)) {
      std::string file = e->d_name;
      if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
      JsonlRead rec = read_jsonl_beneath(root, "sessions/" + file, StateAccess::kReadOnly);
      if (!rec.refused.empty()) std::fprintf(stderr, "harnessd: %s; skipped\n", rec.refused.c_str());
      if (rec.lines.size() != 1 || !rec.lines[0].is_object()) continue;
      auto record = SessionRecord::from_json(rec.lines[0]);
      if (!record) {
        std::fprintf(stderr, "harnessd: sessions/%s is not a session record harnessd wrote (%s); skipped\n",
                     file.c_str(), record.error().c_str());
        continue;
      }
      records[file.substr(0, file.size() - 5)] = std::move(*record);
    }
    ::closedir(d);
  }
  return records;
}

std::map<std::string, SessionRecord> read_session_records(const std::string& state_dir) {
  auto root = open_for_reading(state_dir);
  if (!root) {
    std::fprintf(stderr, "harnessd: %s\n", root.error().message.c_str());
    return {};
  }
  if (!*root) return {};
  return session_records_beneath(root->get());
}

int sessions_command(const std::string& state_dir, const std::string& format, bool all) {
  auto root = open_for_reading(state_dir);
  if (!root) {
    std::fprintf(stderr, "harnessd: %s\n", root.error().message.c_str());
    return 1;
  }
  if (!*root) return 0;
  std::map<std::string, SessionRecord> records = session_records_beneath(root->get());
  // Run counts per session from the ledger.
  RunIndex index = run_index_beneath(root->get());
  std::map<std::string, std::map<std::string, int>> counts;
  for (const auto& [id, r] : index.runs()) ++counts[r.sessionId][r.state];
  std::vector<std::vector<std::string>> rows = {{"SESSION", "NAME", "HARNESS", "STATE", "UPDATED (UTC)", "RUNS", "CWD"}};
  for (const auto& [id, r] : records) {
    if (r.closed && !all) continue;
    json runs = counts.count(id) ? json(counts[id]) : json::object();
    if (format == "json") {
      json out = r.to_json();
      out["version"] = 1;
      out["runs"] = runs;
      print_line(out.dump());
      continue;
    }
    // The session's name, else the host's name for it.
    std::string name = r.name.value_or(r.host_session.value_or("-"));
    std::string summary;
    for (auto& [state, n] : runs.items()) {
      summary += (summary.empty() ? "" : ", ") + std::to_string(n.get<int>()) + " " + (state == "timeout" ? "timed out" : state);
    }
    rows.push_back({id, name, r.harness.empty() ? "-" : r.harness, r.closed ? "closed" : "open",
                    short_time(r.updated_at), summary.empty() ? "none" : summary, r.cwd.empty() ? "-" : r.cwd});
  }
  if (format != "json") {
    if (rows.size() > 1) {
      print_table(rows);
    } else {
      std::fprintf(stderr, "harnessd: no %ssessions are recorded in %s\n", all ? "" : "open ", state_dir.c_str());
    }
  }
  return 0;
}

int show_command(const std::string& state_dir, const std::string& run_id, const std::string& format) {
  auto root = open_for_reading(state_dir);
  if (!root) {
    std::fprintf(stderr, "harnessd: %s\n", root.error().message.c_str());
    return 1;
  }
  // The ledger says who ran it and when, also for a run still queued.
  RunIndex index;
  if (*root) index = run_index_beneath(root->get());
  const RunRecord* run = acp::is_safe_id(run_id) ? index.find(run_id) : nullptr;
  if (!run) {
    std::fprintf(stderr, "harnessd: no run %s is recorded in %s\n", run_id.c_str(), state_dir.c_str());
    return 1;
  }
  const std::string dir = Store::run_dir(run_id);
  const RunRecording rec = read_run_recording(root->get(), run_id);
  long long start = iso_ms(run->startedAt), end = iso_ms(run->endedAt);
  json took = start >= 0 && end >= start ? json(end - start) : json();

  if (format == "json") {
    json out = {{"version", 1},
                {"runId", run_id},
                {"sessionId", run->sessionId},
                {"name", run->name ? json(*run->name) : json()},
                {"harness", run->harness},
                {"state", run->state},
                {"stopReason", rec.result.value("stopReason", run->outcome.value("stopReason", json()))},
                {"error", rec.result.value("error", run->outcome.value("error", json()))},
                {"queuedAt", run->queuedAt.empty() ? json() : json(run->queuedAt)},
                {"startedAt", run->startedAt.empty() ? json() : json(run->startedAt)},
                {"endedAt", run->endedAt.empty() ? json() : json(run->endedAt)},
                {"durationMs", took},
                {"prompt", rec.prompt},
                {"toolCalls", rec.tool_calls},
                {"answer", rec.answer},
                {"usage", rec.usage},
                {"recording", state_dir + "/" + dir},
                {"files", rec.files}};
    print_line(out.dump(-1, ' ', false, json::error_handler_t::replace));
    return 0;
  }
  auto indent = [](const std::string& text, std::size_t max_lines) {
    std::string out;
    std::istringstream in(text);
    std::size_t n = 0, total = 0;
    for (std::string line; std::getline(in, line); ++total) {
      if (n < max_lines) {
        out += "    " + line + "\n";
        ++n;
      }
    }
    if (total > n) out += "    ... (" + std::to_string(total - n) + " more lines)\n";
    return out;
  };
  std::vector<std::vector<std::string>> head;
  head.push_back({"run", run_id});
  head.push_back({"session", run->sessionId + (run->name ? " [" + *run->name + "]" : "")});
  head.push_back({"harness", run->harness.empty() ? "-" : run->harness});
  head.push_back({"state", run_state_words(*run)});
  head.push_back({"queued", short_time(run->queuedAt)});
  if (!run->startedAt.empty()) head.push_back({"started", short_time(run->startedAt)});
  if (!run->endedAt.empty()) head.push_back({"ended", short_time(run->endedAt)});
  if (took.is_number()) head.push_back({"took", duration_words(took.get<long long>())});
  if (!rec.usage.is_null()) head.push_back({"usage", rec.usage.dump()});
  head.push_back({"recording", state_dir + "/" + dir});
  print_table(head);
  std::string body;
  if (!rec.prompt.empty()) body += "\nprompt (prompt.md):\n" + indent(rec.prompt, 12);
  if (!rec.tool_calls.empty()) {
    body += "\ntool calls:\n";
    for (const auto& c : rec.tool_calls) {
      std::string title = c["title"].is_string() ? c["title"].get<std::string>() : c["title"].dump();
      std::string status = c["status"].is_string() ? c["status"].get<std::string>() : c["status"].dump();
      body += "    " + title + "  " + status +
              (c["durationMs"].is_number() ? "  " + duration_words(c["durationMs"].get<long long>()) : "") + "\n";
    }
  }
  if (!rec.answer.empty()) body += "\nanswer:\n" + indent(rec.answer, 20);
  std::string error = string_field(rec.result.value("error", json::object()), "message");
  if (!error.empty()) body += "\nerror: " + error + "\n";
  if (!rec.files.empty()) {
    body += "\nfiles:\n";
    for (const auto& f : rec.files) {
      body += "    " + f["name"].get<std::string>() + "  " + std::to_string(f["bytes"].get<long long>()) + " bytes\n";
    }
  }
  if (!body.empty()) std::fwrite(body.data(), 1, body.size(), stdout);
  return 0;
}

}  // namespace harnessd::worker
