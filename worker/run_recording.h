// One run's folder read back (for `harnessd show`): result.json, the
// prompt, and from events.jsonl the tool calls with their outcome and time,
// the answer and the last usage, as the host was sent them.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace harnessd::worker {

struct RunRecording {
  nlohmann::json result = nlohmann::json::object();  // result.json; {} when missing or not an object
  std::string prompt;                                // prompt.md
  /// [{toolCallId, title, kind, status, durationMs}], in the order they
  /// started; durationMs is null until the call completed or failed.
  nlohmann::json tool_calls = nlohmann::json::array();
  std::string answer;    // the text of every agent_message_chunk, joined
  nlohmann::json usage;  // the last usage_update without sessionUpdate, or null
  /// [{name, bytes}] of the folder, by name; bytes -1 when unknown.
  nlohmann::json files = nlohmann::json::array();
};

/// Reads runs/<run_id>/ beneath the state directory `root` without changing
/// anything (StateAccess::kReadOnly). `run_id` must be a safe id. What is
/// missing, refused or unreadable is left empty; lines that are not what
/// harnessd writes are skipped.
RunRecording read_run_recording(int root, const std::string& run_id);

}  // namespace harnessd::worker
