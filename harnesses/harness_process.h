// HarnessProcess: a harness CLI started by a bridge, with its stdout split
// into lines (or passed raw), a bounded stderr tail that is also echoed to
// the bridge's stderr, and the kill ladder.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "acp/line_splitter.h"
#include "acp/loop.h"
#include "adapters/process.h"
#include "schema/expected.h"

namespace harnessd::harnesses {

/// The owner keeps it until on_exit has fired and destroys it from a posted
/// task, never inside its callbacks.
class HarnessProcess {
 public:
  struct Callbacks {
    /// Each stdout line (without its LF), when set.
    std::function<void(std::string_view line)> on_line;
    /// Raw stdout bytes, when on_line is not set.
    std::function<void(std::string_view data)> on_data;
    /// Once, after the exit and after stdout and stderr were drained.
    std::function<void(const adapters::ExitStatus&)> on_exit;
  };

  /// Spawns `spec` (argv[0] looked up on the PATH of spec.env) under the
  /// guard, in its own process group.
  static Expected<std::unique_ptr<HarnessProcess>> start(acp::Loop& loop, adapters::ProcessSpec spec,
                                                         Callbacks callbacks);

  void write(std::string data) { process_->write(std::move(data)); }
  void close_stdin() { process_->close_stdin(); }
  void signal_group(int sig) { process_->signal_group(sig); }
  /// stdin closed, SIGTERM to the group, SIGKILL after `grace`.
  void terminate(std::chrono::milliseconds grace) { process_->terminate(grace); }
  bool exited() const { return process_->exited(); }
  int pid() const { return process_->pid(); }
  const std::string& stderr_tail() const { return stderr_tail_; }

 private:
  HarnessProcess() = default;

  std::unique_ptr<adapters::Process> process_;
  std::unique_ptr<acp::LineSplitter> splitter_;
  Callbacks callbacks_;
  std::string stderr_tail_;
};

/// A bridge session's harness process from start to gone. It owns the
/// process, lets go of it from a posted task once it has exited (never
/// inside its callbacks), and then runs the session's pending close.
class ProcessSlot {
 public:
  explicit ProcessSlot(acp::Loop& loop) : loop_(loop) {}
  ProcessSlot(const ProcessSlot&) = delete;
  ProcessSlot& operator=(const ProcessSlot&) = delete;

  void hold(std::unique_ptr<HarnessProcess> process) { process_ = std::move(process); }
  HarnessProcess* operator->() const { return process_.get(); }
  /// Held: started, and its exit not yet handled.
  explicit operator bool() const { return process_ != nullptr; }
  bool running() const { return process_ && !process_->exited(); }
  /// Stdin closed, SIGTERM to the group, SIGKILL after `grace`, if it runs.
  void terminate(std::chrono::milliseconds grace) {
    if (running()) process_->terminate(grace);
  }
  /// Stops the process; `done` runs once it is gone (at once if none runs).
  void close(std::chrono::milliseconds grace, std::function<void()> done);
  /// Called from the process's exit callback, after the session has used it.
  void release();

 private:
  acp::Loop& loop_;
  std::unique_ptr<HarnessProcess> process_;
  std::function<void()> on_gone_;
};

/// `data` of the error for a harness that exited badly: the stderr tail and
/// the exit code or signal.
nlohmann::json exit_error_data(const adapters::ExitStatus& status, const std::string& stderr_tail);

/// Writes `text` to a new private file `$TMPDIR/<prefix>-XXXXXX`; its path.
Expected<std::string> write_temp_file(const std::string& prefix, const std::string& text);

/// This process's environment plus `extra` (NAME=value entries win).
std::vector<std::string> environment_with(const std::vector<std::string>& extra);

}  // namespace harnessd::harnesses
