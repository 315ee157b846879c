#include "worker/turn_outcome.h"

#include <set>

#include "worker/ledger.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// The closed set of v1 stop reasons; anything else is an adapter bug.
const std::set<std::string, std::less<>> kStopReasons = {"end_turn", "max_tokens", "max_turn_requests", "refusal",
                                                         "cancelled"};

json cancelled_result() { return {{"stopReason", "cancelled"}}; }

json result_file(const std::string& event, const TurnFacts& facts, const json& fields) {
  json out = {{"runId", facts.run_id}, {"sessionId", facts.session_id}, {"state", event}, {"endedAt", facts.ended_at}};
  if (facts.started_at) {
    out["startedAt"] = *facts.started_at;
    out["partialOutput"] = facts.partial_output;
  }
  for (auto& [k, v] : fields.items()) out[k] = v;
  return out;
}

}  // namespace

json with_run_id(json result, const std::string& run_id) {
  if (!result.is_object()) result = json::object();
  json& meta = result["_meta"];
  if (!meta.is_object()) meta = json::object();
  json& ours = meta["harnessd"];
  if (!ours.is_object()) ours = json::object();
  ours["runId"] = run_id;
  return result;
}

RpcError with_run_id(RpcError error, const std::string& run_id) {
  if (!error.data.is_object()) {
    json original = std::move(error.data);
    error.data = json::object();
    if (!original.is_null()) error.data["adapterData"] = std::move(original);
  }
  error.data["runId"] = run_id;
  return error;
}

TurnOutcome turn_outcome(queue::StopReason stop, Expected<json, RpcError> adapter_answer, const TurnFacts& facts,
                         const std::function<RpcError(const std::string&)>& adapter_failure) {
  TurnOutcome o;
  const std::string& run_id = facts.run_id;
  switch (stop) {
    case queue::StopReason::kCancelled:
      // ACP "cancellation": a cancelled turn is answered with the result
      // stopReason "cancelled", never an error, whatever the adapter said.
      o.event = run_event::kCancelled;
      o.answer = with_run_id(cancelled_result(), run_id);
      break;
    case queue::StopReason::kTimeout: {
      // Whatever the adapter managed to say, a run past its deadline is not
      // a finished turn.
      const auto ms = facts.timeout.count();
      o.event = run_event::kTimeout;
      o.fields = {{"timeoutMs", ms}, {"partialOutput", facts.partial_output}};
      o.failure = RpcError{rpc_code::kRunTimeout,
                           "run " + run_id + " timed out after " + std::to_string(ms) + " ms",
                           {{"runId", run_id}, {"reason", "timeout"}, {"timeoutMs", ms},
                            {"partialOutput", facts.partial_output}}};
      break;
    }
    case queue::StopReason::kError:
      o.event = run_event::kFailed;
      o.failure = RpcError{rpc_code::kStoreFailed,
                           "run " + run_id + " failed: it could not be recorded (" + facts.store_error + ")",
                           {{"runId", run_id}, {"reason", "store"}, {"stateDir", facts.state_dir}}};
      o.fields = {{"error", *o.failure}};
      break;
    case queue::StopReason::kNone: {
      if (!adapter_answer) {
        o.event = run_event::kFailed;
        o.failure = with_run_id(adapter_answer.error(), run_id);
        o.fields = {{"error", *o.failure}};
        break;
      }
      json& result = *adapter_answer;
      json reason = result.is_object() ? result.value("stopReason", json()) : json();
      if (!reason.is_string() || !kStopReasons.count(reason.get<std::string>())) {
        o.event = run_event::kFailed;
        o.failure = with_run_id(adapter_failure("answered session/prompt with an invalid stopReason " + reason.dump()),
                                run_id);
        o.fields = {{"error", *o.failure}};
      } else {
        o.event = run_event::kCompleted;
        o.fields = {{"stopReason", reason}};
        o.answer = with_run_id(std::move(result), run_id);
      }
      break;
    }
  }
  o.result_file = result_file(o.event, facts, o.fields);
  return o;
}

TurnOutcome cancelled_outcome(const std::string& reason, const TurnFacts& facts) {
  TurnOutcome o;
  o.event = run_event::kCancelled;
  o.fields = {{"reason", reason}};
  o.answer = with_run_id(cancelled_result(), facts.run_id);
  o.result_file = result_file(o.event, facts, o.fields);
  return o;
}

}  // namespace harnessd::worker
