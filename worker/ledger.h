// The run ledger: one JSON line per run transition in ledger.jsonl. This
// file holds the line format and the index built from it; it does no I/O
// beyond reading a file, so the daemon and the command line share it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/files.h"

namespace harnessd::worker {

/// Run transitions. Exactly one terminal event ends every run.
namespace run_event {
inline constexpr const char* kQueued = "queued";
inline constexpr const char* kStarted = "started";
inline constexpr const char* kCompleted = "completed";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kCancelled = "cancelled";
inline constexpr const char* kTimeout = "timeout";
inline constexpr const char* kInterrupted = "interrupted";
}  // namespace run_event

bool is_terminal_event(const std::string& event);

/// Whether `key` is one of the fields every ledger line has (time, event,
/// runId, sessionId, name, hostSession, harness, requestId, daemon), as
/// opposed to an event's own.
bool is_common_field(std::string_view key);

/// One ledger line. `extra` carries the event's own fields (stopReason,
/// error, reason, timeoutMs, partialOutput).
struct LedgerEntry {
  std::string time;  // ISO 8601, UTC, milliseconds
  std::string event;
  std::string runId;
  std::string sessionId;
  std::optional<std::string> name;
  std::optional<std::string> hostSession;  // written only when the host named the session
  std::string harness;
  nlohmann::json requestId;  // the host's request id, with its JSON type
  std::string daemon;        // the daemon instance that wrote it
  nlohmann::json extra = nlohmann::json::object();

  nlohmann::json to_json() const;
  /// The same object as to_json(), written as text without building it
  /// (the database writer stores one per transition); an `extra` field
  /// takes the place of a common one of the same name, as in to_json().
  std::string to_line() const;
  static std::optional<LedgerEntry> from_json(const nlohmann::json& j);
  /// Whether `other` says the same of the run: its id, session, names,
  /// harness, request and daemon (what the database's row holds of it).
  bool same_run(const LedgerEntry& other) const {
    return runId == other.runId && sessionId == other.sessionId && name == other.name &&
           hostSession == other.hostSession && harness == other.harness && requestId == other.requestId &&
           daemon == other.daemon;
  }
};

/// What the ledger says about one run.
struct RunRecord {
  std::string runId;
  std::string sessionId;
  std::optional<std::string> name;
  std::optional<std::string> hostSession;
  std::string harness;
  nlohmann::json requestId;
  std::string daemon;
  std::string state;  // the last event
  std::string queuedAt, startedAt, endedAt;
  nlohmann::json outcome = nlohmann::json::object();  // the terminal entry's own fields
  int terminal_entries = 0;

  bool ended() const { return terminal_entries > 0; }
  /// Takes `entry` (a transition of this run) into the record.
  void apply(const LedgerEntry& entry);
  nlohmann::json to_json() const;
};

/// Runs in the order they were first seen.
class RunIndex {
 public:
  void apply(const LedgerEntry& entry);
  const RunRecord* find(const std::string& run_id) const;
  const std::vector<std::string>& order() const { return order_; }
  const std::map<std::string, RunRecord>& runs() const { return runs_; }

 private:
  std::map<std::string, RunRecord> runs_;
  std::vector<std::string> order_;
};

/// Result of reading a JSONL file that a crash may have cut short.
struct JsonlRead {
  std::vector<nlohmann::json> lines;
  /// Lines that were not JSON (a cut last line), with their line numbers.
  std::vector<std::size_t> bad_lines;
  /// The file did not end with a newline.
  bool cut = false;
  bool missing = false;
  /// Set when the file is there but was not read (a symbolic link, not a
  /// regular file, another user's): why, naming the file.
  std::string refused;
};

/// Splits JSONL text into values; lines that are not JSON are counted.
JsonlRead parse_jsonl(std::string_view content);

/// Reads a JSONL file; unreadable lines are counted, not fatal. A symbolic
/// link as the last component is not followed (read as `refused`).
JsonlRead read_jsonl(const std::string& path);


}  // namespace harnessd::worker
