// Many sessions on one machine: what a daemon holds after N sessions with
// one prompt each (processes and memory of its whole tree), with the
// default cap on live adapters and without one; and the latency of
// session/new plus a first prompt on an adapter that takes 300 ms to
// start, with and without warm adapters. Prints figures; asserts nothing.
//
//   bench_sessions [--quick]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

using namespace harnessd::test;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

struct Tree {
  std::size_t processes = 0;
  long rss_kib = 0;        // the whole tree
  long daemon_rss_kib = 0;  // harnessd alone
};

void add_tree(pid_t pid, Tree& t) {
  ++t.processes;
  long rss = status_kib(pid, "VmRSS");
  if (rss > 0) t.rss_kib += rss;
  for (const auto& [child, name] : children_of(pid)) add_tree(child, t);
}

Tree measure(pid_t daemon) {
  Tree t;
  add_tree(daemon, t);
  t.daemon_rss_kib = status_kib(daemon, "VmRSS");
  return t;
}

json request_of(int id, const std::string& method, const json& params) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
}

// N sessions, one prompt each, all sent at once; the tree once every
// prompt is answered and the daemon has settled.
Tree sessions_with_one_prompt(int n, const std::string& daemon_toml, double* seconds) {
  Daemon d(fake_config({}, "", daemon_toml), {"--log-level", "warn"});
  d.skip_ledger_check();
  d.initialize();
  std::vector<std::string> sids;
  sids.reserve(n);
  for (int i = 0; i < n; ++i) sids.push_back(d.new_session("/tmp"));
  auto start = Clock::now();
  std::string batch;
  for (int i = 0; i < n; ++i) {
    batch += request_of(i + 1, "session/prompt",
                        {{"sessionId", sids[i]}, {"prompt", {{{"type", "text"}, {"text", "echo x"}}}}})
                 .dump() +
             "\n";
  }
  d.send_raw(batch);
  int answered = 0;
  while (answered < n) {
    auto m = d.recv(std::chrono::seconds(120));
    if (!m) {
      std::fprintf(stderr, "bench_sessions: no answer after %d of %d\n", answered, n);
      break;
    }
    if (m->contains("id") && !m->contains("method")) ++answered;
  }
  *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Evicted adapters finish exiting.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Tree t = measure(d.pid());
  d.close_stdin();
  d.wait_exit(std::chrono::seconds(120));
  return t;
}

double percentile_ms(std::vector<double> v, double p) { return percentile(std::move(v), p); }

// session/new then one prompt, `rounds` times, on an adapter that takes
// 300 ms to initialize; with warm > 0 each round waits for the pool to be
// full again first (the steady state of a host opening sessions now and
// then).
std::vector<double> first_prompt_ms(int warm, int rounds) {
  std::string extra = warm > 0 ? "warm = " + std::to_string(warm) + "\n" : "";
  Daemon d(fake_config({"--init-delay", "300"}, extra, ""), {"--log-level", "warn"});
  d.skip_ledger_check();
  d.initialize();
  auto pool_ready = [&] {
    json req = request_of(999999, "_harnessd/sessions/list", json::object());
    d.send(req);
    json a = d.recv_reply(999999);
    return a["result"]["harnesses"].value("fake", json::object()).value("warm", json::object()).value("ready", 0);
  };
  std::vector<double> out;
  for (int r = 0; r < rounds; ++r) {
    if (warm > 0) {
      auto until = Clock::now() + std::chrono::seconds(10);
      while (pool_ready() < warm && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto start = Clock::now();
    std::string sid = d.new_session("/tmp");
    json answer = d.prompt(sid, "echo first");
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    if (!answer.contains("result")) std::fprintf(stderr, "bench_sessions: %s\n", answer.dump().c_str());
  }
  d.close_stdin();
  d.wait_exit(std::chrono::seconds(30));
  return out;
}

void print_tree(const char* label, int n, const Tree& t, double seconds) {
  std::printf("  %-34s %6d sessions: %5zu processes, tree RSS %8.1f MiB (%.3f MiB/session), harnessd %6.1f MiB, %.1f s\n",
              label, n, t.processes, t.rss_kib / 1024.0, t.rss_kib / 1024.0 / n, t.daemon_rss_kib / 1024.0, seconds);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("sessions with one prompt each (instant adapter), the whole tree once all are answered:\n");
  double secs = 0;
  // The old behaviour: every session keeps its adapter and guard.
  Tree uncapped = sessions_with_one_prompt(1000, "max_live_adapters = 100000\nadapter_idle_ttl = 0\n", &secs);
  print_tree("no cap (as before eviction)", 1000, uncapped, secs);
  Tree capped = sessions_with_one_prompt(1000, "", &secs);
  print_tree("default max_live_adapters", 1000, capped, secs);
  std::printf("  ratio at 1,000 sessions: %.1fx fewer processes, %.1fx less memory\n",
              static_cast<double>(uncapped.processes) / capped.processes,
              static_cast<double>(uncapped.rss_kib) / capped.rss_kib);
  if (!quick) {
    Tree big = sessions_with_one_prompt(10000, "", &secs);
    print_tree("default max_live_adapters", 10000, big, secs);
  }

  const int rounds = quick ? 5 : 15;
  std::printf("session/new + first prompt, adapter with a 300 ms start (%d rounds each):\n", rounds);
  std::vector<double> cold = first_prompt_ms(0, rounds);
  std::vector<double> warm = first_prompt_ms(2, rounds);
  std::printf("  cold: p50 %7.1f ms, p90 %7.1f ms\n", percentile_ms(cold, 0.5), percentile_ms(cold, 0.9));
  std::printf("  warm: p50 %7.1f ms, p90 %7.1f ms  (warm = 2; %.1fx faster at p50)\n", percentile_ms(warm, 0.5),
              percentile_ms(warm, 0.9), percentile_ms(cold, 0.5) / percentile_ms(warm, 0.5));
  return 0;
}
