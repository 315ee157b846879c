// How a run ends, worked out without I/O: from the way the turn stopped and
// what the adapter answered, the terminal ledger event with its fields, the
// run's result.json, and the host's answer (a result or an error). The
// session records the first two and then answers with the third.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "queue/turn.h"
#include "schema/expected.h"
#include "schema/rpc_error.h"

namespace harnessd::worker {

/// What is known of a run when it ends.
struct TurnFacts {
  std::string run_id;
  std::string session_id;
  std::optional<std::string> started_at;  // none: the turn never began
  std::string ended_at;
  bool partial_output = false;  // the host had been sent some of the answer
  std::chrono::milliseconds timeout{0};
  std::string store_error;  // StopReason::kError: why the run could not be recorded
  std::string state_dir;
  /// How the run's adapter was started, on the first run it served
  /// ({warm, startMs, savedMs?}), for result.json.
  std::optional<nlohmann::json> adapter_start;
  /// The run's permission requests: {asked, allowed, denied, byRule}.
  std::optional<nlohmann::json> permissions;
  /// The session's effective sandbox (adapters::sandbox_json), for result.json.
  std::optional<nlohmann::json> sandbox;
  /// What the run used (usage::of_run), null when its adapter reported
  /// nothing: result.json and the terminal entry get it as `usage`, a
  /// result answer as `_meta.harnessd.usage`.
  nlohmann::json usage;
  /// A remote session's run: {host, runId?}, the worker host and the run id
  /// the worker gave it (its own ledger's), for result.json and the answer.
  std::optional<nlohmann::json> worker;
};

struct TurnOutcome {
  std::string event;                             // the terminal ledger event
  nlohmann::json fields = nlohmann::json::object();  // its own fields on the ledger line
  std::string result_file;                       // the run's result.json, whole
  std::optional<nlohmann::json> answer;          // the host's result, or
  std::optional<RpcError> failure;               // the host's error
};

/// A turn that ran: `stop` is how it was stopped (kNone: the adapter
/// answered `adapter_answer`). `adapter_failure` makes the error of an
/// adapter that broke the protocol, with what harnessd knows of it.
TurnOutcome turn_outcome(queue::StopReason stop, Expected<nlohmann::json, RpcError> adapter_answer,
                         const TurnFacts& facts,
                         const std::function<RpcError(const std::string&)>& adapter_failure);

/// A run cancelled by harnessd for `reason` ("removed before it started",
/// "session closed"): answered with the result stopReason "cancelled".
TurnOutcome cancelled_outcome(const std::string& reason, const TurnFacts& facts);

/// The host's answer, with `_meta.harnessd.runId`.
nlohmann::json with_run_id(nlohmann::json result, const std::string& run_id);
RpcError with_run_id(RpcError error, const std::string& run_id);

}  // namespace harnessd::worker
