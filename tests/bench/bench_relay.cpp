// Relay benchmarks (issue 11): prints figures, asserts only that every
// update arrived once, in order. (1) The host stops reading for 20 s while
// the adapter floods 1M updates: harnessd's peak RSS. (2) The host reads as
// fast as it can while the adapter floods 1M updates: time to the first
// update, updates/s the host got while the adapter was still writing, and
// the slowest second of the flood. (3) Each of 100,000 updates: harnessd's
// CPU (all its threads) and the bytes it writes to the state directory,
// and the wall time beside the same flood straight to this program.
// (4) Adapter-to-host latency with 1 and 10 sessions streaming at once.
// Usage: bench_relay [--quick] [--cost | --latency] [--harnessd PATH] (--cost: (3)
// only; --latency: (4) only;
// PATH: another build to compare, its harnessd-guard next to it)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <string>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

void start_flood(Daemon& d, const std::string& sid, long n) {
  d.send({{"jsonrpc", "2.0"},
           {"id", 7},
           {"method", "session/prompt"},
           {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", "flood " + std::to_string(n)}}}}}}});
}

// Reads chunk 1..n, "flood done <ms>" and the answer; `seen(i)` per chunk.
// Returns the adapter's done time; throws if anything is missing or out of
// order.
template <class Seen>
long long read_flood(Daemon& d, long n, Seen seen) {
  long next = 1;
  long long done_ms = -1;
  for (;;) {
    auto m = d.recv(300s);
    if (!m) throw std::runtime_error("harnessd stopped at chunk " + std::to_string(next));
    if (m->contains("id") && (*m)["id"] == 7 && !m->contains("method")) break;
    if (m->value("method", "") != "session/update") continue;
    std::string text = (*m)["params"]["update"]["content"].value("text", "");
    if (text.rfind("flood done ", 0) == 0) {
      done_ms = std::stoll(text.substr(11));
      continue;
    }
    long i = std::strtol(text.c_str() + 6, nullptr, 10);
    if (i != next) throw std::runtime_error("chunk " + std::to_string(i) + " where " + std::to_string(next) + " was due");
    seen(i);
    ++next;
  }
  if (next != n + 1 || done_ms < 0) throw std::runtime_error("the flood ended early");
  return done_ms;
}

void paused_host(long n, int pause_s) {
  Daemon d(fake_config(), {"--log-level", "warn"});
  d.initialize();
  std::string sid = d.new_session();
  long base = status_kib(d.pid(), "VmRSS");
  start_flood(d, sid, n);
  long peak = base;
  auto until = Clock::now() + std::chrono::seconds(pause_s);
  while (Clock::now() < until) {
    peak = std::max(peak, status_kib(d.pid(), "VmRSS"));
    std::this_thread::sleep_for(100ms);
  }
  long at_resume = status_kib(d.pid(), "VmRSS");
  auto t0 = Clock::now();
  read_flood(d, n, [&](long i) {
    if (i % 10000 == 0) peak = std::max(peak, status_kib(d.pid(), "VmRSS"));
  });
  double drain_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("paused host: %ld updates, host paused %d s\n", n, pause_s);
  std::printf("  harnessd RSS: %ld KiB before, %ld KiB at the end of the pause, peak sampled %ld KiB, VmHWM %ld KiB\n",
              base, at_resume, peak, status_kib(d.pid(), "VmHWM"));
  std::printf("  everything delivered in order %.1f s after the host resumed\n", drain_s);
}

void live_stream(long n) {
  Daemon d(fake_config(), {"--log-level", "warn"});
  d.initialize();
  std::string sid = d.new_session();
  long long sent = wall_ms();
  start_flood(d, sid, n);
  std::vector<long long> arrival;
  arrival.reserve(static_cast<std::size_t>(n));
  long long done_ms = read_flood(d, n, [&](long) { arrival.push_back(wall_ms()); });
  long long finished = wall_ms();
  long during = 0;
  std::map<long long, long> per_second;
  for (long long t : arrival) {
    if (t > done_ms) continue;
    ++during;
    ++per_second[(t - sent) / 1000];
  }
  long long flood_ms = std::max(1LL, done_ms - sent);
  long slowest = -1;
  for (long long s = 0; s < flood_ms / 1000; ++s) {
    long c = per_second.count(s) ? per_second[s] : 0;
    slowest = slowest < 0 ? c : std::min(slowest, c);
  }
  std::printf("live stream: %ld updates, the host reading as fast as it can\n", n);
  std::printf("  first update %lld ms after the prompt; the adapter wrote for %lld ms\n", arrival.front() - sent, flood_ms);
  std::printf("  during the flood the host got %ld updates (%.0f/s)", during, during * 1000.0 / flood_ms);
  if (slowest >= 0) std::printf(", slowest whole second %ld", slowest);
  std::printf("\n  the rest (%ld) arrived within %lld ms after the adapter finished\n", n - during, finished - done_ms);
}

/// Bytes of the regular files beneath `dir`.
long long bytes_beneath(const std::string& dir) {
  long long total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += static_cast<long long>(e.file_size());
  }
  return total;
}

// The same flood written by the fake agent straight to this program, which
// reads and parses each line as it does harnessd's (Daemon::recv): the
// floor the relay's wall time is compared with. Returns the milliseconds
// from the prompt to its answer.
long long direct_flood_ms(long n) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("cannot create pipes");
  const std::string exe = fake_agent_exe();
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("cannot fork");
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    int quiet = ::open("/dev/null", O_WRONLY);
    dup2(quiet, 2);
    execl(exe.c_str(), exe.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  auto say = [&](const json& m) {
    std::string line = m.dump() + "\n";
    for (std::size_t at = 0; at < line.size();) {
      ssize_t w = ::write(in[1], line.data() + at, line.size() - at);
      if (w <= 0) throw std::runtime_error("the fake agent stopped reading");
      at += static_cast<std::size_t>(w);
    }
  };
  std::string buffer;
  std::size_t at = 0;
  auto next = [&]() -> json {
    for (;;) {
      if (auto nl = buffer.find('\n', at); nl != std::string::npos) {
        json parsed = json::parse(buffer.substr(at, nl - at), nullptr, false);
        at = nl + 1;
        return parsed;
      }
      buffer.erase(0, at);
      at = 0;
      char chunk[65536];
      ssize_t r = ::read(out[0], chunk, sizeof chunk);
      if (r <= 0) throw std::runtime_error("the fake agent closed its output");
      buffer.append(chunk, static_cast<std::size_t>(r));
    }
  };
  auto answer = [&](int id) {
    for (;;) {
      json m = next();
      if (m.value("id", -1) == id && !m.contains("method")) return m;
    }
  };
  say({{"jsonrpc", "2.0"}, {"id", 1}, {"method", "initialize"}, {"params", {{"protocolVersion", 1}}}});
  answer(1);
  say({{"jsonrpc", "2.0"}, {"id", 2}, {"method", "session/new"}, {"params", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}}});
  std::string sid = answer(2)["result"]["sessionId"];
  long long sent = wall_ms();
  say({{"jsonrpc", "2.0"},
       {"id", 7},
       {"method", "session/prompt"},
       {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", "flood " + std::to_string(n)}}}}}}});
  answer(7);
  long long took = wall_ms() - sent;
  ::close(in[1]);
  ::close(out[0]);
  waitpid(pid, nullptr, 0);
  return took;
}

// (3) What one relayed update costs harnessd: its CPU (all threads) and the
// bytes it writes to the state directory, per update; and the wall time
// beside the same flood straight from the adapter.
void relay_cost(long n) {
  const long long direct = direct_flood_ms(n);
  Daemon d(fake_config(), {"--log-level", "warn"});
  d.initialize();
  std::string sid = d.new_session();
  long long cpu_before = cpu_us(d.pid());
  long long disk_before = bytes_beneath(d.state_dir());
  long long sent = wall_ms();
  start_flood(d, sid, n);
  std::size_t frame_bytes = 0;
  read_flood(d, n, [&](long) {});
  for (const auto& line : d.raw_lines()) frame_bytes += line.size() + 1;
  long long wall = wall_ms() - sent;
  long long cpu = cpu_us(d.pid()) - cpu_before;
  long long disk = bytes_beneath(d.state_dir()) - disk_before;
  double per_frame = static_cast<double>(frame_bytes) / static_cast<double>(d.raw_lines().size());
  std::printf("relay cost: %ld updates of %.0f bytes\n", n, per_frame);
  std::printf("  harnessd CPU %.2f us per update (%lld ms in all), wall %lld ms (%.0f updates/s)\n",
              static_cast<double>(cpu) / static_cast<double>(n), cpu / 1000, wall, n * 1000.0 / std::max(1LL, wall));
  std::printf("  written to the state directory: %.0f bytes per update (%.2fx the frame)\n",
              static_cast<double>(disk) / static_cast<double>(n), static_cast<double>(disk) / n / per_frame);
  std::printf("  straight from the adapter to the same host: wall %lld ms; through harnessd %.1fx that\n", direct,
              static_cast<double>(wall) / static_cast<double>(std::max(1LL, direct)));
}

// (4) How long an update takes from the adapter's write to the host's read,
// with `sessions` sessions streaming at once, each adapter writing an
// update every `interval_us` (paced, not a flood: this is latency, not a
// queue draining). The host thread reads and parses every line itself.
void latency(int sessions, long per_session, long interval_us) {
  Daemon d(fake_config({}, "", "max_concurrent_runs = " + std::to_string(sessions)), {"--log-level", "warn"});
  d.initialize();
  std::vector<std::string> sids;
  for (int i = 0; i < sessions; ++i) {
    sids.push_back(d.new_session());
    d.prompt(sids.back(), "echo warm");  // its adapter is up
  }
  int id = 100;
  for (const auto& sid : sids) {
    d.send(request(id++, "session/prompt",
                   {{"sessionId", sid},
                    {"prompt", json::array({{{"type", "text"},
                                             {"text", "paced " + std::to_string(per_session) + " " +
                                                          std::to_string(interval_us)}}})}}));
  }
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(sessions * per_session));
  for (int answered = 0; answered < sessions;) {
    auto m = d.recv(120s);
    const long long now = monotonic_ns();
    if (!m) throw std::runtime_error("harnessd stopped answering");
    if (m->contains("id") && !m->contains("method")) {
      ++answered;
      continue;
    }
    if (m->value("method", "") != "session/update") continue;
    const std::string text = (*m)["params"]["update"]["content"].value("text", "");
    if (text.rfind("at ", 0) == 0) us.push_back(static_cast<double>(now - std::stoll(text.substr(3))) / 1000.0);
  }
  if (us.size() != static_cast<std::size_t>(sessions * per_session)) throw std::runtime_error("updates went missing");
  std::printf("  %2d session(s), an update every %ld us each: %zu updates: p50 %.0f us, p99 %.0f us, max %.0f us\n",
              sessions, interval_us, us.size(), percentile(us, 0.5), percentile(us, 0.99), percentile(us, 1.0));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  bool cost_only = false;
  bool latency_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--cost") == 0) {
      cost_only = true;
    } else if (std::strcmp(argv[i], "--latency") == 0) {
      latency_only = true;
    } else if (std::strcmp(argv[i], "--harnessd") == 0 && i + 1 < argc) {
      set_harnessd_exe(argv[++i]);
    }
  }
  try {
    std::printf("harnessd: %s\n", harnessd_exe().c_str());
    if (!latency_only) relay_cost(100000);
    if (cost_only) return 0;
    std::printf("latency from the adapter's write to the host's read\n");
    latency(1, quick ? 2000 : 10000, 1000);
    latency(10, quick ? 500 : 2000, 5000);
    if (latency_only) return 0;
    paused_host(quick ? 200000 : 1000000, quick ? 5 : 20);
    live_stream(quick ? 200000 : 1000000);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_relay: %s\n", e.what());
    return 1;
  }
  return 0;
}
