// Configuration: built-in defaults, overlaid by the TOML file, overlaid by
// the command line. Loaded once before the event loop starts.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harnesses/profile.h"
#include "schema/expected.h"

namespace harnessd::worker {

/// How long the state directory keeps what ended ([daemon] retention).
struct Retention {
  int keep_days = 30;              // 0: no time bound
  std::size_t keep_runs = 100000;  // 0: no count bound
  bool bounded() const { return keep_days > 0 || keep_runs > 0; }
};

/// What a server does with the running turn of a client that disconnects.
enum class OnDisconnect { kCancel, kContinue };

struct DaemonConfig {
  /// Harness for sessions whose host names none. When the file does not
  /// set it, choose_default_harness picks the first installed harness.
  std::string default_harness = "claude";
  bool default_harness_given = false;
  /// Longest inbound line accepted from the host or an adapter.
  std::size_t max_line_bytes = 64u << 20;
  /// After session/cancel is forwarded, how long the adapter has to answer
  /// before its stdin is closed and its group gets SIGTERM.
  std::chrono::milliseconds cancel_grace{2500};
  /// After SIGTERM, how long before SIGKILL.
  std::chrono::milliseconds kill_grace{1500};
  /// Limit for an adapter's initialize and session/new together.
  std::chrono::milliseconds start_timeout{60000};
  /// Outgoing calls (to the host or an adapter) awaiting an answer at once.
  std::size_t max_pending_calls = 1024;
  /// Backpressure: an outbound queue (to the host, to an adapter, to the
  /// state directory) that holds more than `queue_high_water` bytes stops
  /// the reading of whatever feeds it until it is back to `queue_low_water`.
  std::size_t queue_high_water = 8u << 20;
  std::size_t queue_low_water = 2u << 20;
  /// stderr bytes of an adapter kept for error reports.
  std::size_t stderr_tail_bytes = 8192;
  /// Bytes one run's recording may keep (its frames and its stderr
  /// together); what comes after is counted in result.json, not kept.
  std::size_t max_recording_bytes = 64u << 20;
  /// Turns that may run at once across all sessions.
  std::size_t max_concurrent_runs = 8;
  /// An adapter idle this long is stopped; its session's next prompt
  /// starts a new one that resumes the adapter's session. 0: never.
  std::chrono::milliseconds adapter_idle_ttl{600000};
  /// Adapter processes alive at once (those on their way out included);
  /// when a start finds them all taken, the least recently used idle one
  /// is evicted. 0: default_max_live_adapters().
  std::size_t max_live_adapters = 0;
  /// A harness whose adapter failed to start this many times in a row is
  /// unavailable for `breaker_cooldown`: its prompts fail at once (0: never).
  std::size_t breaker_failures = 3;
  std::chrono::milliseconds breaker_cooldown{30000};
  /// Prompts that may wait per session, besides the running one.
  std::size_t max_queue_depth = 16;
  /// Deadline of a run, counted from its start; 0 means none. Sessions
  /// and prompts may set their own with _meta.harnessd.timeoutMs.
  std::chrono::milliseconds run_timeout{0};
  /// The state directory; empty means $XDG_STATE_HOME/harnessd.
  std::string state_dir;
  /// fdatasync result.json and terminal ledger lines.
  bool fsync = false;
  /// What ended is kept this long ([daemon] retention); applied at start
  /// and by `harnessd gc`.
  Retention retention;
  /// Users' packaging templates (<name>.tmpl); by default the templates/
  /// folder beside the config file.
  std::string template_dir;
  /// The server's socket (unix:PATH); empty: harnessd.sock in the state
  /// directory. See docs/server.md.
  std::string listen;
  /// When set, `harnessd` relays its stdio to this server (unix:PATH).
  std::string connect;
  /// A server with no client and no open prompt exits after this long; 0: never.
  std::chrono::milliseconds idle_exit{0};
  /// `harnessd` and `harnessd run` go through the state directory's
  /// server, starting one when none listens (as --shared does).
  bool shared = false;
  /// A client's running turn when it disconnects: cancelled, or run to its end.
  OnDisconnect on_disconnect = OnDisconnect::kCancel;
  /// `harnessd --worker` (from the command line only): this process serves
  /// a front harnessd on another machine (docs/remote.md). The end of its
  /// input stops every adapter at once, with no cancel grace.
  bool worker = false;
  /// A worker offers its adapters the front's fs/* and terminal/* (which
  /// act on the front's machine) only when this is set.
  bool worker_client_fs = false;
};

/// [daemon] max_live_adapters, or its default.
std::size_t live_adapter_cap(const DaemonConfig& d);

struct Config {
  DaemonConfig daemon;
  std::map<std::string, harnesses::HarnessProfile> harnesses;
  /// The file the configuration came from, empty for built-in defaults.
  std::string source;
};

/// One live adapter per 256 MiB of the machine's memory, between 16 and
/// 1024, and never fewer than `max_concurrent_runs`.
std::size_t default_max_live_adapters(std::size_t max_concurrent_runs);

/// The order in which harnessd looks for an installed harness when the
/// configuration names no default (docs/configuration.md).
const std::vector<std::string>& default_harness_preference();

/// Where the configuration names no default harness: the first harness of
/// default_harness_preference() whose program is found on the PATH its
/// adapter would get. False when none is installed; the default then stays
/// the first of the list, whose start fails with its install hint.
bool choose_default_harness(Config& config);

/// True when the program of `profile` is found on the PATH its adapter
/// would get; otherwise `why` says what is missing.
bool harness_installed(const harnesses::HarnessProfile& profile, std::string* why = nullptr);

/// One message for a machine with no supported harness: what to install
/// for each, one per line.
std::string no_harness_installed_message(const Config& config);

/// The config file harnessd reads when --config is not given:
/// $XDG_CONFIG_HOME/harnessd/config.toml, else ~/.config/harnessd/config.toml.
std::string default_config_path();

/// Parses TOML text. `origin` names the file in error messages.
Expected<Config> parse_config(const std::string& text, const std::string& origin);

/// Loads `path` when given (it must exist); otherwise the default path if
/// that file exists; otherwise the built-in defaults.
Expected<Config> load_config(const std::optional<std::string>& path);

}  // namespace harnessd::worker
