// HarnessProcess: a harness CLI started by a bridge, with its stdout split
// into lines (or passed raw), a bounded stderr tail that is also echoed to
// the bridge's stderr, and the kill ladder.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

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
  static Expected<std::unique_ptr<HarnessProcess>> start(Loop& loop, adapters::ProcessSpec spec, Callbacks callbacks);

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
  std::unique_ptr<LineSplitter> splitter_;
  Callbacks callbacks_;
  std::string stderr_tail_;
};

/// This process's environment plus `extra` (NAME=value entries win).
std::vector<std::string> environment_with(const std::vector<std::string>& extra);

}  // namespace harnessd::harnesses
