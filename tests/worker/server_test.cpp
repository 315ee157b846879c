// One harnessd, many clients: `harnessd serve --listen` on a Unix socket,
// with `harnessd --connect` relays as the clients.
#include <catch2/catch.hpp>

#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <set>
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

// Two initialized clients, and a session the first one made.
struct TwoClients {
  std::unique_ptr<Daemon> first, second;
  std::string sid;
};
TwoClients two_clients(Server& s) {
  TwoClients t{s.client(), s.client(), ""};
  t.first->initialize();
  t.second->initialize();
  t.sid = t.first->new_session("/tmp");
  return t;
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

TEST_CASE("two clients of one server share a session: one FIFO queue, the loader sees every turn, each gets its own answers") {
  Server s;
  auto [a, b, sid] = two_clients(s);
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
  // a made the session and did not load it: it gets its own turns' updates,
  // not b's, and no answer of b's.
  CHECK(starts(message_text(seen_a)).size() == 1);
  std::vector<json> later;
  while (auto m = a->recv(500ms)) later.push_back(*m);
  CHECK(later.empty());
}

TEST_CASE("a session/cancel from another client ends the running turn cancelled") {
  Server s;
  auto [a, b, sid] = two_clients(s);
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
  // Long enough for a client process to start and connect on a slow
  // machine (the sanitizers), after the start-up probe's connection left.
  Server s(fake_config(), {"--idle-exit", "3"});
  {
    auto c = s.client();
    c->initialize();
    std::string sid = c->new_session("/tmp");
    // Busy meanwhile: a client is connected, then a prompt runs.
    std::this_thread::sleep_for(3500ms);
    CHECK(s.wait_exit(0ms) == -1);
    CHECK(c->prompt(sid, "slow 700")["result"]["stopReason"] == "end_turn");
  }
  CHECK(s.wait_exit(15s) == 0);
  CHECK_FALSE(std::filesystem::exists(s.socket()));
  CHECK(s.stderr_text().find("idle for 3000 ms") != std::string::npos);
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

namespace {

// The events of a watch that arrive before its answer (the replay), and the
// answer.
json start_watch(Daemon& c, const json& id, const json& params, std::vector<json>& events) {
  c.send(request(id, "_harnessd/sessions/watch", params));
  std::vector<json> seen;
  json answer = c.recv_reply(id, &seen);
  for (const json& m : seen) {
    if (m.value("method", "") == "_harnessd/session_event") events.push_back(m["params"]);
  }
  return answer;
}

// The session/update params of `seen` as the events a watch gives: update
// objects of session `sid`.
std::vector<json> updates_of(const std::vector<json>& seen, const std::string& sid) {
  std::vector<json> out;
  for (const json& p : update_params(seen, sid)) out.push_back(p["update"]);
  return out;
}

}  // namespace

TEST_CASE("a watch replays the transcript from fromSeq, then follows it live, numbered without gap or duplicate") {
  Server s;
  auto [a, w, sid] = two_clients(s);
  REQUIRE(a->prompt(sid, "echo one")["result"]["stopReason"] == "end_turn");
  std::vector<json> events;
  json answer = start_watch(*w, "w1", {{"sessionId", sid}}, events);
  INFO(answer.dump());
  REQUIRE(answer["result"]["watchId"] == "w1");
  CHECK(answer["result"]["nextSeq"] == 3);
  CHECK(answer["result"]["replayed"] == 2);
  REQUIRE(events.size() == 2);
  CHECK(events[0]["seq"] == 1);
  CHECK(events[0]["update"]["sessionUpdate"] == "user_message_chunk");
  CHECK(events[0]["update"]["content"]["text"] == "echo one");
  CHECK(events[1]["seq"] == 2);
  CHECK(events[1]["update"]["content"]["text"] == "one");
  CHECK(events[1]["watchId"] == "w1");

  // Live: the next turn's frames, as the prompting client got its updates.
  std::vector<json> seen;
  REQUIRE(a->prompt(sid, "stream 5", &seen)["result"]["stopReason"] == "end_turn");
  std::vector<json> live;
  REQUIRE(eventually([&] {
    while (auto m = w->recv(50ms)) {
      if (m->value("method", "") == "_harnessd/session_event") live.push_back((*m)["params"]);
    }
    return live.size() >= 6;
  }, 5s));
  REQUIRE(live.size() == 6);  // the user's prompt, then five chunks
  for (std::size_t i = 0; i < live.size(); ++i) CHECK(live[i]["seq"] == 3 + i);
  std::vector<json> watched;
  for (std::size_t i = 1; i < live.size(); ++i) watched.push_back(live[i]["update"]);
  CHECK(watched == updates_of(seen, sid));

  // From the middle: exactly the tail.
  std::vector<json> tail;
  json again = start_watch(*w, 7, {{"sessionId", sid}, {"fromSeq", 5}}, tail);
  CHECK(again["result"]["nextSeq"] == 9);
  REQUIRE(tail.size() == 4);
  CHECK(tail.front()["seq"] == 5);
  CHECK(tail.back()["seq"] == 8);
  CHECK(tail.back()["update"] == live.back()["update"]);

  // Unwatched: nothing more for w1; 7 still follows; an unknown one is refused.
  w->send(request("u", "_harnessd/sessions/unwatch", {{"watchId", "w1"}}));
  CHECK(w->recv_reply("u")["result"] == json::object());
  w->send(request("u2", "_harnessd/sessions/unwatch", {{"watchId", "w1"}}));
  CHECK(w->recv_reply("u2")["error"]["code"] == -32602);
  REQUIRE(a->prompt(sid, "echo two")["result"]["stopReason"] == "end_turn");
  std::vector<json> after;
  REQUIRE(eventually([&] {
    while (auto m = w->recv(50ms)) after.push_back(*m);
    return after.size() >= 2;
  }, 5s));
  for (const json& m : after) CHECK(m["params"]["watchId"] == 7);
  // The session closes: the watch is told, and ends.
  a->send(request("close", "session/close", {{"sessionId", sid}}));
  CHECK(a->recv_reply("close").contains("result"));
  auto closed = w->recv();
  REQUIRE(closed);
  CHECK((*closed)["params"]["closed"] == true);
  CHECK((*closed)["params"]["watchId"] == 7);
}

TEST_CASE("a session's frames keep their numbers across a restart of the server") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const std::string config = fake_config();
  std::string sid;
  std::vector<json> before;
  {
    Server s(config, {}, state);
    auto a = s.client();
    a->initialize();
    sid = a->new_session("/tmp");
    REQUIRE(a->prompt(sid, "stream 3")["result"]["stopReason"] == "end_turn");
    json answer = start_watch(*a, "w", {{"sessionId", sid}}, before);
    CHECK(answer["result"]["nextSeq"] == 5);
  }
  Server s(config, {}, state);
  auto w = s.client();
  w->initialize();
  std::vector<json> after;
  json answer = start_watch(*w, "w", {{"sessionId", sid}}, after);
  INFO(answer.dump());
  CHECK(answer["result"]["nextSeq"] == 5);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i]["seq"] == before[i]["seq"]);
    CHECK(after[i]["update"] == before[i]["update"]);
  }
  // The watch reopened the session here; its next frames go on from 5.
  auto a = s.client();
  a->initialize();
  json loaded = load_session(*a, sid);
  REQUIRE(loaded.contains("result"));
  REQUIRE(a->prompt(sid, "echo next")["result"]["stopReason"] == "end_turn");
  std::vector<json> live;
  REQUIRE(eventually([&] {
    while (auto m = w->recv(50ms)) live.push_back((*m)["params"]);
    return live.size() >= 2;
  }, 5s));
  CHECK(live[0]["seq"] == 5);
  CHECK(live[1]["seq"] == 6);
  CHECK(live[1]["update"]["content"]["text"] == "next");
}

TEST_CASE("session/load from a second client while a turn runs attaches: the replay, then the rest live, nothing twice") {
  Server s;
  auto [a, b, sid] = two_clients(s);
  a->send(prompt_request(1, sid, "slow 1500"));
  REQUIRE(running(*a));
  std::vector<json> replay;
  json loaded = load_session(*b, sid, &replay);
  INFO(loaded.dump());
  REQUIRE(loaded.contains("result"));
  CHECK(loaded["result"]["_meta"]["harnessd"]["attached"] == true);
  std::vector<json> seen_a;
  CHECK(a->recv_reply(1, &seen_a)["result"]["stopReason"] == "end_turn");
  std::vector<json> got = replay;
  REQUIRE(eventually([&] {
    while (auto m = b->recv(50ms)) got.push_back(*m);
    return message_text(got).find("tick 30") != std::string::npos;
  }, 5s));
  // b got every tick (one each 50 ms) once, in order, and the user's
  // prompt from the replay.
  std::vector<json> ticks_b;
  for (const json& u : updates_of(got, sid)) {
    if (u["sessionUpdate"] == "agent_message_chunk") ticks_b.push_back(u);
  }
  CHECK(updates_of(got, sid).front()["sessionUpdate"] == "user_message_chunk");
  REQUIRE(ticks_b.size() == 30);
  for (std::size_t i = 0; i < ticks_b.size(); ++i) {
    CHECK(ticks_b[i]["content"]["text"] == "tick " + std::to_string(i + 1));
  }
  // b, attached this way, prompts the session like any client.
  std::vector<json> mine;
  CHECK(b->prompt(sid, "echo mine", &mine)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(mine) == "mine");
}

TEST_CASE("_harnessd/runs/wait answers at once for an ended run, at the end for a running one, pending after its timeout") {
  Server s;
  auto [a, w, sid] = two_clients(s);
  json done = a->prompt(sid, "echo done");
  w->send(request(1, "_harnessd/runs/wait", {{"runId", run_id_of(done)}}));
  json ended = w->recv_reply(1);
  CHECK(ended["result"]["run"]["state"] == "completed");
  CHECK_FALSE(ended["result"].contains("pending"));

  a->send(prompt_request(2, sid, "slow 800"));
  REQUIRE(running(*a));
  json list = [&] {
    w->send(request(2, "_harnessd/status", json::object()));
    return w->recv_reply(2);
  }();
  INFO(list.dump());
  std::string run;
  for (const json& x : list["result"]["sessions"]) {
    if (x["sessionId"] == sid) run = x["activeRunId"];
  }
  REQUIRE_FALSE(run.empty());
  w->send(request(3, "_harnessd/runs/wait", {{"runId", run}, {"timeoutMs", 50}}));
  json pending = w->recv_reply(3);
  CHECK(pending["result"]["pending"] == true);
  CHECK(pending["result"]["run"]["state"] == "started");
  w->send(request(4, "_harnessd/runs/wait", {{"runId", run}}));
  json waited = w->recv_reply(4, nullptr, 10s);
  CHECK(waited["result"]["run"]["state"] == "completed");
  CHECK(a->recv_reply(2)["result"]["stopReason"] == "end_turn");
  w->send(request(5, "_harnessd/runs/wait", {{"runId", "run_nosuch"}}));
  CHECK(w->recv_reply(5)["error"]["code"] == -32002);
}

TEST_CASE("_harnessd/status names the server's clients, sessions and queues") {
  Server s;
  auto [a, b, sid] = two_clients(s);
  a->send(prompt_request(1, sid, "slow 600"));
  a->send(prompt_request(2, sid, "echo queued"));
  REQUIRE(running(*a));
  b->send(request("st", "_harnessd/status", json::object()));
  json st = b->recv_reply("st");
  INFO(st.dump());
  CHECK(st["result"]["pid"] == s.pid());
  CHECK(st["result"]["uptimeMs"].get<long long>() >= 0);
  REQUIRE(st["result"]["clients"].size() == 2);
  std::size_t prompts = 0;
  for (const json& c : st["result"]["clients"]) prompts += c["prompts"].get<std::size_t>();
  CHECK(prompts == 2);
  REQUIRE(st["result"]["sessions"].size() == 1);
  CHECK(st["result"]["sessions"][0]["queueDepth"] == 1);
  CHECK(st["result"]["running"] == 1);
  a->recv_reply(2);
}

namespace {

// The pid of the server `harnessd status` reports for `state_dir`, or 0.
pid_t server_pid(const std::string& state_dir) {
  Output st = run_harnessd({"--state-dir", state_dir, "status", "--format", "json"});
  json j = json::parse(st.out, nullptr, false);
  if (j.is_discarded() || !j.contains("server")) return 0;
  return j["server"]["pid"].get<pid_t>();
}

}  // namespace

TEST_CASE("five harnessd run --shared --session same at once: one server, one turn at a time, each run ended once") {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const std::string config = dir.write("config.toml", fake_config({}, "", "idle_exit = 20\n"));
  std::vector<Output> outs(5);
  std::vector<std::thread> runs;
  for (int i = 0; i < 5; ++i) {
    runs.emplace_back([&, i] {
      outs[i] = run_harnessd({"--config", config, "--state-dir", state, "run", "--shared", "--session", "same",
                              "--format", "json", "timed 200"});
    });
  }
  for (auto& t : runs) t.join();
  const pid_t server = server_pid(state);
  REQUIRE(server > 0);
  std::vector<std::pair<long long, long long>> spans;
  std::set<std::string> sessions;
  for (const Output& o : outs) {
    INFO(o.out << o.err);
    REQUIRE(o.code == 0);
    json r = json::parse(o.out);
    sessions.insert(r["sessionId"].get<std::string>());
    const std::string text = r["text"];
    long long start = std::stoll(text.substr(text.find("start ") + 6));
    long long end = std::stoll(text.substr(text.find(" end ") + 5));
    spans.emplace_back(start, end);
  }
  CHECK(sessions.size() == 1);
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) CHECK(spans[i - 1].second <= spans[i].first);
  // Every run went through the one server, and ended once.
  Ledger l = read_ledger(state);
  std::set<std::string> daemons;
  for (const json& e : l.entries) daemons.insert(e["daemon"].get<std::string>());
  CHECK(daemons.size() == 1);
  CHECK(l.terminal.size() == 5);
  for (const auto& [run, entries] : l.terminal) CHECK(entries.size() == 1);
  // A plain stdio harnessd cannot take the session the server holds.
  Daemon plain(read_file(config), {}, state);
  plain.initialize();
  plain.send(request(1, "session/new",
                     {{"cwd", "/tmp"}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"name", "same"}, {"ensure", true}}}}}}));
  json busy = plain.recv_reply(1);
  CHECK(busy["error"]["code"] == -32017);
  CHECK(busy["error"]["data"]["owner"]["pid"] == server);
  ::kill(server, SIGTERM);
  CHECK(eventually([&] { return !process_alive(server); }, 10s));
}

TEST_CASE("harnessd run goes through a listening server, and cancel, close and wait work from the shell") {
  Server s;
  // run without --shared uses the server that listens.
  Output first = run_harnessd({"--config", s.config_path(), "--state-dir", s.state_dir(), "run", "--session", "named",
                               "--format", "json", "echo through"});
  INFO(first.out << first.err);
  REQUIRE(first.code == 0);
  json r = json::parse(first.out);
  CHECK(r["text"] == "through");
  CHECK(s.stderr_text().find("client pid") != std::string::npos);
  // wait on an ended run, through the server.
  Output waited = run_harnessd({"--state-dir", s.state_dir(), "wait", r["runId"]});
  CHECK(waited.code == 0);
  CHECK(waited.out.find("completed (end_turn)") != std::string::npos);

  // cancel a running run by its id, and a session's turn by its name.
  auto a = s.client();
  a->initialize();
  a->send(request(1, "session/new",
                  {{"cwd", "/tmp"}, {"mcpServers", json::array()}, {"_meta", {{"harnessd", {{"name", "named"}, {"ensure", true}}}}}}));
  std::string sid = a->recv_reply(1)["result"]["sessionId"];
  CHECK(sid == r["sessionId"]);
  a->send(prompt_request(2, sid, "slow 10000"));
  REQUIRE(running(*a));
  Output by_name = run_harnessd({"--state-dir", s.state_dir(), "cancel", "named"});
  INFO(by_name.out << by_name.err);
  CHECK(by_name.code == 0);
  CHECK(by_name.out.find("cancelled (it was running)") != std::string::npos);
  json cancelled = a->recv_reply(2);
  CHECK(cancelled["result"]["stopReason"] == "cancelled");
  Output again = run_harnessd({"--state-dir", s.state_dir(), "wait", run_id_of(cancelled)});
  CHECK(again.code == 130);
  // A queued run, by id.
  a->send(prompt_request(3, sid, "slow 10000"));
  a->send(prompt_request(4, sid, "echo queued"));
  REQUIRE(running(*a));
  std::string queued;
  REQUIRE(eventually([&] {
    Output runs = run_harnessd({"--state-dir", s.state_dir(), "runs", "--state", "queued", "--format", "json"});
    if (runs.out.empty()) return false;
    queued = json::parse(runs.out.substr(0, runs.out.find('\n')))["runId"];
    return true;
  }));
  Output by_id = run_harnessd({"--state-dir", s.state_dir(), "cancel", queued});
  CHECK(by_id.code == 0);
  CHECK(by_id.out.find("cancelled (it was queued)") != std::string::npos);
  CHECK(a->recv_reply(4)["result"]["stopReason"] == "cancelled");
  // close through the server: the running turn is answered, the session goes.
  Output closed = run_harnessd({"--state-dir", s.state_dir(), "close", "named"});
  CHECK(closed.code == 0);
  CHECK(a->recv_reply(3)["result"]["stopReason"] == "cancelled");
  Output none = run_harnessd({"--state-dir", s.state_dir(), "cancel", "named"});
  CHECK(none.code == 1);
}

TEST_CASE("harnessd wait needs no server: it reads the ledger until the run ends, or exits 4 at its timeout") {
  Daemon d;
  d.initialize();
  std::string sid = d.new_session("/tmp");
  // The turn waits on the host's answer to its permission request, so it
  // is still running for the early wait however slow the machine is.
  d.send(prompt_request(1, sid, "permission"));
  std::optional<json> ask;
  for (int i = 0; i < 3 && !(ask && ask->value("method", "") == "session/request_permission"); ++i) ask = d.recv();
  REQUIRE(ask);
  REQUIRE(ask->value("method", "") == "session/request_permission");
  std::string run;
  REQUIRE(eventually([&] {
    Output runs = run_harnessd({"--state-dir", d.state_dir(), "runs", "--state", "started", "--format", "json"});
    if (runs.out.empty()) return false;
    run = json::parse(runs.out.substr(0, runs.out.find('\n')))["runId"];
    return true;
  }));
  Output early = run_harnessd({"--state-dir", d.state_dir(), "wait", run, "--timeout", "0.2", "--format", "json"});
  CHECK(early.code == 4);
  CHECK(json::parse(early.out)["pending"] == true);
  d.send({{"jsonrpc", "2.0"}, {"id", (*ask)["id"]}, {"result", {{"outcome", {{"outcome", "selected"}, {"optionId", "allow"}}}}}});
  Output waited = run_harnessd({"--state-dir", d.state_dir(), "wait", run});
  CHECK(waited.code == 0);
  CHECK(d.recv_reply(1)["result"]["stopReason"] == "end_turn");
  Output unknown = run_harnessd({"--state-dir", d.state_dir(), "wait", "run_nosuch"});
  CHECK(unknown.code == 2);
  Output no_server = run_harnessd({"--state-dir", d.state_dir(), "watch", sid});
  CHECK(no_server.code == 1);
  CHECK(no_server.err.find("no harnessd server listens") != std::string::npos);
}

TEST_CASE("a permission request left unanswered by a client that goes is refused, and the turn goes on with on_disconnect = continue") {
  Server s(fake_config({}, "", "on_disconnect = \"continue\"\n"));
  std::string sid;
  {
    auto a = s.client();
    a->initialize();
    sid = a->new_session("/tmp");
    a->send(prompt_request(1, sid, "permission"));
    // Asked, and never answers: it leaves instead.
    REQUIRE(eventually([&] {
      auto m = a->recv(100ms);
      return m && m->value("method", "") == "session/request_permission";
    }, 10s));
  }
  Ledger l;
  REQUIRE(eventually([&] {
    l = read_ledger(s.state_dir());
    return l.terminal.size() == 1 && !l.terminal.begin()->second.empty();
  }, 10s));
  CHECK(l.terminal.begin()->second[0]["event"] == "completed");
  auto b = s.client();
  b->initialize();
  std::vector<json> replay;
  REQUIRE(load_session(*b, sid, &replay).contains("result"));
  CHECK(message_text(replay) == "permission: selected reject");
}
