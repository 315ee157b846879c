// The shared server (issue 16): prints figures; asserts nothing.
// (1) A cheap request's round trip through a `harnessd --connect` relay
//     against a raw Unix-socket client of the same server, in alternating
//     rounds: p50/p99 of both and what the relay adds.
// (2) Attach: connect + initialize + session/load of a session whose
//     transcript holds 1,000 updates, from connect to the load's answer,
//     each time on a new connection.
// (3) 100 raw clients x 10 sessions x 10 prompts on one server with the
//     instant fake adapter: prompts/s and the server's RSS, with the
//     default limits (adapters evicted) and with room for every adapter.
// (4) `harnessd run --shared` once a server runs against an in-process
//     `harnessd run` and `harnessd --version`, in rotating rounds; the
//     server the first --shared run started is stopped at the end.
//
//   bench_server [--quick] [--harnessd PATH]   (PATH: another build to time)
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

using namespace harnessd::test;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

extern char** environ;

namespace {

double us_since(Clock::time_point t) { return std::chrono::duration<double, std::micro>(Clock::now() - t).count(); }
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

json prompt_params(const std::string& sid, const std::string& text) {
  return {{"sessionId", sid}, {"prompt", json::array({{{"type", "text"}, {"text", text}}})}};
}

json initialize_params() { return {{"protocolVersion", 1}, {"clientCapabilities", json::object()}}; }

// A client of the server on a Unix socket of its own, speaking NDJSON as
// a Daemon is spoken to (poll, then read what is there).
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::string why = std::strerror(errno);
      ::close(fd_);
      throw std::runtime_error("cannot connect to " + path + ": " + why);
    }
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  void send_raw(const std::string& bytes) {
    const char* p = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0) {
      ssize_t n = ::send(fd_, p, left, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("cannot write to the server");
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

  // The next line (without its newline); throws on timeout or EOF.
  std::string_view line(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    auto end = Clock::now() + timeout;
    for (;;) {
      auto nl = buffer_.find('\n', at_);
      if (nl != std::string::npos) {
        std::string_view out(buffer_.data() + at_, nl - at_);
        at_ = nl + 1;
        return out;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) throw std::runtime_error("no line from the server in time");
      pollfd pfd{fd_, POLLIN, 0};
      int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) continue;
      char buf[65536];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("the server closed the connection");
      buffer_.erase(0, at_);
      at_ = 0;
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  int send_request(const std::string& method, const json& params) {
    int id = next_id_++;
    send_raw(request(id, method, params).dump() + "\n");
    return id;
  }

  // Reads until the answer to `id`; notifications before it are counted.
  json answer(int id, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    for (;;) {
      std::string_view l = line(timeout);
      if (is_update(l)) {
        ++notifications_;
        continue;
      }
      json m = json::parse(l, nullptr, false);
      if (m.is_discarded()) throw std::runtime_error("the server wrote a line that is not JSON");
      if (m.contains("method")) {
        ++notifications_;
        continue;
      }
      if (m.contains("id") && m["id"] == id) return m;
    }
  }

  json call(const std::string& method, const json& params) { return answer(send_request(method, params)); }

  static bool is_update(std::string_view l) { return l.find("\"method\":\"session/update\"") != std::string_view::npos; }

  std::size_t notifications() const { return notifications_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buffer_;
  std::size_t at_ = 0;
  int next_id_ = 1;
  std::size_t notifications_ = 0;
};

json must_result(const json& answer, const char* what) {
  if (!answer.contains("result")) throw std::runtime_error(std::string(what) + " failed: " + answer.dump());
  return answer["result"];
}

std::string new_session(RawClient& c) {
  return must_result(c.call("session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}), "session/new")["sessionId"]
      .get<std::string>();
}

// ---- (1) relay latency ----------------------------------------------------

void relay_latency(bool quick) {
  Server server(fake_config(), {"--log-level", "warn"});
  server.skip_ledger_check();
  auto relay = server.client();
  relay->initialize();
  RawClient raw(server.socket());
  must_result(raw.call("initialize", initialize_params()), "initialize");

  // _harnessd/sessions/list: answered by the server at once, from memory.
  const std::string method = "_harnessd/sessions/list";
  int relay_id = 1;
  auto through_relay = [&] {
    auto t = Clock::now();
    int id = relay_id++;
    relay->send(request(id, method, json::object()));
    relay->recv_reply(id);
    return us_since(t);
  };
  auto through_socket = [&] {
    auto t = Clock::now();
    raw.call(method, json::object());
    return us_since(t);
  };
  for (int i = 0; i < 300; ++i) {
    through_relay();
    through_socket();
  }
  // Many short alternating rounds: a burst of load on the machine lands
  // on both sides alike, and the median of the rounds' differences shrugs
  // off the rounds it spoiled.
  const int rounds = quick ? 10 : 40, per_round = 250;
  std::vector<double> r, s, extra;
  for (int round = 0; round < rounds; ++round) {
    std::vector<double> rr, ss;
    for (int side = 0; side < 2; ++side) {
      const bool relay_side = (side == 0) == (round % 2 == 0);
      for (int i = 0; i < per_round; ++i) (relay_side ? rr : ss).push_back(relay_side ? through_relay() : through_socket());
    }
    extra.push_back(percentile(rr, 0.5) - percentile(ss, 0.5));
    r.insert(r.end(), rr.begin(), rr.end());
    s.insert(s.end(), ss.begin(), ss.end());
  }
  double rp50 = percentile(r, 0.5), rp99 = percentile(r, 0.99), sp50 = percentile(s, 0.5), sp99 = percentile(s, 0.99);
  std::printf("(1) %s round trip, %d alternating rounds of %d each way:\n", method.c_str(), rounds, per_round);
  std::printf("  connect relay: p50 %.0f us p99 %.0f us; raw socket: p50 %.0f us p99 %.0f us; extra p50 %.0f us "
              "(%.2fx), p99 %.0f us\n",
              rp50, rp99, sp50, sp99, rp50 - sp50, rp50 / sp50, rp99 - sp99);
  std::printf("  extra p50, median of the rounds' own: %.0f us (rounds from %.0f to %.0f us; goal: under 50 us)\n",
              percentile(extra, 0.5), *std::min_element(extra.begin(), extra.end()),
              *std::max_element(extra.begin(), extra.end()));
  relay->close_stdin();
  relay->wait_exit(std::chrono::seconds(10));
}

// ---- (2) attach -----------------------------------------------------------

void attach(bool quick) {
  Server server(fake_config(), {"--log-level", "warn"});
  server.skip_ledger_check();
  // The session's creator stays connected: the session stays active in the
  // server and each load attaches to it.
  RawClient holder(server.socket());
  must_result(holder.call("initialize", initialize_params()), "initialize");
  const std::string sid = new_session(holder);
  must_result(holder.call("session/prompt", prompt_params(sid, "stream 1000")), "stream 1000");
  const std::size_t streamed = holder.notifications();

  const int attaches = quick ? 10 : 20;
  std::vector<double> ms;
  std::size_t replayed = 0;
  bool attached = false;
  for (int i = 0; i < attaches + 2; ++i) {
    auto t = Clock::now();
    RawClient c(server.socket());
    must_result(c.call("initialize", initialize_params()), "initialize");
    json loaded = must_result(c.call("session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}}),
                              "session/load");
    double took = ms_since(t);
    if (i < 2) continue;  // warm-up
    ms.push_back(took);
    replayed = c.notifications();
    attached = loaded.contains("_meta") && loaded["_meta"].value("harnessd", json::object()).value("attached", false);
  }
  std::printf("(2) attach: connect + initialize + session/load of a session of %zu updates (%zu replayed%s), "
              "a new connection each time, %d attaches:\n",
              streamed, replayed, attached ? ", attached" : "", attaches);
  std::printf("  p50 %.2f ms, p90 %.2f ms, max %.2f ms (goal: under 20 ms)\n", percentile(ms, 0.5), percentile(ms, 0.9),
              *std::max_element(ms.begin(), ms.end()));
}

// ---- (3) many clients -----------------------------------------------------

// The processes of `root`'s tree (itself included), from one pass over /proc.
std::size_t tree_processes(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  DIR* dir = ::opendir("/proc");
  if (!dir) return 0;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto paren = stat.rfind(')');
    char state = 0;
    int ppid = 0;
    if (paren == std::string::npos || std::sscanf(stat.c_str() + paren + 1, " %c %d", &state, &ppid) != 2) continue;
    if (state != 'Z') children.emplace(static_cast<pid_t>(ppid), static_cast<pid_t>(pid));
  }
  ::closedir(dir);
  std::size_t n = 0;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    ++n;
    auto [from, to] = children.equal_range(p);
    for (auto it = from; it != to; ++it) todo.push_back(it->second);
  }
  return n;
}

// 100 clients, each with 10 sessions of its own and 10 prompts per session,
// all sent at once once every session is open.
void many_clients(bool quick, const char* label, const std::string& limits) {
  const int clients = 100, sessions = 10, prompts = quick ? 4 : 10;
  Server server(fake_config({}, "", limits), {"--log-level", "warn"});
  server.skip_ledger_check();
  const long rss_before = status_kib(server.pid(), "VmRSS");
  RawClient probe(server.socket());
  must_result(probe.call("initialize", initialize_params()), "initialize");

  std::barrier sync(clients + 1);
  std::atomic<long> completed{0}, failed{0};
  std::mutex error_mutex;
  std::string first_error;
  auto note_error = [&](const std::string& e) {
    std::lock_guard lock(error_mutex);
    if (first_error.empty()) first_error = e;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&] {
      std::unique_ptr<RawClient> c;
      std::vector<std::string> sids;
      try {
        c = std::make_unique<RawClient>(server.socket());
        must_result(c->call("initialize", initialize_params()), "initialize");
        for (int s = 0; s < sessions; ++s) sids.push_back(new_session(*c));
      } catch (const std::exception& e) {
        note_error(e.what());
        c.reset();
      }
      sync.arrive_and_wait();  // every session is open
      if (c) {
        try {
          // Pipelined: round k of every session, then round k + 1; the
          // server queues each session's prompts.
          std::string batch;
          std::set<int> ids;
          for (int k = 0; k < prompts; ++k) {
            for (const auto& sid : sids) {
              int id = 100 + static_cast<int>(ids.size());
              ids.insert(id);
              batch += request(id, "session/prompt", prompt_params(sid, "echo x")).dump() + "\n";
            }
          }
          c->send_raw(batch);
          while (!ids.empty()) {
            std::string_view l = c->line(std::chrono::seconds(120));
            if (RawClient::is_update(l)) continue;
            json m = json::parse(l, nullptr, false);
            if (m.is_discarded() || m.contains("method") || !m.contains("id") || !m["id"].is_number_integer()) continue;
            if (!ids.erase(m["id"].get<int>())) continue;
            if (m.contains("result") && m["result"].value("stopReason", "") == "end_turn") {
              ++completed;
            } else {
              ++failed;
              note_error(m.dump());
            }
          }
        } catch (const std::exception& e) {
          note_error(e.what());
        }
      }
      sync.arrive_and_wait();  // every answer is in
    });
  }
  auto opening = Clock::now();
  sync.arrive_and_wait();
  const double open_s = std::chrono::duration<double>(Clock::now() - opening).count();
  auto start = Clock::now();
  sync.arrive_and_wait();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& t : threads) t.join();
  const long rss = status_kib(server.pid(), "VmRSS"), hwm = status_kib(server.pid(), "VmHWM");
  const std::size_t procs = tree_processes(server.pid());
  json adapters = must_result(probe.call("_harnessd/sessions/list", json::object()), "sessions/list")
                      .value("adapters", json::object());
  const long total = static_cast<long>(clients) * sessions * prompts;
  std::printf("  %s (max_live_adapters %s): %ld of %ld prompts in %.2f s: %.0f prompts/s (%ld failed); "
              "the %d sessions opened in %.2f s\n",
              label, adapters.value("max", json()).dump().c_str(), completed.load(), total, secs,
              static_cast<double>(completed.load()) / secs, failed.load(), clients * sessions, open_s);
  std::printf("    harnessd: VmRSS %.1f MiB (%.1f MiB before the clients), VmHWM %.1f MiB; "
              "%s live adapters, %zu processes in its tree",
              rss / 1024.0, rss_before / 1024.0, hwm / 1024.0, adapters.value("live", json()).dump().c_str(), procs);
  std::fflush(stdout);
  auto stopping = Clock::now();
  int code = server.stop(std::chrono::seconds(60));
  std::printf("; stopped (SIGTERM) in %.2f s, exit %d\n", std::chrono::duration<double>(Clock::now() - stopping).count(),
              code);
  if (!first_error.empty()) std::printf("    first failure: %s\n", first_error.substr(0, 300).c_str());
}

void many_clients(bool quick) {
  std::printf("(3) 100 raw clients x 10 sessions each x %d prompts \"echo x\" per session (pipelined), "
              "one server, instant adapter:\n",
              quick ? 4 : 10);
  many_clients(quick, "default limits", "");
  many_clients(quick, "max_concurrent_runs 64, no eviction", "max_concurrent_runs = 64\nmax_live_adapters = 1024\n");
}

// ---- (4) run --shared -----------------------------------------------------

// Runs argv with stdin and stdout on /dev/null and stderr into `err_path`;
// returns the exit code (128+signal) and the wall time in ms.
std::pair<int, double> timed_run(const std::vector<std::string>& argv, const std::string& err_path) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  auto t = Clock::now();
  pid_t pid = -1;
  int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  double took = ms_since(t);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), took};
}

std::string cmdline_of(pid_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

// Processes other than this one whose command line names `needle` (a
// private temporary path): the detached server of a state directory.
std::vector<pid_t> processes_naming(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0 || pid == ::getpid()) continue;
    if (cmdline_of(static_cast<pid_t>(pid)).find(needle) != std::string::npos && process_alive(static_cast<pid_t>(pid))) {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(dir);
  return out;
}

// The pid that listens on `path` (SO_PEERCRED), or -1.
pid_t listener_pid(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  pid_t pid = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) pid = cred.pid;
  }
  ::close(fd);
  return pid;
}

// Stops the server that `run --shared` started on `state_dir` (it is not
// this program's child): SIGTERM, then SIGKILL after 10 s.
void stop_detached(const std::string& state_dir) {
  std::set<pid_t> pids;
  pid_t listening = listener_pid(state_dir + "/harnessd.sock");
  if (listening > 0 && listening != ::getpid()) pids.insert(listening);
  for (pid_t p : processes_naming(state_dir)) pids.insert(p);
  for (pid_t p : pids) ::kill(p, SIGTERM);
  auto gone = [&] {
    return std::none_of(pids.begin(), pids.end(), [](pid_t p) { return process_alive(p); });
  };
  if (!eventually(gone, std::chrono::seconds(10))) {
    for (pid_t p : pids) {
      if (process_alive(p)) ::kill(p, SIGKILL);
    }
    eventually(gone, std::chrono::seconds(5));
  }
  // Its adapters went with it; anything still naming the directory is said.
  eventually([&] { return processes_naming(state_dir).empty(); }, std::chrono::seconds(5));
  for (pid_t p : processes_naming(state_dir)) {
    std::printf("  left behind: pid %d %s\n", p, cmdline_of(p).c_str());
  }
}

void shared_runs(bool quick) {
  Output help = run_harnessd({"run", "--help"}), top = run_harnessd({"--help"});
  if ((help.out + help.err + top.out + top.err).find("--shared") == std::string::npos) {
    std::printf("(4) harnessd run --shared: this build has no --shared; skipped\n");
    return;
  }
  TempDir dir;
  // The server a --shared run starts exits by itself 2 s after its last
  // client; it is stopped at the end anyway.
  const std::string config = dir.write("config.toml", fake_config({}, "", "idle_exit = 2\n"));
  const std::string shared_state = dir.path() + "/shared", plain_state = dir.path() + "/plain";
  const std::string err = dir.path() + "/stderr";
  auto argv_for = [&](const std::string& state, bool shared) {
    std::vector<std::string> a = {harnessd_exe(), "--config", config, "--state-dir", state, "run"};
    if (shared) a.push_back("--shared");
    a.push_back("echo hi");
    return a;
  };
  struct Stop {
    std::string state;
    ~Stop() { stop_detached(state); }
  } stop{shared_state};

  auto [first_code, first_ms] = timed_run(argv_for(shared_state, true), err);
  if (first_code != 0) {
    std::printf("(4) harnessd run --shared: exit %d: %s\n", first_code, read_file(err).c_str());
    return;
  }
  pid_t server = listener_pid(shared_state + "/harnessd.sock");
  timed_run(argv_for(plain_state, false), err);  // the plain state directory made

  // Three sides in rotating order: --shared, in process, and `harnessd
  // --version` (starting the binary at all, the floor of both).
  const int rounds = quick ? 10 : 20;
  std::vector<double> times[3];
  const char* names[3] = {"run --shared", "run", "--version"};
  int bad = 0;
  for (int i = 0; i < rounds; ++i) {
    for (int k = 0; k < 3; ++k) {
      const int side = (i + k) % 3;
      std::vector<std::string> argv = side == 0   ? argv_for(shared_state, true)
                                      : side == 1 ? argv_for(plain_state, false)
                                                  : std::vector<std::string>{harnessd_exe(), "--version"};
      auto [code, ms] = timed_run(argv, err);
      if (code != 0 && bad++ == 0) std::printf("  %s exited %d: %s\n", names[side], code, read_file(err).c_str());
      times[side].push_back(ms);
    }
  }
  const pid_t server_after = listener_pid(shared_state + "/harnessd.sock");
  const double sm = mean(times[0]), pm = mean(times[1]), s50 = percentile(times[0], 0.5),
               p50 = percentile(times[1], 0.5), v50 = percentile(times[2], 0.5);
  std::printf("(4) harnessd run \"echo hi\", %d rotating rounds (the first --shared, which started the server: "
              "%.1f ms; server pid %d%s):\n",
              rounds, first_ms, server, server_after == server ? ", the same throughout" : ", CHANGED meanwhile");
  std::printf("  run --shared: mean %.1f ms, p50 %.1f ms; in-process run: mean %.1f ms, p50 %.1f ms; "
              "--shared takes %.2fx the time at p50 (%.2fx mean)%s\n",
              sm, s50, pm, p50, s50 / p50, sm / pm, bad ? " (some runs failed)" : "");
  std::printf("  in the same rounds harnessd --version: p50 %.1f ms; above it: --shared %.1f ms, in-process %.1f ms "
              "(%.2fx)\n",
              v50, s50 - v50, p50 - v50, (s50 - v50) / (p50 - v50));
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    // Other benchmarks' arguments (scripts/bench.sh passes them all) are
    // ignored.
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--harnessd") == 0 && i + 1 < argc) {
      set_harnessd_exe(argv[++i]);
    }
  }
  signal(SIGPIPE, SIG_IGN);
  const std::vector<std::pair<const char*, std::function<void(bool)>>> parts = {
      {"relay latency", relay_latency},
      {"attach", attach},
      {"many clients", static_cast<void (*)(bool)>(many_clients)},
      {"run --shared", shared_runs}};
  int failures = 0;
  for (const auto& [name, fn] : parts) {
    auto t = Clock::now();
    try {
      fn(quick);
    } catch (const std::exception& e) {
      std::printf("  %s failed: %s\n", name, e.what());
      ++failures;
    }
    std::fflush(stdout);
    std::fprintf(stderr, "  (%s: %.1f s)\n", name, std::chrono::duration<double>(Clock::now() - t).count());
  }
  return failures == 0 ? 0 : 1;
}
