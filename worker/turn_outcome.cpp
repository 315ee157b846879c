#include "worker/turn_outcome.h"

#include <algorithm>
#include <set>
#include <string_view>
#include <vector>

#include "acp/json_write.h"
#include "acp/utf8.h"
#include "worker/ledger.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// The closed set of v1 stop reasons; anything else is an adapter bug.
const std::set<std::string, std::less<>> kStopReasons = {"end_turn", "max_tokens", "max_turn_requests", "refusal",
                                                         "cancelled"};

json cancelled_result() { return {{"stopReason", "cancelled"}}; }

// result.json as json_text(object, 2) writes it, with a newline, built
// without the object: a few members, sorted by name as nlohmann's objects
// are, the outcome's own fields over the facts.
std::string result_file(const std::string& event, const TurnFacts& facts, const json& fields) {
  struct Member {
    explicit Member(std::string_view k) : key(k) {}
    std::string_view key;
    const std::string* text = nullptr;  // a string, or
    std::optional<bool> flag;           // a boolean, or
    const json* value = nullptr;        // one of the fields
  };
  std::vector<Member> members;
  members.reserve(8 + (fields.is_object() ? fields.size() : 0));
  auto add = [&](std::string_view key) -> Member* {
    if (fields.is_object() && fields.contains(key)) return nullptr;  // the outcome's own
    return &members.emplace_back(key);
  };
  for (auto [key, text] : {std::pair{"runId", &facts.run_id}, std::pair{"sessionId", &facts.session_id},
                           std::pair{"state", &event}, std::pair{"endedAt", &facts.ended_at}}) {
    if (Member* m = add(key)) m->text = text;
  }
  if (facts.started_at) {
    if (Member* m = add("startedAt")) m->text = &*facts.started_at;
    if (Member* m = add("partialOutput")) m->flag = facts.partial_output;
  }
  if (facts.adapter_start) {
    if (Member* m = add("adapterStart")) m->value = &*facts.adapter_start;
  }
  if (facts.permissions) {
    if (Member* m = add("permissions")) m->value = &*facts.permissions;
  }
  if (facts.sandbox) {
    if (Member* m = add("sandbox")) m->value = &*facts.sandbox;
  }
  if (facts.worker) {
    if (Member* m = add("worker")) m->value = &*facts.worker;
  }
  if (fields.is_object()) {
    for (const auto& [k, v] : fields.items()) members.emplace_back(k).value = &v;
  }
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) { return a.key < b.key; });
  std::size_t size = 0;
  for (const Member& m : members) size += m.key.size() + (m.text ? m.text->size() : 16) + 8;
  std::string out;
  out.reserve(size + 8);
  out += '{';
  for (const Member& m : members) {
    out += &m == &members.front() ? "\n  " : ",\n  ";
    acp::utf8::append_json_string(out, m.key);
    out += ": ";
    if (m.text) {
      acp::utf8::append_json_string(out, *m.text);
    } else if (m.flag) {
      out += *m.flag ? "true" : "false";
    } else {
      acp::append_json(out, *m.value, 2, 1);
    }
  }
  out += "\n}\n";
  return out;
}

// The run's usage, where the run's end says it (issue 17).
void add_usage(TurnOutcome& o, const TurnFacts& facts) {
  if (facts.usage.is_null()) return;
  if (!o.fields.is_object()) o.fields = json::object();
  o.fields["usage"] = facts.usage;
  if (o.answer) (*o.answer)["_meta"]["harnessd"]["usage"] = facts.usage;
}

// Which worker ran a remote session's run (issue 18).
void add_worker(TurnOutcome& o, const TurnFacts& facts) {
  if (!facts.worker) return;
  // The terminal ledger entry says where the run ran; result.json takes
  // the same fields.
  if (!o.fields.is_object()) o.fields = json::object();
  o.fields["host"] = facts.worker->value("host", "");
  o.fields["worker"] = *facts.worker;
  if (o.answer) (*o.answer)["_meta"]["harnessd"]["worker"] = *facts.worker;
  if (o.failure && o.failure->data.is_object()) o.failure->data["worker"] = *facts.worker;
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
  add_usage(o, facts);
  add_worker(o, facts);
  o.result_file = result_file(o.event, facts, o.fields);
  return o;
}

TurnOutcome cancelled_outcome(const std::string& reason, const TurnFacts& facts) {
  TurnOutcome o;
  o.event = run_event::kCancelled;
  o.fields = {{"reason", reason}};
  o.answer = with_run_id(cancelled_result(), facts.run_id);
  add_usage(o, facts);
  o.result_file = result_file(o.event, facts, o.fields);
  return o;
}

}  // namespace harnessd::worker
