// The daemon: ACP on stdio until the host closes stdin or a stop signal.
#pragma once

#include <optional>
#include <string>

#include "worker/config.h"
#include "worker/store.h"

namespace harnessd::worker {

struct ServeOptions {
  Config config;
  /// fds of the host connection (tests pass pipes; the binary passes 0, 1).
  int in_fd = 0;
  int out_fd = 1;
  /// The executable to run as the guard of adapter groups; empty disables it.
  std::string guard_exe;
  /// The harnessd executable (for `harnessd adapter <bridge>`); empty: this one.
  std::string self_exe;
  /// Watch SIGTERM, SIGINT and SIGHUP as "shut down".
  bool handle_signals = true;
  /// The state directory (ledger, sessions, runs); empty: the default.
  std::string state_dir;
  StoreOptions store;
};

/// Serves one host until it goes away. Returns the process exit code:
/// 0 after a clean shutdown, 1 when stdio could not be set up.
int serve(ServeOptions options);

struct SocketServeOptions {
  ServeOptions serve;
  /// The socket to create (unix:PATH's PATH), or
  std::string path;
  /// a listening socket already open (systemd's); -1: none.
  int listen_fd = -1;
};

/// Serves every client that connects to the socket, over one engine, until
/// a stop signal or config.daemon.idle_exit with nothing to do. Returns 0
/// after a clean shutdown, 1 when the socket could not be opened.
int serve_socket(SocketServeOptions options);

/// The server's socket when none is configured: harnessd.sock in the state
/// directory.
std::string server_socket_path(const std::string& state_dir);


}  // namespace harnessd::worker
