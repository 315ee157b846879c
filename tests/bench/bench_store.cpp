// The store's costs that must not grow with history, and hand-offs when
// several processes share one state directory. Prints figures; asserts
// nothing.
//
//   bench_store [--quick]             start-up with a large history, hand-offs
//   bench_store --generate DIR N      writes a state directory holding N ended
//                                     runs (the generator the start-up bench uses)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "acp/files.h"
#include "daemon_process.h"
#include "worker/database.h"
#include "worker/ledger.h"
#include "worker/state_db.h"
#include "worker/state_dir.h"

using namespace harnessd;
using namespace harnessd::test;
using Clock = std::chrono::steady_clock;

namespace {

/// N ended runs (queued, started, completed) in N / 10 sessions, written
/// through the store's own database code, 20,000 runs per transaction.
void generate(const std::string& dir, long runs) {
  ::mkdir(dir.c_str(), 0700);
  auto root = worker::open_state_dir(dir, worker::StateAccess::kOwn);
  if (!root) throw std::runtime_error("cannot open " + dir + ": " + root.error().message);
  auto db = worker::StateDb::open(dir, root->get(), {});
  if (!db) throw std::runtime_error(db.error().message);
  const long sessions = std::max(1L, runs / 10);
  auto start = Clock::now();
  std::vector<worker::LedgerEntry> batch;
  for (long r = 0; r < runs;) {
    auto tx = worker::Transaction::begin((*db)->db());
    if (!tx) throw std::runtime_error(tx.error().message);
    for (long in_tx = 0; in_tx < 20000 && r < runs; ++in_tx, ++r) {
      worker::LedgerEntry e;
      e.runId = "run_gen" + std::to_string(r);
      e.sessionId = "sess_gen" + std::to_string(r % sessions);
      e.harness = "fake";
      e.requestId = r;
      e.daemon = "d_generated";
      e.time = "2026-11-01T00:00:00.000Z";
      for (const char* event : {"queued", "started", "completed"}) {
        e.event = event;
        e.extra = e.event == "completed" ? nlohmann::json{{"stopReason", "end_turn"}} : nlohmann::json::object();
        auto applied = (*db)->apply_one(e);
        if (!applied) throw std::runtime_error(applied.error().message);
      }
    }
    if (auto c = tx->commit(); !c) throw std::runtime_error(c.error().message);
  }
  for (long s = 0; s < sessions; ++s) {
    nlohmann::json record = {{"sessionId", "sess_gen" + std::to_string(s)}, {"harness", "fake"}, {"cwd", "/tmp"},
                             {"closed", true}, {"updatedAt", "2026-11-01T00:00:00.000Z"}};
    if (auto w = (*db)->save_session(record); !w) throw std::runtime_error(w.error().message);
  }
  struct stat st {};
  ::stat((dir + "/state.db").c_str(), &st);
  std::printf("  generated %ld runs in %ld sessions in %.1f s (state.db %.0f MiB)\n", runs, sessions,
              std::chrono::duration<double>(Clock::now() - start).count(),
              static_cast<double>(st.st_size) / (1 << 20));
}

/// `initialize` from process start, and RSS right after, on `state`.
std::pair<double, long> start_once(const std::string& state) {
  auto start = Clock::now();
  Daemon d(fake_config({}, "", "retention = { keep_days = 0, keep_runs = 0 }\n"), {"--log-level", "warn"}, state);
  d.skip_ledger_check();  // reading a million runs back is not what is measured
  d.initialize();
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return {ms, status_kib(d.pid(), "VmRSS")};
}

void startup(bool quick) {
  const long runs = quick ? 100000 : 1000000;
  TempDir big, fresh;
  std::printf("start-up: initialize from process start, fresh state directory vs %ld recorded runs\n", runs);
  generate(big.path() + "/state", runs);
  std::vector<double> fresh_ms, big_ms;
  std::vector<double> fresh_rss, big_rss;
  for (int i = 0; i < 10; ++i) {  // interleaved: the machine's noise falls on both
    auto f = start_once(fresh.path() + "/state");
    auto b = start_once(big.path() + "/state");
    fresh_ms.push_back(f.first);
    big_ms.push_back(b.first);
    fresh_rss.push_back(static_cast<double>(f.second));
    big_rss.push_back(static_cast<double>(b.second));
  }
  std::printf("  fresh:         p50 %.1f ms, max %.1f ms, RSS %.0f KiB\n", percentile(fresh_ms, 0.5),
              percentile(fresh_ms, 1.0), percentile(fresh_rss, 0.5));
  std::printf("  %7ld runs:  p50 %.1f ms, max %.1f ms, RSS %.0f KiB (%+.0f KiB, %.2fx the time)\n", runs,
              percentile(big_ms, 0.5), percentile(big_ms, 1.0), percentile(big_rss, 0.5),
              percentile(big_rss, 0.5) - percentile(fresh_rss, 0.5),
              percentile(big_ms, 0.5) / percentile(fresh_ms, 0.5));
}

/// Hand-offs between queued prompts of one session, timed by the adapter
/// (its answer, then the next prompt's arrival), with `processes` harnessd
/// processes on one state directory, each driving one session.
void handoffs(int processes, bool quick) {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const int rounds = quick ? 20 : 100;
  std::vector<std::vector<double>> gaps(static_cast<std::size_t>(processes));
  std::vector<std::thread> threads;
  for (int p = 0; p < processes; ++p) {
    threads.emplace_back([&, p] {
      const std::string timing = dir.path() + "/timing" + std::to_string(p) + ".log";
      Daemon d(fake_config({"--timing-file", timing}), {"--log-level", "warn"}, state);
      d.initialize();
      const std::string sid = d.new_session();
      d.prompt(sid, "echo warm");
      int id = 1;
      for (int r = 0; r < rounds; ++r) {
        std::string batch;
        for (int i = 0; i < 17; ++i) {
          batch += request(id++, "session/prompt",
                           {{"sessionId", sid}, {"prompt", nlohmann::json::array({{{"type", "text"}, {"text", "echo x"}}})}})
                       .dump() +
                   "\n";
        }
        d.send_raw(batch);
        for (int answered = 0; answered < 17;) {
          auto m = d.recv(60s);
          if (!m) throw std::runtime_error("harnessd stopped answering");
          if (m->contains("id") && !m->contains("method")) ++answered;
        }
      }
      std::ifstream in(timing);
      std::vector<std::pair<long long, std::string>> events;
      long long ns;
      std::string what;
      while (in >> ns >> what) events.emplace_back(ns, what);
      int in_batch = 0;
      for (std::size_t i = 1; i < events.size(); ++i) {
        if (events[i].second == "prompt") ++in_batch;
        if (events[i].second == "prompt" && events[i - 1].second == "answer" && (in_batch - 1) % 17 != 0) {
          gaps[static_cast<std::size_t>(p)].push_back(static_cast<double>(events[i].first - events[i - 1].first) /
                                                      1000.0);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (const auto& g : gaps) all.insert(all.end(), g.begin(), g.end());
  std::printf("  %d process(es) on one state directory: %zu hand-offs: p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us\n",
              processes, all.size(), percentile(all, 0.5), percentile(all, 0.9), percentile(all, 0.99),
              percentile(all, 1.0));
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // figures as they come, also into a file
  try {
    if (argc == 4 && std::string(argv[1]) == "--generate") {
      generate(argv[2], std::stol(argv[3]));
      return 0;
    }
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    startup(quick);
    std::printf("hand-off between two queued prompts of one session, state on disk\n");
    for (int processes : {1, 4}) handoffs(processes, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_store: %s\n", e.what());
    return 1;
  }
  return 0;
}
