// StdioPeer: a JSON-RPC connection over a pair of inherited fds (stdin and
// stdout): the reader, NDJSON framing, the connection and the ordered
// writer, wired together. Used by the daemon and by every bridge.
#pragma once

#include <functional>
#include <memory>

#include "acp/connection.h"
#include "acp/line_splitter.h"
#include "acp/loop.h"
#include "acp/stream.h"
#include "schema/expected.h"

namespace harnessd::acp {

/// Makes fd 1 safe: the protocol gets a private duplicate of stdout
/// (returned, close-on-exec) and fd 1 is pointed at stderr, so a stray
/// write to stdout can never corrupt the protocol stream. -1 on error.
int protect_stdout();

struct StdioPeerOptions {
  int in_fd = 0;
  int out_fd = 1;
  ConnectionOptions connection;
  std::size_t max_line_bytes = 64u << 20;
};

/// Lifetime: the owner keeps it until the loop has stopped; close() drops
/// the fds' handles so the loop can run dry.
class StdioPeer {
 public:
  static Expected<std::unique_ptr<StdioPeer>> open(Loop& loop, StdioPeerOptions options);
  StdioPeer(const StdioPeer&) = delete;
  StdioPeer& operator=(const StdioPeer&) = delete;

  Connection& rpc() { return *rpc_; }

  /// Starts reading. `on_end` runs (posted, outside the read callback) once
  /// the input has ended (status 0) or failed (a libuv error).
  void start(std::function<void(int status)> on_end);
  /// Runs once if writing fails (the peer closed its end).
  void on_write_error(std::function<void(int status)> fn);
  /// Backpressure on the output: see Writer::set_watermarks.
  void set_output_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn);
  /// Stops and restarts reading the input (backpressure towards the peer:
  /// its writes block once the pipe is full). Nothing read is lost.
  void pause_input();
  void resume_input();
  /// Runs `fn` once everything written so far is out (at once if nothing is
  /// pending or the writer is gone).
  void flush(std::function<void()> fn);
  /// Closes the connection and the fds' handles. Idempotent.
  void close();

 private:
  StdioPeer(Loop& loop, StdioPeerOptions options);

  Loop& loop_;
  StdioPeerOptions options_;
  std::unique_ptr<Reader> in_;
  std::unique_ptr<Writer> out_;
  std::unique_ptr<Connection> rpc_;
  LineSplitter splitter_;
};

}  // namespace harnessd::acp
