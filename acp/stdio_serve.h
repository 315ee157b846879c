// The one stdio serve loop of harnessd and of every bridge: a StdioPeer on
// the inherited fds, a service on top of it, and the orderly end when the
// input ends, the output fails or a signal comes (the service closes, then
// the output is flushed, each bounded), after which the loop runs dry.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "acp/stdio_peer.h"
#include "acp/unique_function.h"

namespace harnessd::acp {

/// What runs on the peer: made once the peer is open, destroyed after the
/// loop has stopped and before it closes.
class StdioService {
 public:
  virtual ~StdioService() = default;
  /// Ends the work in order (answer what is open, stop processes); `done`
  /// runs once that is over. Called once.
  virtual void stop(const std::string& why, UniqueFunction<void()> done) = 0;
  /// Set by serve_stdio: the service asks for the orderly end itself, as if
  /// its input had ended (a worker whose front went silent).
  std::function<void(const std::string& why)> end_input;
};

struct StdioServeOptions {
  StdioPeerOptions peer;
  /// SIGTERM, SIGINT and SIGHUP stop the service too.
  bool handle_signals = true;
  /// When the input ends, calls the peer has not answered fail at once.
  bool fail_pending_at_end = false;
  /// Bound of the whole stop, from its start (0: the service bounds itself).
  std::chrono::milliseconds stop_bound{0};
  /// Bound of the output's flush after the service stopped (0: none of its own).
  std::chrono::milliseconds flush_bound{0};
  /// For log lines ("the daemon", "claude-code bridge").
  std::string what = "server";
};

/// Opens the peer, makes the service with `make`, serves until the end, and
/// returns the exit code: 0, or 1 if the peer could not be opened or a
/// handle was left open.
int serve_stdio(Loop& loop, const StdioServeOptions& options,
                const std::function<std::unique_ptr<StdioService>(StdioPeer&)>& make);

}  // namespace harnessd::acp
