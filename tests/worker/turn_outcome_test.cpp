// The turn outcome on its own: every way a turn ends, mapped to the ledger
// event, result.json and the host's answer, without a loop or a process.
#include <catch2/catch.hpp>

#include "acp/json_write.h"
#include "worker/turn_outcome.h"

using namespace harnessd;
using namespace harnessd::worker;
using nlohmann::json;
using queue::StopReason;

namespace {

TurnFacts facts() {
  TurnFacts f;
  f.run_id = "run_1";
  f.session_id = "sess_1";
  f.started_at = "2026-12-01T00:00:00.000Z";
  f.ended_at = "2026-12-01T00:00:01.000Z";
  f.partial_output = true;
  f.timeout = std::chrono::milliseconds(1500);
  f.store_error = "No space left on device";
  f.state_dir = "/state";
  return f;
}

RpcError broke(const std::string& what) { return RpcError{-32011, "adapter " + what, json()}; }

TurnOutcome from_adapter(StopReason stop, Expected<json, RpcError> answer) {
  return turn_outcome(stop, answer, facts(), broke);
}

}  // namespace

TEST_CASE("turn outcome: each way a turn ends, as the ledger, result.json and the host see it") {
  struct Row {
    const char* name;
    StopReason stop;
    Expected<json, RpcError> adapter;
    const char* event;
    json fields;
    std::optional<json> answer;  // else the error's code
    int error_code;
  };
  const Row rows[] = {
      {"the adapter's stop reason", StopReason::kNone, json{{"stopReason", "end_turn"}, {"usage", {{"n", 1}}}},
       "completed", {{"stopReason", "end_turn"}},
       json{{"stopReason", "end_turn"}, {"usage", {{"n", 1}}}, {"_meta", {{"harnessd", {{"runId", "run_1"}}}}}}, 0},
      {"max_tokens is a completed run too", StopReason::kNone, json{{"stopReason", "max_tokens"}}, "completed",
       {{"stopReason", "max_tokens"}},
       json{{"stopReason", "max_tokens"}, {"_meta", {{"harnessd", {{"runId", "run_1"}}}}}}, 0},
      {"cancelled whatever the adapter said", StopReason::kCancelled, RpcError{-32603, "gone", json()}, "cancelled",
       json::object(), json{{"stopReason", "cancelled"}, {"_meta", {{"harnessd", {{"runId", "run_1"}}}}}}, 0},
      {"a timeout is never a finished turn", StopReason::kTimeout, json{{"stopReason", "end_turn"}}, "timeout",
       {{"timeoutMs", 1500}, {"partialOutput", true}}, std::nullopt, -32015},
      {"a run that could not be recorded", StopReason::kError, json{{"stopReason", "end_turn"}}, "failed",
       json(), std::nullopt, -32016},
      {"the adapter's error", StopReason::kNone, RpcError{-32000, "model overloaded", json{{"retry", true}}},
       "failed", json(), std::nullopt, -32000},
      {"an invalid stop reason", StopReason::kNone, json{{"stopReason", "done"}}, "failed", json(), std::nullopt,
       -32011},
      {"no stop reason", StopReason::kNone, json::object(), "failed", json(), std::nullopt, -32011},
  };
  for (const auto& row : rows) {
    INFO(row.name);
    TurnOutcome o = from_adapter(row.stop, row.adapter);
    CHECK(o.event == row.event);
    // result.json is written as the object's indented text would be.
    const json result = json::parse(o.result_file);
    CHECK(o.result_file == harnessd::acp::json_text(result, 2) + "\n");
    CHECK(result["state"] == row.event);
    CHECK(result["runId"] == "run_1");
    CHECK(result["sessionId"] == "sess_1");
    CHECK(result["startedAt"] == "2026-12-01T00:00:00.000Z");
    CHECK(result["endedAt"] == "2026-12-01T00:00:01.000Z");
    CHECK(result["partialOutput"] == true);
    // The ledger line's own fields are in result.json too.
    for (auto& [k, v] : o.fields.items()) CHECK(result[k] == v);
    if (row.answer) {
      REQUIRE(o.answer);
      CHECK_FALSE(o.failure);
      CHECK(*o.answer == *row.answer);
    } else {
      CHECK_FALSE(o.answer);
      REQUIRE(o.failure);
      CHECK(o.failure->code == row.error_code);
      CHECK(o.failure->data["runId"] == "run_1");
    }
    if (!row.fields.is_null()) CHECK(o.fields == row.fields);
    if (o.event == "failed") CHECK(o.fields["error"]["code"] == row.error_code);
  }
}

TEST_CASE("turn outcome: the details of failures") {
  TurnOutcome timeout = from_adapter(StopReason::kTimeout, json{{"stopReason", "end_turn"}});
  CHECK(timeout.failure->message == "run run_1 timed out after 1500 ms");
  CHECK(timeout.failure->data == json{{"runId", "run_1"}, {"reason", "timeout"}, {"timeoutMs", 1500},
                                      {"partialOutput", true}});
  TurnOutcome store = from_adapter(StopReason::kError, json{{"stopReason", "end_turn"}});
  CHECK(store.failure->message == "run run_1 failed: it could not be recorded (No space left on device)");
  CHECK(store.failure->data == json{{"runId", "run_1"}, {"reason", "store"}, {"stateDir", "/state"}});
  // An adapter's error keeps its data, under adapterData when it was no object.
  TurnOutcome adapter = from_adapter(StopReason::kNone, RpcError{-32000, "overloaded", json::array({1, 2})});
  CHECK(adapter.failure->message == "overloaded");
  CHECK(adapter.failure->data == json{{"adapterData", {1, 2}}, {"runId", "run_1"}});
  TurnOutcome invalid = from_adapter(StopReason::kNone, json{{"stopReason", 7}});
  CHECK(invalid.failure->message == "adapter answered session/prompt with an invalid stopReason 7");
}

TEST_CASE("turn outcome: runs harnessd cancels itself") {
  TurnFacts never = facts();
  never.started_at.reset();
  TurnOutcome removed = cancelled_outcome("removed before it started", never);
  CHECK(removed.event == "cancelled");
  CHECK(removed.fields == json{{"reason", "removed before it started"}});
  CHECK(json::parse(removed.result_file) == json{{"runId", "run_1"}, {"sessionId", "sess_1"}, {"state", "cancelled"},
                                    {"endedAt", "2026-12-01T00:00:01.000Z"}, {"reason", "removed before it started"}});
  CHECK(*removed.answer == json{{"stopReason", "cancelled"}, {"_meta", {{"harnessd", {{"runId", "run_1"}}}}}});
  TurnOutcome closed = cancelled_outcome("session closed", facts());
  const json closed_result = json::parse(closed.result_file);
  CHECK(closed.result_file == harnessd::acp::json_text(closed_result, 2) + "\n");
  CHECK(closed_result["startedAt"] == "2026-12-01T00:00:00.000Z");
  CHECK(closed_result["partialOutput"] == true);
  CHECK(closed_result["reason"] == "session closed");
  CHECK_FALSE(closed.failure);
}
