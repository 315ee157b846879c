// The daemon in-process: serve() on a socketpair, driven from the test
// thread, must answer and then close its loop cleanly on EOF.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "daemon_process.h"
#include "worker/config.h"
#include "worker/daemon.h"

using namespace harnessd;
using nlohmann::json;

namespace {
json read_message(int fd, std::string& buffer) {
  for (;;) {
    auto nl = buffer.find('\n');
    if (nl != std::string::npos) {
      json m = json::parse(buffer.substr(0, nl));
      buffer.erase(0, nl + 1);
      return m;
    }
    pollfd p{fd, POLLIN, 0};
    REQUIRE(poll(&p, 1, 10000) == 1);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    REQUIRE(n > 0);
    buffer.append(buf, static_cast<std::size_t>(n));
  }
}
}  // namespace

TEST_CASE("serve() runs in-process with injected fds and exits 0 on EOF") {
  int host_in[2], host_out[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, host_in) == 0);
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, host_out) == 0);
  auto config = worker::parse_config(test::fake_config(), "test");
  REQUIRE(config);
  worker::ServeOptions options;
  options.config = *config;
  options.in_fd = host_in[1];
  options.out_fd = host_out[1];
  options.guard_exe = test::guard_exe();
  options.self_exe = test::harnessd_exe();
  options.handle_signals = false;
  test::TempDir state;
  options.state_dir = state.path();
  int exit_code = -1;
  std::thread daemon([&] { exit_code = worker::serve(std::move(options)); });

  auto send = [&](const json& m) {
    std::string line = m.dump() + "\n";
    REQUIRE(write(host_in[0], line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  };
  std::string buffer;
  send({{"jsonrpc", "2.0"}, {"id", 1}, {"method", "initialize"}, {"params", {{"protocolVersion", 1}}}});
  CHECK(read_message(host_out[0], buffer)["result"]["protocolVersion"] == 1);
  send({{"jsonrpc", "2.0"}, {"id", 2}, {"method", "session/new"}, {"params", {{"cwd", "/tmp"}, {"mcpServers", json::array()}}}});
  std::string sid = read_message(host_out[0], buffer)["result"]["sessionId"];
  send({{"jsonrpc", "2.0"},
        {"id", 3},
        {"method", "session/prompt"},
        {"params", {{"sessionId", sid}, {"prompt", {{{"type", "text"}, {"text", "echo in-process"}}}}}}});
  json update = read_message(host_out[0], buffer);
  CHECK(update["params"]["update"]["content"]["text"] == "in-process");
  CHECK(read_message(host_out[0], buffer)["result"]["stopReason"] == "end_turn");

  shutdown(host_in[0], SHUT_WR);  // EOF for the daemon
  daemon.join();
  CHECK(exit_code == 0);
  for (int fd : {host_in[0], host_out[0]}) close(fd);
}
