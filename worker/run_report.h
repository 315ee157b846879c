// What `harnessd run` says when a run is over: for a person, the end line
// on stderr (after the harness's last stderr lines on a failure); for
// scripts, one JSON object on stdout (docs/packaging.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "schema/rpc_error.h"
#include "worker/wrapper.h"

namespace harnessd::worker {

/// What one run came to, as `harnessd run` learned it from the engine.
struct RunOutcome {
  int exit_code = run_exit::kFailed;
  std::string session_id;
  std::string run_id;
  std::string stop_reason;
  std::string text;  // the answer, as it was streamed
  nlohmann::json usage;
  std::optional<RpcError> error;
  bool interrupted = false;
  std::vector<std::string> refused;                        // titles of the permission requests refused
  nlohmann::json adapter_meta = nlohmann::json::object();  // the answer's _meta without harnessd's
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

/// Reports `run` once its recording is complete under `state_dir`. With
/// `format` "text", ends the answer's last line on stdout, then writes the
/// end line on stderr; with "json", writes the object on stdout; otherwise
/// nothing. Nothing is written to stdout once `stdout_open` is false, and
/// a failed write there sets it false.
void report_run(const RunOutcome& run, const std::string& format, const std::string& state_dir, bool& stdout_open);

}  // namespace harnessd::worker
