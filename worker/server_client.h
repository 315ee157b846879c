// The command line as a client of the state directory's server: finding
// it, starting one on demand (--shared), and a small blocking ACP client
// for the commands that ask it something (watch, wait, cancel, close,
// status).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "schema/expected.h"
#include "schema/rpc_error.h"
#include "worker/config.h"

namespace harnessd::worker {

/// The socket of the server of `state_dir`: [daemon] listen, else
/// harnessd.sock in the state directory.
std::string server_address(const Config& config, const std::string& state_dir);

/// How long a server that --shared starts stays with nothing to do:
/// [daemon] idle_exit, else 300 s.
std::chrono::milliseconds shared_idle_exit(const Config& config);

/// A connection to the server when one listens there; nullopt otherwise.
std::optional<int> connect_server(const std::string& path);

/// Connects to the server at `path`, starting one first when none listens:
/// `harnessd [--config C] --state-dir S serve --listen unix:PATH
/// --idle-exit N` in a session of its own, detached, its log appended to
/// server.log in the state directory. Two callers racing end up on one
/// server (the socket's lock decides). The error says what failed.
Expected<int> connect_or_start_server(const std::string& path, const std::optional<std::string>& config_path,
                                      const std::string& state_dir, std::chrono::milliseconds idle_exit);

/// A blocking JSON-RPC client over a connected socket, initialized.
class ServerClient {
 public:
  using Notification = std::function<void(const nlohmann::json& message)>;
  /// Takes the fd; sends initialize.
  static Expected<ServerClient> open(int fd);
  ServerClient(ServerClient&& other) noexcept;
  ~ServerClient();
  ServerClient(const ServerClient&) = delete;
  ServerClient& operator=(const ServerClient&) = delete;
  ServerClient& operator=(ServerClient&&) = delete;

  /// Sends a request and waits for its answer; notifications that come
  /// meanwhile go to `on_note`. A lost connection is an error (-32603).
  Expected<nlohmann::json, RpcError> call(const std::string& method, nlohmann::json params,
                                          const Notification& on_note = nullptr);
  void notify(const std::string& method, nlohmann::json params);
  /// Reads one message; nullopt when the connection ended.
  std::optional<nlohmann::json> next();

 private:
  explicit ServerClient(int fd) : fd_(fd) {}
  bool write_line(const nlohmann::json& message);

  int fd_ = -1;
  std::string buffer_;
  long long next_id_ = 1;
};

}  // namespace harnessd::worker
