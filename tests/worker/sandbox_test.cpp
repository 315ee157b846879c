// [harness.X] sandbox, network and writable (issue 17): the fake agent run
// by the real harnessd inside bubblewrap tries to write and to connect, and
// the sandbox must let it do exactly what the profile says. bubblewrap is a
// required part of the test machine (scripts/setup.sh installs it): these
// tests fail without it, except the one that hides it on purpose.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "adapters/sandbox.h"
#include "daemon_process.h"
#include "worker/config.h"

using namespace harnessd::test;
using nlohmann::json;

namespace {

void require_bubblewrap() {
  const char* path = std::getenv("PATH");
  auto support = harnessd::adapters::SandboxSupport::probe(path ? path : "/usr/bin:/bin");
  INFO("the sandbox tests need a working bubblewrap (" << support.hint() << ")");
  REQUIRE(support.refuse().value_or("") == "");
}

std::string sandbox_config(const std::string& mode, bool network, const std::string& extra = "") {
  return fake_config({}, "sandbox = \"" + mode + "\"\nnetwork = " + (network ? "true" : "false") + "\n" + extra);
}

// A directory outside /tmp (which the sandbox replaces with a private one),
// so that a failed write there is the read-only host and not a missing
// directory.
class OutsideDir {
 public:
  OutsideDir() {
    // /var/tmp: not under /tmp, which the sandbox replaces with its own
    // (the build tree may be there too), and writable on every Debian.
    std::error_code ec;
    const std::string root = std::filesystem::is_directory("/var/tmp", ec)
                                 ? std::string("/var/tmp")
                                 : std::filesystem::path(harnessd_exe()).parent_path().string();
    std::string base = root + "/harnessd-sandbox-test-XXXXXX";
    std::vector<char> buf(base.begin(), base.end());
    buf.push_back('\0');
    REQUIRE(::mkdtemp(buf.data()) != nullptr);
    path_ = buf.data();
  }
  ~OutsideDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A TCP listener on 127.0.0.1 with a free port; connections complete in its
// backlog without an accept.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// session/new's whole answer.
json open_session(Daemon& d, const std::string& cwd) {
  static int next = 1;
  const std::string id = "sandbox-new-" + std::to_string(next++);
  d.send(request(id, "session/new", {{"cwd", cwd}, {"mcpServers", json::array()}}));
  return d.recv_reply(id);
}

// The text a one-command prompt answered, and the run's id.
std::pair<std::string, std::string> say(Daemon& d, const std::string& sid, const std::string& text) {
  std::vector<json> seen;
  json reply = d.prompt(sid, text, &seen);
  INFO(reply.dump());
  REQUIRE(reply.contains("result"));
  return {message_text(seen), run_id_of(reply)};
}

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// The parent of `pid`, from /proc/<pid>/stat (after the command's ')').
pid_t parent_of(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  char state = 0;
  int ppid = -1;
  if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

// Sets PATH for the processes started while it lives (a Daemon inherits
// this process's environment).
class PathFor {
 public:
  explicit PathFor(const std::string& path) : old_(std::getenv("PATH") ? std::getenv("PATH") : "") {
    ::setenv("PATH", path.c_str(), 1);
  }
  ~PathFor() { ::setenv("PATH", old_.c_str(), 1); }

 private:
  std::string old_;
};

}  // namespace

TEST_CASE("sandbox workspace-write without network: the cwd is writable, the host and the network are not") {
  require_bubblewrap();
  TempDir workspace;
  OutsideDir outside;
  Listener listener;
  // The state directory outside /tmp, to see that the sandbox covers it.
  Daemon d(sandbox_config("workspace-write", false), {}, outside.path() + "/state");
  d.initialize();
  json created = open_session(d, workspace.path());
  REQUIRE(created.contains("result"));
  const std::string sid = created["result"]["sessionId"];
  const json expected = {{"mode", "workspace-write"}, {"network", false}, {"writable", {workspace.path()}}};
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] == expected);

  auto [inside, run_id] = say(d, sid, "write inside.txt hello");
  CHECK(inside == "wrote inside.txt");
  CHECK(read_file(workspace.path() + "/inside.txt") == "hello");

  const std::string elsewhere = outside.path() + "/outside.txt";
  CHECK(say(d, sid, "write " + elsewhere + " hello").first == "write failed: Read-only file system");
  CHECK_FALSE(file_exists(elsewhere));

  // /tmp is the sandbox's own: writable, and nothing reaches the host's.
  const std::string private_tmp = "/tmp/harnessd-sandbox-test-" + std::to_string(::getpid());
  CHECK(say(d, sid, "write " + private_tmp + " x").first == "wrote " + private_tmp);
  CHECK_FALSE(file_exists(private_tmp));

  CHECK(say(d, sid, "connect 127.0.0.1 " + std::to_string(listener.port())).first.rfind("connect failed: ", 0) == 0);

  // harnessd's state directory (its socket lives there) is an empty
  // read-only folder in the sandbox.
  REQUIRE(file_exists(d.state_dir() + "/runs"));
  CHECK(say(d, sid, "write " + d.state_dir() + "/runs/planted x").first == "write failed: No such file or directory");
  CHECK(say(d, sid, "write " + d.state_dir() + "/planted x").first == "write failed: Read-only file system");

  auto result = run_file(d.state_dir(), run_id, "result.json");
  REQUIRE(result);
  CHECK(json::parse(*result)["sandbox"] == expected);
}

TEST_CASE("sandbox with network = true connects, and writable adds paths outside the cwd") {
  require_bubblewrap();
  TempDir workspace;
  OutsideDir outside, also;
  Listener listener;
  Daemon d(sandbox_config("workspace-write", true, "writable = [\"" + also.path() + "\"]\n"));
  d.initialize();
  json created = open_session(d, workspace.path());
  REQUIRE(created.contains("result"));
  const std::string sid = created["result"]["sessionId"];
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] ==
        json({{"mode", "workspace-write"}, {"network", true}, {"writable", {workspace.path(), also.path()}}}));

  CHECK(say(d, sid, "connect 127.0.0.1 " + std::to_string(listener.port())).first == "connected");
  CHECK(say(d, sid, "write " + also.path() + "/listed.txt yes").first == "wrote " + also.path() + "/listed.txt");
  CHECK(read_file(also.path() + "/listed.txt") == "yes");
  CHECK(say(d, sid, "write " + outside.path() + "/not.txt no").first == "write failed: Read-only file system");
  CHECK(say(d, sid, "write inside.txt ok").first == "wrote inside.txt");
}

TEST_CASE("sandbox read-only: not even the cwd is writable, only the private /tmp") {
  require_bubblewrap();
  TempDir workspace;
  OutsideDir also;
  Daemon d(sandbox_config("read-only", false, "writable = [\"" + also.path() + "\"]\n"));
  d.initialize();
  json created = open_session(d, workspace.path());
  REQUIRE(created.contains("result"));
  const std::string sid = created["result"]["sessionId"];
  const json expected = {{"mode", "read-only"}, {"network", false}, {"writable", json::array()}};
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] == expected);

  // The cwd is under /tmp, yet visible (read-only) in the sandbox.
  auto [cwd, run_id] = say(d, sid, "cwd");
  CHECK(cwd == workspace.path());
  CHECK(say(d, sid, "write inside.txt no").first == "write failed: Read-only file system");
  CHECK_FALSE(file_exists(workspace.path() + "/inside.txt"));
  CHECK(say(d, sid, "write " + also.path() + "/listed.txt no").first == "write failed: Read-only file system");
  CHECK(say(d, sid, "write /tmp/scratch yes").first == "wrote /tmp/scratch");
  CHECK(say(d, sid, "env TMPDIR").first == "/tmp");

  auto result = run_file(d.state_dir(), run_id, "result.json");
  REQUIRE(result);
  CHECK(json::parse(*result)["sandbox"] == expected);
}

TEST_CASE("without a sandbox, session/new and result.json say mode none and the host stays writable") {
  TempDir workspace;
  OutsideDir outside;
  Daemon d;
  d.initialize();
  json created = open_session(d, workspace.path());
  REQUIRE(created.contains("result"));
  const std::string sid = created["result"]["sessionId"];
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] == json({{"mode", "none"}}));
  auto [wrote, run_id] = say(d, sid, "write " + outside.path() + "/free.txt yes");
  CHECK(wrote == "wrote " + outside.path() + "/free.txt");
  auto result = run_file(d.state_dir(), run_id, "result.json");
  REQUIRE(result);
  CHECK(json::parse(*result)["sandbox"] == json({{"mode", "none"}}));
}

TEST_CASE("kill -9 of harnessd mid-turn leaves nothing of a sandboxed adapter tree") {
  require_bubblewrap();
  for (const char* command : {"grandchild", "grandchild-detached", "slow 600000"}) {
    INFO(command);
    TempDir workspace;
    Daemon d(sandbox_config("workspace-write", false));
    d.initialize();
    std::string sid = d.new_session(workspace.path());
    // guard -> bwrap -> fake agent: the guard stays the outer process.
    auto [adapter, bwrap] = adapter_pids(d, sid);
    pid_t guard = parent_of(bwrap);
    REQUIRE(guard > 0);
    CHECK(parent_of(guard) == d.pid());
    CHECK(read_file("/proc/" + std::to_string(bwrap) + "/comm") == "bwrap\n");
    CHECK(::getpgid(guard) == guard);
    CHECK(::getpgid(bwrap) == guard);

    d.send_prompt(sid, command);
    auto first = d.recv();
    REQUIRE(first);
    std::string chunk = (*first)["params"]["update"]["content"]["text"];
    pid_t grandchild = -1;
    if (chunk.rfind("grandchild ", 0) == 0) {
      grandchild = std::stoi(chunk.substr(11));
      REQUIRE(process_alive(grandchild));
    }

    kill(d.pid(), SIGKILL);
    CHECK(d.wait_exit(2s) == 128 + SIGKILL);
    auto gone = [&] {
      return !process_alive(adapter) && !process_alive(bwrap) && !process_alive(guard) &&
             (grandchild < 0 || !process_alive(grandchild));
    };
    CHECK(eventually(gone, 2s));
    for (pid_t p : {adapter, bwrap, guard, grandchild}) {
      if (p > 0 && process_alive(p)) kill(p, SIGKILL);
    }
  }
}

TEST_CASE("a cancelled turn in a sandbox ends, and the next prompt runs on a sandboxed adapter again") {
  require_bubblewrap();
  TempDir workspace;
  Daemon d(sandbox_config("workspace-write", false));
  d.initialize();
  std::string sid = d.new_session(workspace.path());
  auto [adapter, bwrap] = adapter_pids(d, sid);
  int id = d.send_prompt(sid, "ignore-sigterm");
  auto first = d.recv();
  REQUIRE(first);
  d.send(notification("session/cancel", {{"sessionId", sid}}));
  json reply = d.recv_reply(id, nullptr, 15s);
  CHECK(reply["result"]["stopReason"] == "cancelled");
  CHECK(eventually([&] { return !process_alive(adapter) && !process_alive(bwrap); }, 5s));
  CHECK(say(d, sid, "write again.txt yes").first == "wrote again.txt");
}

TEST_CASE("without bubblewrap on PATH a sandboxed session is refused at session/new with -32010") {
  TempDir workspace;
  TempDir empty;
  const std::string config = sandbox_config("workspace-write", false);
  std::optional<Daemon> d;
  {
    // The fake agent is named by its absolute path; bwrap is only looked up.
    PathFor path(empty.path());
    d.emplace(config);
  }
  d->initialize();
  json refused = open_session(*d, workspace.path());
  INFO(refused.dump());
  REQUIRE(refused.contains("error"));
  CHECK(refused["error"]["code"] == -32010);
  const std::string message = refused["error"]["message"];
  CHECK(message.find("sandbox") != std::string::npos);
  CHECK(message.find("bubblewrap") != std::string::npos);
  CHECK(message.find("apt-get install bubblewrap") != std::string::npos);
  CHECK(refused["error"]["data"]["reason"] == "sandbox");
  CHECK(refused["error"]["data"]["hint"] == "apt-get install bubblewrap");

  // A profile without a sandbox still runs there: nothing else changed.
  std::optional<Daemon> plain;
  {
    PathFor path(empty.path());
    plain.emplace(fake_config());
  }
  plain->initialize();
  json created = open_session(*plain, workspace.path());
  REQUIRE(created.contains("result"));
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] == json({{"mode", "none"}}));
}

TEST_CASE("harnesses --check says whether the sandbox works here, in text and JSON") {
  require_bubblewrap();
  TempDir dir;
  const std::string config = dir.write("config.toml", sandbox_config("workspace-write", false));
  Output text = run_harnessd({"--config", config, "harnesses", "--check"});
  INFO(text.out << text.err);
  CHECK(text.code == 0);
  CHECK(text.out.find("sandbox: bubblewrap") != std::string::npos);
  CHECK(text.out.find("    sandbox: workspace-write, no network, enforced by bubblewrap") != std::string::npos);

  Output j = run_harnessd({"--config", config, "harnesses", "--check", "--format", "json"});
  CHECK(j.code == 0);
  bool seen = false;
  std::istringstream lines(j.out);
  for (std::string line; std::getline(lines, line);) {
    json h = json::parse(line);
    if (h["name"] != "fake") continue;
    seen = true;
    CHECK(h["sandbox"]["mode"] == "workspace-write");
    CHECK(h["sandbox"]["available"] == true);
    CHECK(h["sandbox"]["enforced"] == true);
    CHECK(h["sandbox"]["network"] == false);
  }
  CHECK(seen);

  // Without bwrap on PATH: said, with the install command, and --check fails.
  TempDir empty;
  Output missing = run_harnessd_env({"PATH=" + empty.path()}, {"--config", config, "harnesses", "--check"});
  INFO(missing.out << missing.err);
  CHECK(missing.code == 1);
  CHECK(missing.out.find("sandbox: none (bubblewrap (bwrap) is not installed") != std::string::npos);
  CHECK(missing.out.find("apt-get install bubblewrap") != std::string::npos);
  Output missing_json =
      run_harnessd_env({"PATH=" + empty.path()}, {"--config", config, "harnesses", "--check", "--format", "json"});
  CHECK(missing_json.out.find("\"available\":false") != std::string::npos);
  CHECK(missing_json.out.find("\"install\":\"apt-get install bubblewrap\"") != std::string::npos);
}

TEST_CASE("sandbox settings in the config are checked") {
  auto error_of = [](const std::string& extra) {
    auto config = harnessd::worker::parse_config(fake_config({}, extra), "test");
    return config ? std::string() : config.error().message;
  };
  CHECK(error_of("sandbox = \"workspace-write\"\nnetwork = false\nwritable = [\"/srv\", \"~/.cache\"]\n").empty());
  CHECK(error_of("sandbox = \"strict\"\n").find(".sandbox must be \"none\", \"read-only\" or \"workspace-write\"") !=
        std::string::npos);
  CHECK(error_of("sandbox = \"read-only\"\nnetwork = \"no\"\n").find(".network must be true or false") !=
        std::string::npos);
  CHECK(error_of("network = false\n").find("network = false needs sandbox") != std::string::npos);
  CHECK(error_of("sandbox = \"workspace-write\"\nwritable = [\"relative/dir\"]\n")
            .find("must be an absolute path or start with ~/") != std::string::npos);
  CHECK(error_of("sandbox = \"workspace-write\"\nwarm = 1\n").find("warm adapters cannot be sandboxed") !=
        std::string::npos);
}

TEST_CASE("session/new may ask for a stricter sandbox than the harness's, never a looser one") {
  require_bubblewrap();
  TempDir workspace;
  OutsideDir outside;
  Listener listener;
  const std::string state = outside.path() + "/state";
  const std::string port = std::to_string(listener.port());
  auto ask = [&](Daemon& d, const json& sandbox) {
    static int next = 1;
    const std::string id = "stricter-" + std::to_string(next++);
    d.send(request(id, "session/new",
                   {{"cwd", workspace.path()},
                    {"mcpServers", json::array()},
                    {"_meta", {{"harnessd", {{"sandbox", sandbox}}}}}}));
    return d.recv_reply(id);
  };
  std::string sid;
  {
    Daemon d(sandbox_config("workspace-write", false), {}, state);
    d.initialize();
    // Looser than the profile's: refused, naming the field.
    for (const json& looser : {json({{"mode", "none"}}), json({{"network", true}}), json({{"mode", "sealed"}})}) {
      json refused = ask(d, looser);
      INFO(refused.dump());
      REQUIRE(refused.contains("error"));
      CHECK(refused["error"]["code"] == -32602);
      CHECK(refused["error"]["data"]["field"].get<std::string>().rfind("_meta.harnessd.sandbox", 0) == 0);
    }
    json created = ask(d, {{"mode", "read-only"}});
    REQUIRE(created.contains("result"));
    sid = created["result"]["sessionId"];
    CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] ==
          json({{"mode", "read-only"}, {"network", false}, {"writable", json::array()}}));
    CHECK(say(d, sid, "write inside.txt no").first == "write failed: Read-only file system");
  }
  // The choice is the session's: it holds in the next lifetime too.
  {
    Daemon again(sandbox_config("workspace-write", false), {}, state);
    again.initialize();
    again.send(request("load", "session/load",
                       {{"sessionId", sid}, {"cwd", workspace.path()}, {"mcpServers", json::array()}}));
    json loaded = again.recv_reply("load");
    REQUIRE(loaded.contains("result"));
    CHECK(say(again, sid, "write inside.txt no").first == "write failed: Read-only file system");
  }

  // A harness without a sandbox gets one when the session asks, and
  // network: false takes its network away.
  Daemon plain;
  plain.initialize();
  CHECK(say(plain, plain.new_session(workspace.path()), "connect 127.0.0.1 " + port).first == "connected");
  json created = ask(plain, {{"mode", "workspace-write"}, {"network", false}});
  REQUIRE(created.contains("result"));
  const std::string plain_sid = created["result"]["sessionId"];
  CHECK(created["result"]["_meta"]["harnessd"]["sandbox"] ==
        json({{"mode", "workspace-write"}, {"network", false}, {"writable", {workspace.path()}}}));
  CHECK(say(plain, plain_sid, "write " + outside.path() + "/x.txt no").first == "write failed: Read-only file system");
  CHECK(say(plain, plain_sid, "write inside.txt yes").first == "wrote inside.txt");
  CHECK(say(plain, plain_sid, "connect 127.0.0.1 " + port).first.rfind("connect failed: ", 0) == 0);
  // network: false alone, without a mode, cannot be enforced.
  json alone = ask(plain, {{"network", false}});
  CHECK(alone["error"]["code"] == -32602);
}

TEST_CASE("a session's stricter sandbox goes with it to another harness chosen before its first prompt") {
  require_bubblewrap();
  TempDir workspace;
  json other = json::array({fake_agent_exe()});
  Daemon d(fake_config() + "\n[harness.other]\ncommand = " + other.dump() + "\n");
  d.initialize();
  d.send(request("new", "session/new",
                 {{"cwd", workspace.path()},
                  {"mcpServers", json::array()},
                  {"_meta", {{"harnessd", {{"sandbox", {{"mode", "read-only"}}}}}}}}));
  json created = d.recv_reply("new");
  REQUIRE(created.contains("result"));
  const std::string sid = created["result"]["sessionId"];
  d.send(request("switch", "session/set_config_option", {{"sessionId", sid}, {"configId", "harness"}, {"value", "other"}}));
  json switched = d.recv_reply("switch");
  INFO(switched.dump());
  REQUIRE(switched.contains("result"));
  CHECK(say(d, sid, "write inside.txt no").first == "write failed: Read-only file system");
  CHECK_FALSE(file_exists(workspace.path() + "/inside.txt"));
}
