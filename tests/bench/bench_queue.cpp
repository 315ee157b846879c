// Queue benchmarks: prints figures, asserts nothing. Measures the hand-off
// between two prompts of one session (adapter time excluded), prompts per
// second on one session and across 100 sessions, harnessd's CPU per prompt
// beside a bare relay's (the floor), harnessd's memory with 1,000 sessions
// of 10 queued prompts, and the initialize round trip.
// Usage: bench_queue [--quick] [--harnessd PATH] [--only handoff|throughput|floor|memory]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

json prompt_message(int id, const std::string& sid, const std::string& text) {
  return {{"jsonrpc", "2.0"},
          {"id", id},
          {"method", "session/prompt"},
          {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", text}}}}}}};
}

// Reads until `n` answers have arrived.
void await_answers(Daemon& d, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    auto m = d.recv(60s);
    if (!m) throw std::runtime_error("harnessd stopped answering");
    if (m->contains("id") && !m->contains("method")) ++got;
  }
}

long status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// Where the state directory goes: "disk" (the temporary directory) or
// "memory" (/dev/shm), to tell harnessd's own cost from the disk's.
std::string state_dir_in(const std::string& where, TempDir& disk) {
  if (where == "disk") return disk.path() + "/state";
  std::string tmpl = "/dev/shm/harnessd-bench-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("no /dev/shm");
  return tmpl;
}

void remove_dir(const std::string& dir) {
  if (dir.rfind("/dev/shm/", 0) == 0) std::filesystem::remove_all(dir);
}

void handoff(bool quick, const std::string& where) {
  TempDir dir;
  std::string timing = dir.path() + "/timing.log";
  std::string state = state_dir_in(where, dir);
  Daemon d(fake_config({"--timing-file", timing}), {"--log-level", "warn"}, state);
  d.initialize();
  std::string sid = d.new_session();
  d.prompt(sid, "echo warm");
  int rounds = quick ? 20 : 200;
  int id = 1;
  for (int r = 0; r < rounds; ++r) {
    std::string batch;
    for (int i = 0; i < 17; ++i) batch += prompt_message(id++, sid, "echo x").dump() + "\n";
    d.send_raw(batch);
    await_answers(d, 17);
  }
  // Pairs "answer" then "prompt" inside one batch: the next prompt was
  // already queued, so the gap is harnessd's hand-off plus two pipe hops.
  std::ifstream in(timing);
  std::vector<std::pair<long long, std::string>> events;
  long long ns;
  std::string what;
  while (in >> ns >> what) events.emplace_back(ns, what);
  std::vector<double> gaps;
  int in_batch = 0;
  for (std::size_t i = 1; i < events.size(); ++i) {
    if (events[i].second == "prompt") ++in_batch;
    if (events[i].second == "prompt" && events[i - 1].second == "answer" && (in_batch - 1) % 17 != 0) {
      gaps.push_back(static_cast<double>(events[i].first - events[i - 1].first) / 1000.0);
    }
  }
  std::printf("  state on %s: %zu hand-offs: p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us\n", where.c_str(),
              gaps.size(), percentile(gaps, 0.5), percentile(gaps, 0.9), percentile(gaps, 0.99),
              percentile(gaps, 1.0));
  d.close_stdin();
  d.wait_exit(60s);
  remove_dir(state);
}

struct Throughput {
  double per_second = 0;
  double cpu_us_per_prompt = 0;  // harnessd's own CPU, all threads
  double adapter_us_per_prompt = 0;  // the fake agents' CPU
  double commits_per_prompt = 0;  // state database transactions, as harnessd logs them when it stops
};

// "state database: W writes in C commits", which harnessd logs (info) when it stops.
long commits_logged(const std::string& log) {
  auto at = log.rfind(" commits");
  if (at == std::string::npos) return -1;
  auto start = log.rfind(' ', at - 1);
  return std::stol(log.substr(start + 1, at - start - 1));
}

// The CPU of the fake agents below `root` (the guard between them and
// harnessd included in the walk, not in the sum).
long long adapters_cpu_us(pid_t root) {
  std::map<pid_t, pid_t> parent;
  std::map<pid_t, std::string> name;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f("/proc/" + pid + "/stat");
    std::string stat;
    if (!std::getline(f, stat) || stat.rfind(')') == std::string::npos) continue;
    const auto open = stat.find('(');
    const auto close = stat.rfind(')');
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    parent[std::stoi(pid)] = ppid;
    name[std::stoi(pid)] = stat.substr(open + 1, close - open - 1);
  }
  long long sum = 0;
  for (const auto& [pid, comm] : name) {
    if (comm != "fake_agent") continue;
    for (pid_t up = parent[pid]; up > 1; up = parent.count(up) ? parent[up] : 0) {
      if (up == root) {
        sum += cpu_us(pid);
        break;
      }
    }
  }
  return sum;
}

// Keeps up to `window` prompts in flight per session until `per_session`
// have been answered on each. `bare`: through the bare relay instead of
// harnessd, the floor a relay with nothing of harnessd's costs here.
Throughput throughput(int sessions, int per_session, int window, const std::string& where, bool bare = false) {
  TempDir dir;
  std::string state = state_dir_in(where, dir);
  const std::string harnessd = harnessd_exe();
  if (bare) set_harnessd_exe(BARE_RELAY_EXE);
  Daemon d(fake_config({}, "", "max_concurrent_runs = 128\nmax_queue_depth = 1024\n"), {"--log-level", "info"}, state);
  set_harnessd_exe(harnessd);
  if (bare) d.skip_ledger_check();
  d.initialize();
  std::vector<std::string> sids;
  for (int s = 0; s < sessions; ++s) sids.push_back(d.new_session());
  for (const auto& sid : sids) d.prompt(sid, "echo warm");  // adapters up: measure the queue, not spawning
  std::map<int, int> session_of;
  std::vector<int> sent(sessions, 0), done(sessions, 0);
  int id = 1;
  auto top_up = [&](int s) {
    std::string batch;
    while (sent[s] < per_session && sent[s] - done[s] < window) {
      session_of[id] = s;
      batch += prompt_message(id++, sids[s], "echo x").dump() + "\n";
      ++sent[s];
    }
    if (!batch.empty()) d.send_raw(batch);
  };
  auto start = Clock::now();
  const long long cpu_before = cpu_us(d.pid());
  const long long adapters_before = adapters_cpu_us(d.pid());
  for (int s = 0; s < sessions; ++s) top_up(s);
  long total = 0;
  while (total < static_cast<long>(sessions) * per_session) {
    auto m = d.recv(60s);
    if (!m) throw std::runtime_error("harnessd stopped answering");
    if (!m->contains("id") || m->contains("method")) continue;
    int s = session_of.at((*m)["id"].get<int>());
    ++done[s];
    ++total;
    top_up(s);
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const long long cpu = cpu_us(d.pid()) - cpu_before;
  const long long adapters = adapters_cpu_us(d.pid()) - adapters_before;
  d.close_stdin();
  d.wait_exit(60s);
  remove_dir(state);
  // The warm-up prompts are counted too: a little over the steady state.
  const long commits = commits_logged(d.stderr_text());
  return {static_cast<double>(total) / secs, static_cast<double>(cpu) / static_cast<double>(total),
          static_cast<double>(adapters) / static_cast<double>(total),
          static_cast<double>(commits) / static_cast<double>(total)};
}

// harnessd beside its floor, interleaved: one session, 16 prompts in
// flight, through harnessd and through the bare relay, with what the
// adapter itself costs per prompt in each. The adapter does a little of
// what a relay does (a line read and parsed, two written), so its figure
// says what a read, a parse and a write cost on this machine.
void print_floor(int prompts, const std::string& where) {
  std::vector<Throughput> own, bare;
  for (int i = 0; i < 3; ++i) {
    own.push_back(throughput(1, prompts, 16, where));
    bare.push_back(throughput(1, prompts, 16, where, true));
  }
  auto row = [](const char* what, const std::vector<Throughput>& runs) {
    std::printf("  %s: CPU per prompt", what);
    for (const auto& r : runs) std::printf(" %.0f", r.cpu_us_per_prompt);
    std::printf(" us; the adapter's");
    for (const auto& r : runs) std::printf(" %.0f", r.adapter_us_per_prompt);
    std::printf(" us; prompts/s");
    for (const auto& r : runs) std::printf(" %.0f", r.per_second);
    std::printf("\n");
  };
  std::printf("harnessd beside a bare relay (no store, no queue: the floor), state on %s, one session, 16 in flight\n",
              where.c_str());
  row("harnessd", own);
  row("bare relay", bare);
}

// Three runs: on a shared machine the spread says as much as the figure.
void print_throughput(const char* what, int sessions, int per_session, int window, const std::string& where) {
  std::printf("  state on %s, %s, ", where.c_str(), what);
  if (window > 16) {
    std::printf("%d prompts each sent at once:", per_session);
  } else {
    std::printf("%d in flight%s:", window, sessions > 1 ? " each" : "");
  }
  std::vector<Throughput> runs;
  for (int i = 0; i < 3; ++i) runs.push_back(throughput(sessions, per_session, window, where));
  for (const auto& r : runs) std::printf(" %.0f", r.per_second);
  std::printf(" prompts/s; harnessd CPU per prompt");
  for (const auto& r : runs) std::printf(" %.0f", r.cpu_us_per_prompt);
  std::printf(" us; database commits per prompt");
  for (const auto& r : runs) {
    if (r.commits_per_prompt < 0) {
      std::printf(" ?");  // a build that does not log its commits
    } else {
      std::printf(" %.2f", r.commits_per_prompt);
    }
  }
  std::printf("\n");
}

void memory(bool quick) {
  int sessions = quick ? 200 : 1000;
  Daemon d(fake_config({}, "", "max_concurrent_runs = 32\n"), {"--log-level", "warn"});
  d.initialize();
  long idle = status_kb(d.pid(), "VmRSS");
  std::vector<std::string> sids;
  for (int s = 0; s < sessions; ++s) {
    sids.push_back(d.new_session("/tmp", {{"harnessd", {{"name", "bench:" + std::to_string(s)}}}}));
  }
  // The first prompt of each session runs long, so the other ten wait.
  std::string batch;
  int id = 1;
  for (int s = 0; s < sessions; ++s) {
    batch += prompt_message(id++, sids[s], "slow 60000").dump() + "\n";
    for (int i = 0; i < 10; ++i) batch += prompt_message(id++, sids[s], "echo queued").dump() + "\n";
  }
  d.send_raw(batch);
  // Wait until harnessd has read everything: the sessions list reports it.
  for (;;) {
    d.send({{"jsonrpc", "2.0"}, {"id", "q"}, {"method", "_harnessd/sessions/list"}, {"params", json::object()}});
    json r = d.recv_reply("q");
    if (r["result"]["queued"].get<long>() + r["result"]["running"].get<long>() >= sessions * 11L - 32) break;
    usleep(100000);
  }
  long rss = status_kb(d.pid(), "VmRSS");
  long hwm = status_kb(d.pid(), "VmHWM");
  std::printf("memory of harnessd\n");
  std::printf("  idle after initialize: %ld KiB RSS\n", idle);
  std::printf("  %d sessions, 10 queued prompts each, 32 running: %ld KiB RSS, peak %ld KiB\n", sessions, rss, hwm);
  d.close_stdin();
  await_answers(d, static_cast<std::size_t>(sessions) * 11);  // every prompt answered "cancelled"
  d.wait_exit(60s);
}

void initialize_round_trip() {
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    auto start = Clock::now();
    Daemon d(fake_config(), {"--log-level", "warn"});
    d.initialize();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::printf("initialize round trip from process start: p50 %.1f ms, max %.1f ms (20 starts)\n", percentile(ms, 0.5),
              percentile(ms, 1.0));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string only;  // one part: handoff, throughput or memory
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--harnessd" && i + 1 < argc) {
      set_harnessd_exe(argv[++i]);  // another build (its guard beside it), for a before/after
    } else if (arg == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_queue [--quick] [--harnessd PATH] [--only handoff|throughput|floor|memory]\n");
      return 2;
    }
  }
  auto part = [&](const char* name) { return only.empty() || only == name; };
  try {
    if (only.empty()) initialize_round_trip();
    // Every run writes its recording (folder, request, events, result) and
    // its ledger lines; the answer waits for result.json and the terminal
    // line. On memory that costs little; on a slow disk it dominates.
    if (part("handoff")) {
      std::printf("hand-off between two prompts of one session (adapter answer -> next prompt at the adapter)\n");
      for (const char* where : {"memory", "disk"}) handoff(quick, where);
    }
    // The host is this program, which reads and writes whole batches: a
    // prompt costs it far less than it costs harnessd and the fake agent.
    if (part("throughput")) {
      std::printf("throughput with the instant fake agent (three runs)\n");
      for (const char* where : {"memory", "disk"}) {
        print_throughput("one session", 1, quick ? 300 : 2000, 16, where);
        print_throughput("10 sessions", 10, quick ? 60 : 300, 16, where);
        print_throughput("10 sessions", 10, quick ? 100 : 500, quick ? 100 : 500, where);
        print_throughput("100 sessions", 100, quick ? 10 : 30, 16, where);
      }
    }
    if (part("floor")) print_floor(quick ? 1000 : 5000, "memory");
    if (part("memory")) memory(quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_queue: %s\n", e.what());
    return 1;
  }
  return 0;
}
