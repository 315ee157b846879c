// AdapterLink: the client side of ACP towards one adapter process. It owns
// the process, frames its stdout into JSON-RPC, keeps a bounded tail of its
// stderr and logs that stderr with a label.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "acp/connection.h"
#include "acp/flow_gate.h"
#include "acp/line_splitter.h"
#include "acp/loop.h"
#include "adapters/cgroups.h"
#include "adapters/live_adapters.h"
#include "adapters/prestart.h"
#include "adapters/process.h"

namespace harnessd::adapters {

struct AdapterOptions {
  ProcessSpec process;
  /// Prefix of log lines, e.g. "session sess_01j...".
  std::string label;
  std::size_t max_line_bytes = 64u << 20;
  /// Bytes of stderr kept for error reports.
  std::size_t stderr_tail_bytes = 8192;
  /// Backpressure (optional): while `output_gate` is closed (whatever the
  /// adapter's output feeds is over its high-water mark) the adapter's
  /// stdout is not read. While the adapter's stdin queue is over
  /// `input_high_water`, the link holds `input_gate` closed, until the
  /// queue is back to `input_low_water`.
  acp::FlowGate* output_gate = nullptr;
  acp::FlowGate* input_gate = nullptr;
  std::size_t input_high_water = 8u << 20;
  std::size_t input_low_water = 2u << 20;
  /// An adapter started ahead of need: taken instead of starting one when
  /// it was started from the same spec (see Prestart::take).
  Prestart* prestart = nullptr;
  /// The adapter's place under [daemon] max_live_adapters, if it takes
  /// one: given back when the link is destroyed, after the tree exited.
  LiveAdapters::Slot slot;
  /// The tree's cgroups, if it has limits; removed with the link.
  std::shared_ptr<AdapterCgroup> cgroup;
};

/// Puts `link`'s tree under `limits` (a cgroup of its own, which the guard
/// joins), or says why it cannot be. Nothing to do without limits.
Expected<void> apply_limits(AdapterOptions& link, const ResourceLimits& limits, const std::string& name);

/// Lifetime: owned by a session. `on_exit` fires once when the process tree
/// has exited and its output is drained; by then the connection is closed
/// and every pending call has failed. Destroy the link from a posted task,
/// never inside its callbacks.
class AdapterLink {
 public:
  static Expected<std::unique_ptr<AdapterLink>> start(acp::Loop& loop, AdapterOptions options,
                                                      std::function<void(const ExitStatus&)> on_exit);
  ~AdapterLink();
  AdapterLink(const AdapterLink&) = delete;
  AdapterLink& operator=(const AdapterLink&) = delete;

  /// JSON-RPC towards the adapter: bind handlers for its requests here.
  acp::Connection& rpc() { return *rpc_; }
  int pid() const { return process_->pid(); }
  bool exited() const { return exit_.has_value(); }
  /// The adapter closed its stdout but kept running (see
  /// Process::Callbacks::on_stdout_closed); the connection is closed.
  bool output_closed() const { return output_closed_; }
  const std::optional<ExitStatus>& exit_status() const { return exit_; }
  /// The last bytes the adapter wrote to stderr.
  std::string stderr_tail() const;
  const std::string& label() const { return options_.label; }
  /// "memory limit" when a limit of the tree killed part of it, else "".
  std::string killed_by() const { return options_.cgroup ? options_.cgroup->killed_by() : ""; }

  /// Sees every line exchanged with the adapter (`outbound`: written to
  /// it) and every byte of its stderr, for recordings. Pass null to stop.
  /// `is_json`: the line parsed (an inbound line that did not is still
  /// shown, as it came).
  using LineTap = std::function<void(bool outbound, std::string_view line, bool is_json)>;
  using StderrTap = std::function<void(std::string_view data)>;
  void set_taps(LineTap lines, StderrTap stderr_tap) {
    line_tap_ = std::move(lines);
    stderr_tap_ = std::move(stderr_tap);
  }

  /// Replaces the exit callback (used when ownership moves to the Reaper).
  void set_on_exit(std::function<void(const ExitStatus&)> on_exit) { on_exit_ = std::move(on_exit); }
  /// Called once if the adapter closes its stdout and keeps running. By
  /// then output_closed() is true and every pending call has failed; the
  /// owner should stop the adapter (its exit is still reported later).
  void set_on_output_closed(std::function<void()> fn) { on_output_closed_ = std::move(fn); }

  /// Closes stdin, SIGTERMs the group, SIGKILLs it after `kill_grace`.
  void terminate(std::chrono::milliseconds kill_grace) { process_->terminate(kill_grace); }
  void close_stdin() { process_->close_stdin(); }
  /// Takes in the stderr bytes already written, so a turn's recording has
  /// what the adapter wrote before its answer.
  void drain_stderr() { process_->drain_stderr(); }

 private:
  AdapterLink(AdapterOptions options, std::function<void(const ExitStatus&)> on_exit);
  void on_stderr(std::string_view data);

  AdapterOptions options_;
  std::function<void(const ExitStatus&)> on_exit_;
  std::function<void()> on_output_closed_;
  LineTap line_tap_;
  StderrTap stderr_tap_;
  std::unique_ptr<acp::Connection> rpc_;
  acp::LineSplitter splitter_;
  std::unique_ptr<Process> process_;
  acp::FlowGate::Subscription output_flow_;
  std::string stderr_tail_;
  std::string stderr_line_;
  std::optional<ExitStatus> exit_;
  bool output_closed_ = false;
};

}  // namespace harnessd::adapters
