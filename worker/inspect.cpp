// Reading the store from the command line. Text output is for people (one
// line per run or session); json output is one JSON object per line.
#include "worker/inspect.h"

#include "harnesses/remote.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

Expected<std::unique_ptr<StateDb>> open_state_db(const std::string& state_dir, int root) {
  struct stat st {};
  const bool has_db = ::fstatat(root, StateDb::kFile, &st, AT_SYMLINK_NOFOLLOW) == 0;
  const bool has_files = ::fstatat(root, "ledger.jsonl", &st, AT_SYMLINK_NOFOLLOW) == 0 ||
                         ::fstatat(root, "sessions", &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!has_db && !has_files) return std::unique_ptr<StateDb>();  // nothing recorded yet
  auto db = StateDb::open(state_dir, root, Database::Options{});
  if (!db) return Error{"cannot read " + state_dir + "/" + StateDb::kFile + ": " + db.error().message};
  // A state directory an earlier harnessd wrote: its files are imported
  // once, as a daemon would.
  auto imported = (*db)->import_files(root);
  if (!imported) return Error{"cannot import the ledger of " + state_dir + ": " + imported.error().message};
  if (*imported) {
    std::fprintf(stderr, "harnessd: imported %zu ledger lines and %zu session records into %s\n",
                 (*imported)->ledger_lines, (*imported)->sessions, StateDb::kFile);
  }
  return std::move(*db);
}

namespace {

// The state database of `q`'s directory, or nullptr when nothing is
// recorded; false when it cannot be read (said on stderr).
bool open_for_query(const std::string& state_dir, UniqueFd& root, std::unique_ptr<StateDb>& db) {
  if (!root) {
    auto opened = open_for_reading(state_dir);
    if (!opened) {
      std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
      return false;
    }
    root = std::move(*opened);
  }
  if (!root || db) return true;
  auto opened = open_state_db(state_dir, root.get());
  if (!opened) {
    std::fprintf(stderr, "harnessd: %s\n", opened.error().message.c_str());
    return false;
  }
  db = std::move(*opened);
  return true;
}

}  // namespace

int runs_command(const RunsQuery& q) {
  UniqueFd root;
  std::unique_ptr<StateDb> db;
  if (!open_for_query(q.state_dir, root, db)) return 1;
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
  // An entry is printed when its run is of the session asked for.
  std::map<std::string, bool> of_session;
  auto wanted = [&](const LedgerEntry& e) {
    if (q.state && e.event != *q.state) return false;
    if (!q.session) return true;
    auto known = of_session.find(e.runId);
    if (known != of_session.end()) return known->second;
    auto run = db->find_run(e.runId);
    bool match = run && *run && run_matches(**run, RunsQuery{q.state_dir, q.session, std::nullopt, false, false, q.format});
    return of_session[e.runId] = match;
  };
  std::int64_t printed = 0;  // the newest transition printed or skipped
  if (db) {
    auto last = db->last_transition();
    if (!last) {
      std::fprintf(stderr, "harnessd: %s\n", last.error().message.c_str());
      return 1;
    }
    printed = *last;
  }
  if (q.transitions) {
    bool any = false;
    for (std::int64_t after = 0; db && after < printed;) {
      auto page = db->transitions_after(after, 4096);
      if (!page) {
        std::fprintf(stderr, "harnessd: %s\n", page.error().message.c_str());
        return 1;
      }
      if (page->empty()) break;
      for (const auto& [n, e] : *page) {
        after = n;
        if (n > printed || !wanted(e)) continue;
        print_entry(e);
        any = true;
      }
    }
    if (!any && !q.follow && q.format != "json") {
      std::fprintf(stderr, "harnessd: no matching transitions are recorded in %s\n", q.state_dir.c_str());
      return 1;
    }
  } else {
    std::vector<RunRecord> runs;
    if (db) {
      StateDb::RunFilter filter;
      filter.session_ref = q.session;
      filter.state = q.state;
      auto found = db->runs(filter);
      if (!found) {
        std::fprintf(stderr, "harnessd: %s\n", found.error().message.c_str());
        return 1;
      }
      runs = std::move(*found);
    }
    std::vector<std::vector<std::string>> rows = {{"RUN", "SESSION", "HARNESS", "QUEUED (UTC)", "TOOK", "STATE"}};
    const long long now = iso_ms(acp::iso_time());
    for (const RunRecord& r : runs) {
      if (q.format == "json") {
        json j = r.to_json();
        j["version"] = 1;
        if (!r.startedAt.empty()) j["recording"] = q.state_dir + "/" + recording_of(root.get(), r.runId, r.sessionId);
        print_line(j.dump());
        continue;
      }
      long long start = iso_ms(r.startedAt), end = r.endedAt.empty() ? now : iso_ms(r.endedAt);
      std::string took = start < 0 || end < start ? "-" : duration_words(end - start);
      if (r.endedAt.empty() && start >= 0) took += " so far";
      rows.push_back({r.runId, r.name ? *r.name : r.sessionId, r.harness.empty() ? "-" : r.harness,
                      short_time(r.queuedAt), took, run_state_words(r)});
    }
    if (q.format != "json") {
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
  }
  if (!q.follow) return 0;

  // Follow: print each transition committed from now on, polling the
  // database (and waiting for the directory and the database to appear).
  signal(SIGINT, [](int) { g_stop = 1; });
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGPIPE, [](int) { g_stop = 1; });
  while (!g_stop) {
    if (!db) {
      // Quiet while there is nothing yet; an error that lasts is said once.
      if (!open_for_query(q.state_dir, root, db)) return 1;
    }
    if (db) {
      auto page = db->transitions_after(printed, 4096);
      if (!page) {
        std::fprintf(stderr, "harnessd: %s\n", page.error().message.c_str());
        return 1;
      }
      for (const auto& [n, e] : *page) {
        printed = n;
        if (wanted(e)) print_entry(e);
      }
      if (!page->empty()) continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

namespace {

// The daemon instances whose lock is held, with the pid each wrote there.
std::map<std::string, long long> live_daemons(int root) {
  std::map<std::string, long long> out;
  auto dir = open_beneath(root, "daemons", O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
  if (!dir) return out;
  DIR* d = ::fdopendir(dir->release());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string file = e->d_name;
    constexpr std::string_view kSuffix = ".lock";
    if (file.size() <= kSuffix.size() || file.compare(file.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
      continue;
    }
    std::string instance = file.substr(0, file.size() - kSuffix.size());
    if (!daemon_instance_alive(root, instance)) continue;
    long long pid = 0;
    if (auto fd = open_beneath(root, "daemons/" + file, O_RDONLY, 0, StateAccess::kReadOnly)) {
      char buf[32] = {};
      ssize_t n = ::read(fd->get(), buf, sizeof buf - 1);
      if (n > 0) pid = std::strtoll(buf, nullptr, 10);
    }
    out[instance] = pid;
  }
  ::closedir(d);
  return out;
}

// What each live daemon says of its harnesses' start breakers, by pid:
// {name: {state, consecutiveFailures, until?, lastError?}}.
std::map<long long, json> daemon_harnesses(int root) {
  std::map<long long, json> out;
  for (const auto& [instance, pid] : live_daemons(root)) {
    auto fd = open_beneath(root, "daemons/" + instance + ".harnesses.json", O_RDONLY, 0, StateAccess::kReadOnly);
    if (!fd) continue;
    // A few hundred bytes a harness: anything much larger is not ours.
    constexpr std::size_t kMaxBytes = 1u << 20;
    std::string text;
    char buf[4096];
    for (ssize_t n; text.size() < kMaxBytes && (n = ::read(fd->get(), buf, sizeof buf)) > 0;) {
      text.append(buf, static_cast<std::size_t>(n));
    }
    if (text.size() >= kMaxBytes) continue;
    json j = schema::parse_or_discard(text);
    if (j.is_object() && j.contains("harnesses") && j["harnesses"].is_object()) out[pid] = j["harnesses"];
  }
  return out;
}

// A breaker that keeps its harness unavailable now, in words; "" when the
// harness is available.
std::string unavailable_text(const json& breaker) {
  if (!breaker.is_object() || breaker.value("state", "") == "available") return "";
  std::string until = breaker.value("until", "");
  if (!until.empty() && until <= acp::iso_time()) return "";  // the cooldown is over: a start will be tried
  std::string text = breaker.value("state", "") + (until.empty() ? "" : " until " + short_time(until));
  if (breaker.contains("lastError") && breaker["lastError"].is_object()) {
    text += ": " + breaker["lastError"].value("message", "");
  }
  return text;
}

}  // namespace

int harnesses_command(const Config& config, bool check, const std::string& format, const std::string& state_dir) {
  std::vector<std::string> parent = adapters::current_environment();
  // What running daemons say of each harness's start breaker.
  std::map<long long, json> breakers;
  if (auto root = open_for_reading(state_dir); root && *root) breakers = daemon_harnesses(root->get());
  auto unavailable_in = [&](const std::string& name) {
    std::vector<std::pair<long long, json>> out;
    for (const auto& [pid, harnesses] : breakers) {
      if (harnesses.contains(name) && !unavailable_text(harnesses[name]).empty()) out.emplace_back(pid, harnesses[name]);
    }
    return out;
  };
  bool default_found = false;
  bool limits_refused = false;
  const adapters::CgroupSupport& cgroups = adapters::CgroupSupport::here();
  if (check && format != "json") print_line("limits: " + cgroups.describe());
  // The sandbox is probed (bwrap run once) only when asked or needed.
  bool sandbox_refused = false;
  auto sandbox_support = [] () -> const adapters::SandboxSupport& { return adapters::SandboxSupport::here(); };
  if (check && format != "json") print_line("sandbox: " + sandbox_support().describe());
  for (const auto& [name, profile] : config.harnesses) {
    std::optional<std::string> refused = profile.limits.any() ? cgroups.refuse(profile.limits) : std::nullopt;
    limits_refused = limits_refused || refused;
    const bool sandboxed = profile.sandbox.enabled();
    std::optional<std::string> sandbox_refusal = sandboxed ? sandbox_support().refuse() : std::nullopt;
    sandbox_refused = sandbox_refused || sandbox_refusal;
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
      if (check && !profile.remote.enabled()) j["programVersion"] = version;  // what `<program> --version` said
      if (profile.remote.enabled()) j["remote"] = {{"hosts", profile.remote.hosts}, {"capacity", profile.remote.capacity}};
      json down = json::array();
      for (const auto& [pid, breaker] : unavailable_in(name)) {
        json b = breaker;
        b["pid"] = pid;
        down.push_back(std::move(b));
      }
      if (!down.empty()) j["unavailableIn"] = std::move(down);
      if (profile.limits.any()) {
        j["limits"] = {{"limits", profile.limits.describe()},
                       {"enforced", !refused},
                       {"mechanism", refused ? *refused : cgroups.describe()}};
      }
      if (check || sandboxed) {
        // The profile's sandbox (its cwd is the session's, so "writable"
        // lists the profile's own paths) and whether this machine makes it.
        const adapters::SandboxSupport& support = sandbox_support();
        json sb = {{"mode", profile.sandbox.mode}, {"available", support.available()},
                   {"mechanism", support.describe()}};
        if (sandboxed) {
          sb["network"] = profile.sandbox.network;
          sb["writable"] = profile.sandbox.writable;
          sb["enforced"] = !sandbox_refusal;
        }
        if (!support.available()) sb["install"] = support.hint();
        j["sandbox"] = std::move(sb);
      }
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
    for (const auto& [pid, breaker] : unavailable_in(name)) {
      print_line("    unavailable in harnessd pid " + std::to_string(pid) + ": " + unavailable_text(breaker));
    }
    if (profile.remote.enabled()) {
      std::string hosts;
      for (const auto& host : profile.remote.hosts) hosts += (hosts.empty() ? "" : ", ") + host;
      print_line("    remote: on " + hosts + ", through ssh" +
                 (profile.remote.capacity ? ", " + std::to_string(profile.remote.capacity) + " sessions per host" : ""));
    }
    if (profile.limits.any()) {
      print_line("    limits: " + profile.limits.describe() +
                 (refused ? ": refused, " + *refused : ", enforced by " + cgroups.describe()));
    }
    if (sandboxed) {
      std::string what = profile.sandbox.mode + (profile.sandbox.network ? ", network" : ", no network");
      for (const auto& path : profile.sandbox.writable) what += ", writable " + path;
      print_line("    sandbox: " + what +
                 (sandbox_refusal ? ": refused, " + *sandbox_refusal + " (" + sandbox_support().hint() + ")"
                                  : ", enforced by " + sandbox_support().describe()));
    }
  }
  if (check && sandbox_refused) {
    std::fprintf(stderr, "harnessd: a profile asks for a sandbox that cannot be made here (%s); its sessions are refused\n",
                 sandbox_support().hint().c_str());
    return 1;
  }
  if (check && limits_refused) {
    std::fprintf(stderr, "harnessd: a profile has limits that cannot be enforced here; its sessions are refused\n");
    return 1;
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

std::map<std::string, SessionRecord> session_records(StateDb& db) {
  std::map<std::string, SessionRecord> records;
  auto stored = db.sessions();
  if (!stored) {
    std::fprintf(stderr, "harnessd: %s\n", stored.error().message.c_str());
    return records;
  }
  for (const auto& j : *stored) {
    auto record = SessionRecord::from_json(j);
    if (!record) {
      std::fprintf(stderr, "harnessd: a session record is not one harnessd wrote (%s); skipped\n",
                   record.error().c_str());
      continue;
    }
    std::string id = record->session_id;
    records[id] = std::move(*record);
  }
  return records;
}

std::map<std::string, SessionRecord> read_session_records(const std::string& state_dir) {
  UniqueFd root;
  std::unique_ptr<StateDb> db;
  if (!open_for_query(state_dir, root, db) || !db) return {};
  return session_records(*db);
}

json adapter_state(const SessionRecord& r, bool served, bool running) {
  // Only a live process keeps adapters; its record says which it had last.
  if (r.closed || !served || !r.adapter.is_object()) return {{"state", "none"}};
  if (auto pid = r.adapter.find("pid"); pid != r.adapter.end() && pid->is_number_integer()) {
    const long long p = pid->get<long long>();
    const bool alive = p > 0 && (::kill(static_cast<pid_t>(p), 0) == 0 || errno == EPERM);
    if (!alive) return {{"state", "none"}};
    if (running) return {{"state", "live"}, {"pid", p}};
    // Idle since its last turn ended, which is when the record was written.
    return {{"state", "idle"}, {"pid", p}, {"since", r.updated_at}};
  }
  if (auto at = r.adapter.find("evictedAt"); at != r.adapter.end() && at->is_string()) {
    return {{"state", "evicted"}, {"since", *at}};
  }
  return {{"state", "none"}};
}

int sessions_command(const std::string& state_dir, const std::string& format, bool all) {
  UniqueFd root;
  std::unique_ptr<StateDb> db;
  if (!open_for_query(state_dir, root, db)) return 1;
  if (!db) return 0;
  std::map<std::string, SessionRecord> records = session_records(*db);
  // Run counts per session.
  auto counted = db->run_counts();
  if (!counted) std::fprintf(stderr, "harnessd: %s\n", counted.error().message.c_str());
  std::map<std::string, std::map<std::string, int>> counts = counted ? std::move(*counted) : decltype(counts){};
  // Which live process serves each session.
  std::map<std::string, StateDb::Lease> served;
  if (auto leases = db->leases()) {
    for (auto& lease : *leases) {
      if (!daemon_instance_alive(root.get(), lease.owner)) continue;
      std::string id = lease.session_id;
      served.emplace(std::move(id), std::move(lease));
    }
  }
  std::vector<std::vector<std::string>> rows = {
      {"SESSION", "NAME", "HARNESS", "STATE", "ADAPTER", "UPDATED (UTC)", "RUNS", "CWD"}};
  for (const auto& [id, r] : records) {
    if (r.closed && !all) continue;
    json runs = counts.count(id) ? json(counts[id]) : json::object();
    const bool is_served = served.count(id) > 0;
    const json adapter = adapter_state(r, is_served, runs.value(run_event::kStarted, 0) > 0);
    if (format == "json") {
      json out = r.to_json();
      out["version"] = 1;
      out["runs"] = runs;
      out["adapterState"] = adapter;
      if (auto lease = served.find(id); lease != served.end()) {
        out["servedBy"] = {{"pid", lease->second.pid}, {"instance", lease->second.owner}, {"since", lease->second.since}};
      }
      print_line(out.dump());
      continue;
    }
    // The session's name, else the host's name for it.
    std::string name = r.name.value_or(r.host_session.value_or("-"));
    std::string summary;
    for (auto& [state, n] : runs.items()) {
      summary += (summary.empty() ? "" : ", ") + std::to_string(n.get<int>()) + " " + (state == "timeout" ? "timed out" : state);
    }
    auto lease = served.find(id);
    std::string state = r.closed ? "closed"
                        : lease != served.end() ? "open, served by pid " + std::to_string(lease->second.pid)
                                                : "open";
    std::string adapter_text = adapter.value("state", "none");
    if (adapter.contains("since")) adapter_text += " since " + short_time(adapter["since"].get<std::string>());
    if (adapter.contains("pid")) adapter_text += " (pid " + std::to_string(adapter["pid"].get<long long>()) + ")";
    std::string harness = r.harness.empty() ? "-" : r.harness;
    if (r.worker_host) harness += " on " + harnesses::host_label(*r.worker_host);
    rows.push_back({id, name, harness, state, adapter_text, short_time(r.updated_at),
                    summary.empty() ? "none" : summary, r.cwd.empty() ? "-" : r.cwd});
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


int status_command(const std::string& state_dir, const std::string& format, const std::optional<json>& server) {
  UniqueFd root;
  std::unique_ptr<StateDb> db;
  if (!open_for_query(state_dir, root, db)) return 1;
  json out = {{"version", 1}, {"stateDir", state_dir}};
  std::map<std::string, long long> daemons = root ? live_daemons(root.get()) : std::map<std::string, long long>{};
  std::map<std::string, std::size_t> served_by;  // instance: sessions
  std::map<std::string, SessionRecord> records;
  std::map<std::string, std::map<std::string, int>> counts;
  std::map<std::string, bool> served;
  if (db) {
    records = session_records(*db);
    if (auto counted = db->run_counts()) counts = std::move(*counted);
    if (auto leases = db->leases()) {
      for (const auto& lease : *leases) {
        if (!daemons.count(lease.owner)) continue;
        ++served_by[lease.owner];
        served[lease.session_id] = true;
      }
    }
  }
  std::map<long long, json> breakers = root ? daemon_harnesses(root.get()) : std::map<long long, json>{};
  json daemon_list = json::array();
  std::string unavailable;
  for (const auto& [instance, pid] : daemons) {
    json entry = {{"instance", instance}, {"pid", pid}, {"sessions", served_by[instance]}};
    if (auto b = breakers.find(pid); b != breakers.end()) {
      entry["harnesses"] = b->second;
      for (const auto& [name, breaker] : b->second.items()) {
        std::string text = unavailable_text(breaker);
        if (!text.empty()) unavailable += (unavailable.empty() ? "" : "; ") + name + " (pid " + std::to_string(pid) + ") " + text;
      }
    }
    daemon_list.push_back(std::move(entry));
  }
  out["daemons"] = daemon_list;
  std::size_t open = 0, closed = 0;
  std::map<std::string, std::size_t> adapters = {{"live", 0}, {"idle", 0}, {"evicted", 0}, {"none", 0}};
  for (const auto& [id, r] : records) {
    r.closed ? ++closed : ++open;
    if (r.closed) continue;
    auto c = counts.find(id);
    const bool running = c != counts.end() && c->second.count(run_event::kStarted) && c->second.at(run_event::kStarted) > 0;
    ++adapters[adapter_state(r, served.count(id) > 0, running).value("state", "none")];
  }
  out["sessions"] = {{"open", open}, {"served", served.size()}, {"closed", closed}};
  out["adapters"] = adapters;
  std::map<std::string, long long> runs;
  for (const auto& [id, by_state] : counts) {
    for (const auto& [state, n] : by_state) runs[state] += n;
  }
  out["runs"] = runs;
  std::string server_text = "none listening";
  if (server) {
    const std::size_t clients = (*server)["clients"].is_array() ? (*server)["clients"].size() : 0;
    out["server"] = {{"pid", (*server)["pid"]},
                     {"startedAt", (*server)["startedAt"]},
                     {"uptimeMs", (*server)["uptimeMs"]},
                     {"clients", (*server)["clients"].is_array() ? (*server)["clients"] : json::array()},
                     {"sessions", (*server)["sessions"].size()},
                     {"running", (*server)["running"]},
                     {"queued", (*server)["queued"]}};
    server_text = "pid " + (*server)["pid"].dump() + ", up " +
                  std::to_string((*server)["uptimeMs"].get<long long>() / 1000) + " s, " + std::to_string(clients) +
                  " clients, " + std::to_string((*server)["sessions"].size()) + " sessions open";
  }
  if (format == "json") {
    print_line(out.dump());
    return 0;
  }
  std::string daemon_text = std::to_string(daemons.size()) + " running";
  for (const auto& d : daemon_list) {
    daemon_text += (&d == &daemon_list[0] ? ": " : ", ") + std::string("pid ") + std::to_string(d["pid"].get<long long>()) +
                   " (" + std::to_string(d["sessions"].get<std::size_t>()) + " sessions)";
  }
  std::string run_text;
  for (const char* state : {run_event::kStarted, run_event::kQueued, run_event::kCompleted, run_event::kFailed,
                            run_event::kCancelled, run_event::kTimeout, run_event::kInterrupted}) {
    if (!runs.count(state)) continue;
    run_text += (run_text.empty() ? "" : ", ") + std::to_string(runs[state]) + " " +
                (std::string(state) == run_event::kStarted ? "running" : state);
  }
  print_table({{"state directory", state_dir},
               {"server", server_text},
               {"daemons", daemon_text},
               {"sessions", std::to_string(open) + " open (" + std::to_string(served.size()) + " served), " +
                                std::to_string(closed) + " closed"},
               {"adapters", std::to_string(adapters["live"]) + " live, " + std::to_string(adapters["idle"]) +
                                " idle, " + std::to_string(adapters["evicted"]) + " evicted"},
               {"runs", run_text.empty() ? "none" : run_text},
               {"harnesses", unavailable.empty() ? "all available" : unavailable}});
  return 0;
}

namespace {

// `harnessd show RUN --export DIR`: the run's files as a folder.
int export_run(const segment::Run& run, const std::string& run_id, const std::string& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(to, ec) && !fs::is_empty(to, ec)) {
    std::fprintf(stderr, "harnessd: %s is not empty; give a new or empty folder\n", to.c_str());
    return 1;
  }
  // Recordings hold whatever the host sent: the folder is the user's alone.
  fs::create_directories(to, ec);
  if (!ec) fs::permissions(to, fs::perms::owner_all, ec);
  if (ec) {
    std::fprintf(stderr, "harnessd: cannot create %s: %s\n", to.c_str(), ec.message().c_str());
    return 1;
  }
  for (const auto& [name, bytes] : run.files) {
    // Names come from the recording: only plain relative paths are written.
    const fs::path rel(name);
    bool plain = !rel.empty() && rel.is_relative();
    for (const auto& part : rel) plain = plain && part != ".." && part != ".";
    if (!plain) continue;
    const fs::path file = fs::path(to) / rel;
    fs::create_directories(file.parent_path(), ec);
    if (!ec) fs::permissions(file.parent_path(), fs::perms::owner_all, ec);
    std::ofstream out(file, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (out) fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write, ec);
    if (!out || ec) {
      std::fprintf(stderr, "harnessd: cannot write %s\n", file.c_str());
      return 1;
    }
  }
  print_line("wrote " + std::to_string(run.files.size()) + " file(s) of " + run_id + " to " + to);
  return 0;
}

}  // namespace

int show_command(const std::string& state_dir, const std::string& run_id, const std::string& format,
                 const std::string& file, const std::string& export_to) {
  UniqueFd root;
  std::unique_ptr<StateDb> db;
  if (!open_for_query(state_dir, root, db)) return 1;
  // The ledger says who ran it and when, also for a run still queued.
  std::optional<RunRecord> found;
  if (db && acp::is_safe_id(run_id)) {
    auto stored = db->find_run(run_id);
    if (!stored) {
      std::fprintf(stderr, "harnessd: %s\n", stored.error().message.c_str());
      return 1;
    }
    found = std::move(*stored);
  }
  const RunRecord* run = found ? &*found : nullptr;
  if (!run) {
    std::fprintf(stderr, "harnessd: no run %s is recorded in %s\n", run_id.c_str(), state_dir.c_str());
    return 1;
  }
  if (!file.empty() || !export_to.empty()) {
    const segment::Run files = read_run_files(root.get(), run_id, run->sessionId);
    if (!export_to.empty()) return export_run(files, run_id, export_to);
    auto it = files.files.find(file);
    if (it == files.files.end()) {
      std::fprintf(stderr, "harnessd: run %s has no %s\n", run_id.c_str(), file.c_str());
      return 1;
    }
    return acp::write_all(1, it->second) == 0 ? 0 : 1;
  }
  const std::string dir = recording_of(root.get(), run_id, run->sessionId);
  const RunRecording rec = read_run_recording(root.get(), run_id, run->sessionId);
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
