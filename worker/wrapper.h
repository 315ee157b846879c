// Commands for wrappers and scripts: `harnessd run` runs one prompt through
// a private daemon and exits with the run's outcome; `harnessd pack` prints
// the prompt a template would make, and runs nothing.
#pragma once

#include <optional>
#include <string>

#include "worker/config.h"

namespace harnessd::worker {

/// Exit codes of `harnessd run` (docs/packaging.md).
namespace run_exit {
inline constexpr int kDone = 0;         // stopReason end_turn
inline constexpr int kFailed = 1;       // failed, or another stop reason
inline constexpr int kUsage = 2;        // bad usage or input; nothing ran
inline constexpr int kTimeout = 3;      // the run passed its deadline
inline constexpr int kInterrupted = 130;  // Ctrl-C or SIGTERM
}  // namespace run_exit

struct WrapperOptions {
  std::optional<std::string> harness;
  std::optional<std::string> session;   // a session name, reused across runs
  std::optional<std::string> summary;   // set as the session's summary first
  std::optional<std::string> mode;      // persistent or oneshot
  std::optional<std::string> template_name;
  std::optional<std::string> context_file;
  std::optional<std::string> cwd;
  double timeout_s = 0;                 // 0: the configured run_timeout
  /// How long to wait while another harnessd process serves the session
  /// (nullopt: as long as it takes; 0: not at all).
  std::optional<double> wait_s;
  std::string approve = "reads";        // all, reads or none
  std::string format = "text";          // text, json or quiet
  std::string progress = "auto";        // the status line on stderr: never, auto (a terminal) or always
  std::string prompt;                   // the text, or "-" for stdin
  /// Go through the state directory's server, starting one if none
  /// listens; without it a listening server is used, else none.
  bool shared = false;
  /// The config file given, for a server that --shared starts.
  std::optional<std::string> config_path;
};

/// `harnessd run`: returns the process exit code (run_exit).
int run_command(const WrapperOptions& options, const Config& config, const std::string& state_dir);

/// `harnessd run --format json` refused before anything ran (a bad option,
/// config or prompt): prints its one object on stdout, exitCode 2 and the
/// error, as for every other end of a run.
void print_refused_run(const std::string& message);

/// "unknown harness 'x' (configured: a, b, ...)".
std::string unknown_harness_message(const std::string& name, const Config& config);

/// `harnessd pack`: prints the packaged prompt; returns the exit code.
int pack_command(const WrapperOptions& options, const Config& config, const std::string& state_dir);

}  // namespace harnessd::worker
