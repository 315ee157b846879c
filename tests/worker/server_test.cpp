// One harnessd, many clients: `harnessd serve --listen` on a Unix socket,
// with `harnessd --connect` relays as the clients.
#include <catch2/catch.hpp>

#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include <filesystem>
#include <thread>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

json load_session(Daemon& c, const std::string& sid, std::vector<json>* seen = nullptr) {
  json req = request("load", "session/load", {{"sessionId", sid}, {"cwd", "/tmp"}, {"mcpServers", json::array()}});
  c.send(req);
  return c.recv_reply("load", seen);
}

json prompt_request(int id, const std::string& sid, const std::string& text) {
  return request(id, "session/prompt", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", text}}}}});
}

// The terminal ledger entry of a run, once there is one.
json terminal_of(const std::string& state_dir, const std::string& run_id) {
  json out;
  eventually(
      [&] {
        Ledger l = read_ledger(state_dir);
        auto it = l.terminal.find(run_id);
        if (it == l.terminal.end() || it->second.empty()) return false;
        out = it->second.back();
        return true;
      },
      10s);
  return out;
}

// Reads until the connection ends; true if it ended within `within`.
bool ends_within(Daemon& c, std::chrono::milliseconds within) {
  auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (!c.recv(left)) return std::chrono::steady_clock::now() < end;
  }
  return false;
}

// Runs a program (not harnessd) and returns its exit code; stdout and
// stderr go to `out`.
int run_program(const std::vector<std::string>& argv, std::string* out) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fds[1], 1);
    ::dup2(pipe_fds[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  char buf[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) out->append(buf, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A `slow` turn is running once its first tick reaches the client.
bool running(Daemon& c) {
  std::vector<json> seen;
  return eventually(
      [&] {
        auto m = c.recv(100ms);
        if (m) seen.push_back(*m);
        return message_text(seen).find("tick") != std::string::npos;
      },
      10s);
}

}  // namespace

TEST_CASE("two clients of one server share a session: one FIFO queue, both see the updates, each gets its own answers") {
  Server s;
  auto a = s.client();
  auto b = s.client();
  a->initialize();
  b->initialize();
  std::string sid = a->new_session("/tmp");
  json loaded = load_session(*b, sid);
  INFO(loaded.dump());
  REQUIRE(loaded.contains("result"));

  a->send(prompt_request(1, sid, "timed 400"));
  std::this_thread::sleep_for(100ms);
  b->send(prompt_request(1, sid, "timed 100"));  // the same id as a's: ids are per client
  std::vector<json> seen_a, seen_b;
  json answer_a = a->recv_reply(1, &seen_a);
  json answer_b = b->recv_reply(1, &seen_b);
  REQUIRE(answer_a["result"]["stopReason"] == "end_turn");
  REQUIRE(answer_b["result"]["stopReason"] == "end_turn");
  // Each answer names its own run.
  CHECK(run_id_of(answer_a) != run_id_of(answer_b));
  // One turn at a time, in the order the prompts came.
  auto interval = [&](const std::string& run) {
    json t = terminal_of(s.state_dir(), run);
    return t;
  };
  CHECK(interval(run_id_of(answer_a))["event"] == "completed");
  CHECK(interval(run_id_of(answer_b))["event"] == "completed");
  std::string text_b = message_text(seen_b);
  // b saw a's turn (it is attached), then its own.
  auto starts = [](const std::string& text) {
    std::vector<long long> out;
    for (std::size_t at = text.find("start "); at != std::string::npos; at = text.find("start ", at + 1)) {
      out.push_back(std::stoll(text.substr(at + 6)));
    }
    return out;
  };
  auto ends = [](const std::string& text) {
    std::vector<long long> out;
    for (std::size_t at = text.find(" end "); at != std::string::npos; at = text.find(" end ", at + 1)) {
      out.push_back(std::stoll(text.substr(at + 5)));
    }
    return out;
  };
  REQUIRE(starts(text_b).size() == 2);
  CHECK(ends(text_b)[0] <= starts(text_b)[1]);
  // a sees b's turn too, after its own answer.
  std::vector<json> later;
  while (auto m = a->recv(500ms)) later.push_back(*m);
  CHECK(message_text(later).find("start ") != std::string::npos);
  // No answer went to the wrong client.
  for (const json& m : later) CHECK_FALSE((m.contains("id") && !m.contains("method")));
}

TEST_CASE("a session/cancel from another client ends the running turn cancelled") {
  Server s;
  auto a = s.client();
  auto b = s.client();
  a->initialize();
  b->initialize();
  std::string sid = a->new_session("/tmp");
  REQUIRE(load_session(*b, sid).contains("result"));
  a->send(prompt_request(7, sid, "slow 10000"));
  REQUIRE(running(*a));
  b->send(notification("session/cancel", {{"sessionId", sid}}));
  json answer = a->recv_reply(7, nullptr, 5s);
  CHECK(answer["result"]["stopReason"] == "cancelled");
}

TEST_CASE("a client that disconnects mid-turn has its turn and its queued prompts cancelled by default") {
  Server s;
  std::string sid;
  {
    auto a = s.client();
    a->initialize();
    sid = a->new_session("/tmp");
    a->send(prompt_request(1, sid, "slow 20000"));
    a->send(prompt_request(2, sid, "echo queued"));
    REQUIRE(running(*a));
  }  // the relay exits: the client is gone
  Ledger l;
  REQUIRE(eventually([&] {
    l = read_ledger(s.state_dir());
    return l.terminal.size() == 2 && !l.terminal.begin()->second.empty() && !l.terminal.rbegin()->second.empty();
  }, 10s));
  for (const auto& [run, entries] : l.terminal) {
    INFO(run);
    REQUIRE(entries.size() == 1);
    CHECK(entries[0]["event"] == "cancelled");
  }
  // The session stays: another client loads it and prompts it.
  auto b = s.client();
  b->initialize();
  REQUIRE(load_session(*b, sid).contains("result"));
  std::vector<json> updates;
  CHECK(b->prompt(sid, "echo after", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "after");
}

TEST_CASE("with on_disconnect = continue the turn of a client that left runs to its end, and the client comes back") {
  Server s(fake_config({}, "", "on_disconnect = \"continue\"\n"));
  std::string sid;
  {
    auto a = s.client();
    a->initialize();
    sid = a->new_session("/tmp");
    a->send(prompt_request(1, sid, "timed 800"));
    std::this_thread::sleep_for(200ms);
  }
  Ledger l;
  REQUIRE(eventually([&] {
    l = read_ledger(s.state_dir());
    return l.terminal.size() == 1 && !l.terminal.begin()->second.empty();
  }, 10s));
  CHECK(l.terminal.begin()->second.at(0)["event"] == "completed");
  auto back = s.client();
  back->initialize();
  std::vector<json> replay;
  json loaded = load_session(*back, sid, &replay);
  INFO(loaded.dump());
  REQUIRE(loaded.contains("result"));
  CHECK(message_text(replay).find("start ") != std::string::npos);
}

TEST_CASE("a server killed with kill -9 mid-turn: every client sees the end within 1 s, nothing is left, and every run ends once after a restart") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const std::string config = fake_config();
  std::vector<pid_t> adapters;
  {
    Server s(config, {}, state);
    std::vector<std::unique_ptr<Daemon>> clients;
    for (int i = 0; i < 3; ++i) {
      auto c = s.client();
      c->initialize();
      std::string sid = c->new_session("/tmp");
      auto [agent, guard] = adapter_pids(*c, sid);
      adapters.push_back(agent);
      adapters.push_back(guard);
      c->send(prompt_request(50, sid, "slow 30000"));
      clients.push_back(std::move(c));
    }
    std::this_thread::sleep_for(300ms);
    ::kill(s.pid(), SIGKILL);
    for (auto& c : clients) CHECK(ends_within(*c, 1000ms));
    for (auto& c : clients) CHECK(c->wait_exit(2s) == 0);
    CHECK(s.wait_exit(2s) == 128 + SIGKILL);
  }
  for (pid_t p : adapters) CHECK(eventually([&] { return !process_alive(p); }, 5s));
  // The next server ends the runs the dead one left; its destructor checks
  // that every run has exactly one terminal entry.
  Server again(config, {}, state);
  CHECK(again.stop() == 0);
  Ledger l = read_ledger(state);
  CHECK(l.terminal.size() == 6);
  for (const auto& [run, entries] : l.terminal) CHECK(entries.size() == 1);
}

TEST_CASE("a client that stops reading is disconnected and does not hold the others back") {
  // A client may leave 4 x queue_high_water bytes unread: 256 KiB here.
  Server s(fake_config({}, "", "queue_high_water = 65536\nqueue_low_water = 16384\n"));
  auto stalled = s.client();
  stalled->initialize();
  std::string flooded = stalled->new_session("/tmp");
  stalled->send(prompt_request(1, flooded, "stream 40000"));  // about 6 MB it never reads
  auto a = s.client();
  a->initialize();
  std::string sid = a->new_session("/tmp");
  for (int i = 0; i < 20; ++i) {
    std::vector<json> updates;
    REQUIRE(a->prompt(sid, "echo " + std::to_string(i), &updates)["result"]["stopReason"] == "end_turn");
    CHECK(message_text(updates) == std::to_string(i));
  }
  CHECK(eventually([&] { return s.stderr_text().find("did not read") != std::string::npos; }, 10s));
}

TEST_CASE("bad input from a client gets a clear error and the server keeps serving it and the others") {
  Server s;
  auto a = s.client();
  a->send_raw("this is not json\n");
  auto m = a->recv();
  REQUIRE(m);
  CHECK((*m)["error"]["code"] == -32700);
  a->send(request(3, "session/new", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}));
  json early = a->recv_reply(3);
  CHECK(early["error"]["code"] == -32600);
  CHECK(early["error"]["message"].get<std::string>().find("before initialize") != std::string::npos);
  a->initialize();
  std::string sid = a->new_session("/tmp");
  a->send(prompt_request(9, sid, "slow 600"));
  a->send(prompt_request(9, sid, "echo twice"));  // the same id while the first is open
  json dup = a->recv_reply(9);
  if (dup.contains("result")) dup = a->recv_reply(9);  // order is not promised
  CHECK(dup["error"]["code"] == -32600);
  CHECK(dup["error"]["message"].get<std::string>().find("already in use") != std::string::npos);
  auto b = s.client();
  b->initialize();
  std::string other = b->new_session("/tmp");
  std::vector<json> updates;
  CHECK(b->prompt(other, "echo fine", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "fine");
}

TEST_CASE("the socket is 0600 in a 0700 state directory, a second server on it is refused, and a stale one is replaced") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const std::string config = fake_config();
  {
    Server s(config, {}, state);
    CHECK(mode_of(s.socket()) == 0600);
    CHECK(mode_of(state) == 0700);
    Output second = run_harnessd({"--config", s.config_path(), "--state-dir", state, "serve", "--listen"});
    CHECK(second.code == 1);
    CHECK(second.err.find("a server already listens on " + s.socket()) != std::string::npos);
    ::kill(s.pid(), SIGKILL);
    s.wait_exit();
    CHECK(std::filesystem::exists(s.socket()));  // left behind by the killed server
  }
  Server again(config, {}, state);
  auto c = again.client();
  c->initialize();
  std::vector<json> updates;
  CHECK(c->prompt(c->new_session("/tmp"), "echo back", &updates)["result"]["stopReason"] == "end_turn");
}

TEST_CASE("idle-exit: a server with no client and no prompt exits cleanly, and removes its socket") {
  Server s(fake_config(), {"--idle-exit", "0.5"});
  {
    auto c = s.client();
    c->initialize();
    std::string sid = c->new_session("/tmp");
    // Busy meanwhile: a client is connected, then a prompt runs.
    std::this_thread::sleep_for(800ms);
    CHECK(s.wait_exit(0ms) == -1);
    CHECK(c->prompt(sid, "slow 700")["result"]["stopReason"] == "end_turn");
  }
  CHECK(s.wait_exit(10s) == 0);
  CHECK_FALSE(std::filesystem::exists(s.socket()));
  CHECK(s.stderr_text().find("idle for 500 ms") != std::string::npos);
}

TEST_CASE("connecting to a socket nothing listens on fails at once and says so") {
  TempDir dir;
  Output out = run_harnessd({"--connect", "unix:" + dir.path() + "/none.sock"});
  CHECK(out.code == 1);
  CHECK(out.err.find("no harnessd server listens on " + dir.path() + "/none.sock") != std::string::npos);
  Output bad = run_harnessd({"--connect", "tcp://127.0.0.1:1"});
  CHECK(bad.code != 0);
  CHECK(bad.err.find("write unix:PATH") != std::string::npos);
}

TEST_CASE("another user cannot use the server even when the socket file lets them reach it") {
  TempDir dir;
  // Reachable by everyone, on purpose: the peer's uid is what refuses.
  ::chmod(dir.path().c_str(), 0711);
  Server s(fake_config(), {}, dir.path() + "/state");
  ::chmod(s.state_dir().c_str(), 0711);
  ::chmod(s.socket().c_str(), 0666);
  // harnessd itself as the other user's client: a copy it may run, and a
  // config it may read.
  const std::string exe = dir.path() + "/harnessd";
  std::filesystem::copy_file(HARNESSD_EXE, exe);
  ::chmod(exe.c_str(), 0755);
  const std::string config = dir.write("other.toml", "");
  ::chmod(config.c_str(), 0644);
  std::string out;
  int code = run_program({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                          "printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":1}}' | " +
                              exe + " --config " + config + " --connect unix:" + s.socket() + "; echo exit $?"},
                         &out);
  INFO(out);
  CHECK(code == 0);
  CHECK(out.find("exit 0") != std::string::npos);  // the server ended the connection
  CHECK(out.find("result") == std::string::npos);  // having said nothing
  CHECK(eventually([&] { return s.stderr_text().find("refused a connection from uid 65534") != std::string::npos; }));
  // The owner still can.
  auto c = s.client();
  c->initialize();
}

TEST_CASE("systemd socket activation: harnessd serves the socket that systemd-socket-activate passes") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  Server s(fake_config(), {}, state, {"systemd-socket-activate", "-l", state + "/harnessd.sock"});
  auto c = s.client();
  c->initialize();
  std::vector<json> updates;
  CHECK(c->prompt(c->new_session("/tmp"), "echo activated", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "activated");
  CHECK(s.stderr_text().find("listening on the socket systemd passed") != std::string::npos);
  c.reset();
  CHECK(s.stop() == 0);
}
