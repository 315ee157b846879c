// One run's recording read back (for `harnessd show`): result.json, the
// prompt, and from events.jsonl the tool calls with their outcome and time,
// the answer and the last usage, as the host was sent them.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/segment.h"

namespace harnessd::worker {

struct RunRecording {
  nlohmann::json result = nlohmann::json::object();  // result.json; {} when missing or not an object
  std::string prompt;                                // prompt.md
  /// [{toolCallId, title, kind, status, durationMs}], in the order they
  /// started; durationMs is null until the call completed or failed.
  nlohmann::json tool_calls = nlohmann::json::array();
  std::string answer;    // the text of every agent_message_chunk, joined
  nlohmann::json usage;  // the last usage_update without sessionUpdate, or null
  /// [{name, bytes}] of the run's files, by name.
  nlohmann::json files = nlohmann::json::array();
};

/// The files of run `run_id` of session `session_id` (safe ids), as a run
/// folder held them: its lines of segments/<session_id>.jsonl over what
/// runs/<run_id>/ holds (the whole recording of a run of an earlier
/// harnessd; a run of this one keeps only the files its prompt gave the
/// harness there). Read beneath the state directory `root` without
/// changing anything. Empty when there is nothing of the run.
segment::Run read_run_files(int root, const std::string& run_id, const std::string& session_id);

/// Where a person finds the run's recording, relative to the state
/// directory: its session's segment, or runs/<run_id> for a run recorded by
/// an earlier harnessd.
std::string recording_of(int root, const std::string& run_id, const std::string& session_id);

/// The run's recording, from read_run_files. What is missing, refused or
/// unreadable is left empty; lines that are not what harnessd writes are
/// skipped.
RunRecording read_run_recording(int root, const std::string& run_id, const std::string& session_id);

}  // namespace harnessd::worker
