#include "worker/server_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "acp/connection.h"
#include "acp/files.h"
#include "acp/unix_socket.h"
#include "adapters/process.h"
#include "harnessd_version.h"
#include "schema/acp.h"
#include "schema/json_parse.h"
#include "worker/daemon.h"

namespace harnessd::worker {

using nlohmann::json;

std::string server_address(const Config& config, const std::string& state_dir) {
  if (!config.daemon.listen.empty()) {
    if (auto path = acp::parse_unix_address(config.daemon.listen)) return *path;
  }
  return server_socket_path(state_dir);
}

std::chrono::milliseconds shared_idle_exit(const Config& config) {
  return config.daemon.idle_exit.count() > 0 ? config.daemon.idle_exit : std::chrono::milliseconds(300000);
}

std::optional<int> connect_server(const std::string& path) {
  auto fd = acp::connect_unix(path);
  if (!fd) return std::nullopt;
  return *fd;
}

Expected<int> connect_or_start_server(const std::string& path, const std::optional<std::string>& config_path,
                                      const std::string& state_dir, std::chrono::milliseconds idle_exit) {
  if (auto fd = connect_server(path)) return *fd;
  // The state directory (0700) holds the socket and the server's log.
  ::mkdir(state_dir.c_str(), 0700);
  const std::string log = state_dir + "/server.log";
  std::vector<std::string> argv = {adapters::self_executable()};
  if (config_path) argv.insert(argv.end(), {"--config", *config_path});
  argv.insert(argv.end(), {"--state-dir", state_dir, "serve", "--listen", "unix:" + path, "--idle-exit",
                           std::to_string(static_cast<double>(idle_exit.count()) / 1000.0)});
  pid_t pid = ::fork();
  if (pid < 0) return Error{std::string("cannot start a server: fork: ") + std::strerror(errno)};
  if (pid == 0) {
    // Detached twice over: a session of its own, and a parent (the middle
    // child) that is gone, so no terminal or caller's signal reaches it.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    // It holds no directory of the caller's.
    if (::chdir("/") != 0) ::_exit(127);
    int null = ::open("/dev/null", O_RDWR);
    int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(err >= 0 ? err : null, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // Up once its socket takes connections (its own, or a racing starter's).
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < end) {
    if (auto fd = connect_server(path)) return *fd;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Error{"started a harnessd server for " + state_dir + ", but it did not listen on " + path +
               " within 15 s; see " + log};
}

Expected<ServerClient> ServerClient::open(int fd) {
  ServerClient c(fd);
  json params = {{"protocolVersion", schema::kProtocolVersion},
                 {"clientCapabilities", json::object()},
                 {"clientInfo", {{"name", "harnessd-cli"}, {"version", HARNESSD_VERSION}}}};
  auto init = c.call("initialize", std::move(params));
  if (!init) return Error{"the server refused initialize: " + init.error().message};
  return c;
}

ServerClient::ServerClient(ServerClient&& other) noexcept
    : fd_(other.fd_), buffer_(std::move(other.buffer_)), next_id_(other.next_id_) {
  other.fd_ = -1;
}

ServerClient::~ServerClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool ServerClient::write_line(const json& message) { return acp::write_all(fd_, acp::to_line(message)) == 0; }

void ServerClient::notify(const std::string& method, json params) {
  write_line({{"jsonrpc", "2.0"}, {"method", method}, {"params", std::move(params)}});
}

std::optional<json> ServerClient::next() {
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      json m = schema::parse_or_discard(line);
      if (m.is_object()) return m;
      continue;
    }
    char buf[65536];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

Expected<json, RpcError> ServerClient::call(const std::string& method, json params, const Notification& on_note) {
  const long long id = next_id_++;
  if (!write_line({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}})) {
    return RpcError::internal(method + ": the server closed the connection");
  }
  while (auto m = next()) {
    if (!m->contains("method") && m->value("id", json()) == id) {
      if (m->contains("error")) {
        const json& e = (*m)["error"];
        return RpcError{e.value("code", -32603), e.value("message", std::string("error")), e.value("data", json())};
      }
      return m->value("result", json::object());
    }
    if (on_note && m->contains("method")) on_note(*m);
  }
  return RpcError::internal(method + ": the server closed the connection");
}

}  // namespace harnessd::worker
