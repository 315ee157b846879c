// Backpressure end to end (issue 11): a host that stops reading must not
// make harnessd's memory grow without limit, and a host that reads must get
// a live stream while an adapter floods. Every update arrives exactly once,
// in order, in both cases. Scaled down from the acceptance figures
// (tests/bench/bench_relay.cpp has the full scale) so it stays quick under
// the sanitizers.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

// Under AddressSanitizer freed memory sits in a quarantine of up to 256 MiB,
// which would count as growth here; a small one keeps RSS about live data.
// Restored once the daemon has started (a no-op without the sanitizer).
struct SmallQuarantine {
  std::string saved;
  bool had = false;
  SmallQuarantine() {
    if (const char* v = std::getenv("ASAN_OPTIONS")) {
      had = true;
      saved = v;
    }
    std::string opts = had ? saved + ":" : "";
    setenv("ASAN_OPTIONS", (opts + "quarantine_size_mb=8:thread_local_quarantine_size_kb=64").c_str(), 1);
  }
  ~SmallQuarantine() {
    if (had) {
      setenv("ASAN_OPTIONS", saved.c_str(), 1);
    } else {
      unsetenv("ASAN_OPTIONS");
    }
  }
};

json prompt_request(int id, const std::string& sid, const std::string& text) {
  return {{"jsonrpc", "2.0"},
          {"id", id},
          {"method", "session/prompt"},
          {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", text}}}}}}};
}

// The text of an agent_message_chunk update, or "" for anything else.
std::string chunk_text(const json& m) {
  if (m.value("method", "") != "session/update") return "";
  const json& u = m["params"]["update"];
  if (u.value("sessionUpdate", "") != "agent_message_chunk") return "";
  return u["content"].value("text", "");
}

// Reads the flood's updates and answer: checks that chunk 1..n arrive once
// each, in order, then "flood done <ms>", then the answer. Calls `seen(i)`
// as chunk i arrives. Returns the adapter's "done" time.
template <class Seen>
long long read_flood(Daemon& d, int id, long n, Seen seen) {
  long next = 1;
  long long done_ms = -1;
  for (;;) {
    auto m = d.recv(120s);
    INFO("waiting for chunk " << next << " of " << n);
    REQUIRE(m);
    if (m->contains("id") && (*m)["id"] == id && !m->contains("method")) {
      REQUIRE((*m)["result"]["stopReason"] == "end_turn");
      break;
    }
    std::string text = chunk_text(*m);
    if (text.rfind("flood done ", 0) == 0) {
      REQUIRE(next == n + 1);
      done_ms = std::stoll(text.substr(11));
      continue;
    }
    if (text.empty()) continue;
    // "chunk <i>" or "chunk <i> xxx...": one each, in order.
    REQUIRE(text.rfind("chunk ", 0) == 0);
    long i = std::strtol(text.c_str() + 6, nullptr, 10);
    if (i != next) FAIL("chunk " << i << " arrived where chunk " << next << " was due");
    seen(i);
    ++next;
  }
  REQUIRE(next == n + 1);
  REQUIRE(done_ms > 0);
  return done_ms;
}

}  // namespace

TEST_CASE("backpressure: a host that stops reading keeps harnessd's memory bounded, and loses nothing") {
  constexpr long kUpdates = 200000;
  constexpr int kPad = 300;  // ~430-byte lines: ~86 MB through harnessd
  // docs/architecture.md: with the default 8 MiB high-water mark the
  // queues hold at most ~16 MiB (host output and store lanes), and a
  // release build grows by ~25 MiB at full scale; the rest is slack for the
  // sanitizers' redzones and quarantine. Before the fix this run grew by
  // ~180 MiB.
  constexpr long kBoundKiB = 96 * 1024;
  SmallQuarantine quarantine;
  Daemon d(fake_config(), {"--log-level", "info"});
  d.initialize();
  std::string sid = d.new_session();
  long base = status_kib(d.pid(), "VmRSS");
  REQUIRE(base > 0);

  d.send(prompt_request(7, sid, "flood " + std::to_string(kUpdates) + " " + std::to_string(kPad)));
  // The host reads nothing for 5 s while the adapter floods.
  long peak = base;
  auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    peak = std::max(peak, status_kib(d.pid(), "VmRSS"));
    std::this_thread::sleep_for(50ms);
  }
  long paused_peak = peak;
  read_flood(d, 7, kUpdates, [&](long i) {
    if (i % 5000 == 0) peak = std::max(peak, status_kib(d.pid(), "VmRSS"));
  });
  long hwm = status_kib(d.pid(), "VmHWM");
  INFO("RSS before the flood " << base << " KiB, peak while paused " << paused_peak << " KiB, peak sampled " << peak
                               << " KiB, VmHWM " << hwm << " KiB");
  CHECK(peak - base < kBoundKiB);
  CHECK(hwm - base < kBoundKiB);
}

TEST_CASE("backpressure: a host that reads gets a live stream while the adapter floods") {
  constexpr long kUpdates = 200000;
  constexpr int kPad = 100;  // ~230-byte lines: ~46 MB
  // A small high-water mark, so how far the adapter may run ahead of the
  // host is small next to the flood: ~1 MiB here, plus the pipes' buffers.
  Daemon d(fake_config({}, "", "queue_high_water = 1048576\nqueue_low_water = 262144\n"), {"--log-level", "info"});
  d.initialize();
  std::string sid = d.new_session();
  d.send(prompt_request(7, sid, "flood " + std::to_string(kUpdates) + " " + std::to_string(kPad)));
  std::vector<long long> arrival;  // wall ms, per chunk
  arrival.reserve(kUpdates);
  long long done_ms = read_flood(d, 7, kUpdates, [&](long) { arrival.push_back(wall_ms()); });

  // What the host had when the adapter's last write returned. With
  // backpressure the adapter can be ahead of the host by the high-water mark
  // and the pipes' buffers only (~2 MiB, under 10,000 lines here), however
  // slow the host or the machine. Without it, the adapter finished while the
  // host had a fraction of the updates (issue 11).
  long before_done = 0;
  for (long long t : arrival) before_done += t <= done_ms ? 1 : 0;
  INFO("the host had " << before_done << " of " << kUpdates << " updates when the adapter finished; the first came "
                       << (done_ms - arrival.front()) << " ms before that");
  CHECK(kUpdates - before_done <= kUpdates / 10);
  // Steady delivery: updates came in every second of the flood.
  std::map<long long, long> per_second;
  for (long long t : arrival) {
    if (t <= done_ms) ++per_second[(t - arrival.front()) / 1000];
  }
  long long seconds = (done_ms - arrival.front()) / 1000;
  for (long long s = 0; s < seconds; ++s) {
    INFO("second " << s << " of the flood");
    CHECK(per_second[s] > 0);
  }
}

TEST_CASE("backpressure: an adapter that stops reading holds the host back, and every answer reaches it in order") {
  // The adapter asks the host 160 questions at once and then reads nothing
  // for 4 s; the host answers each with 1 MiB. What harnessd cannot write
  // to the adapter waits in its queue to that adapter; past the high-water
  // mark harnessd stops reading the host, whose writes then block, instead
  // of holding 160 MiB. The same bound as the paused host's.
  constexpr int kQuestions = 160;
  constexpr std::size_t kAnswerBytes = 1u << 20;
  constexpr long kBoundKiB = 96 * 1024;
  SmallQuarantine quarantine;
  Daemon d(fake_config(), {"--log-level", "info"});
  d.initialize({{"fs", {{"readTextFile", true}}}});
  std::string sid = d.new_session();
  long base = status_kib(d.pid(), "VmRSS");
  REQUIRE(base > 0);

  d.send(prompt_request(7, sid, "ask " + std::to_string(kQuestions) + " 4000"));
  std::vector<json> asked;
  while (asked.size() < kQuestions) {
    auto m = d.recv(20s);
    REQUIRE(m);
    if (m->value("method", "") == "fs/read_text_file") asked.push_back(*m);
  }
  std::atomic<bool> answering{true};
  std::atomic<long> peak{base};
  std::thread sampler([&] {
    while (answering) {
      peak = std::max(peak.load(), status_kib(d.pid(), "VmRSS"));
      std::this_thread::sleep_for(20ms);
    }
  });
  // Each answer's content says which question it answers, at its start.
  for (const json& q : asked) {
    std::string content = q["params"]["path"].get<std::string>() + " ";
    content.resize(kAnswerBytes, 'x');
    d.send({{"jsonrpc", "2.0"}, {"id", q["id"]}, {"result", {{"content", std::move(content)}}}});
  }
  std::vector<json> seen;
  json reply = d.recv_reply(7, &seen, 120s);
  answering = false;
  sampler.join();
  long hwm = status_kib(d.pid(), "VmHWM");
  REQUIRE(reply["result"]["stopReason"] == "end_turn");
  CHECK(message_text(seen) == "asked 160 answered 160 bytes " + std::to_string(kQuestions * kAnswerBytes));
  INFO("RSS before " << base << " KiB, peak sampled " << peak.load() << " KiB, VmHWM " << hwm << " KiB");
  CHECK(peak.load() - base < kBoundKiB);
  CHECK(hwm - base < kBoundKiB);
}
