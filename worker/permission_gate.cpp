#include "worker/permission_gate.h"

#include <chrono>
#include <utility>

#include "acp/files.h"
#include "acp/json_write.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "worker/approvals.h"
#include "worker/state_db.h"

namespace harnessd::worker {

using harnesses::PolicyAction;
using nlohmann::json;

namespace {

// A turn's tool calls are remembered up to this many; a request about an
// older one is judged by what it says itself.
constexpr std::size_t kMaxCalls = 1024;

std::int64_t since_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// The option of the first of `kinds` the request offers.
json option_of(const json& params, std::initializer_list<const char*> kinds) {
  if (!params.contains("options") || !params["options"].is_array()) return nullptr;
  for (const char* k : kinds) {
    for (const json& o : params["options"]) {
      if (o.is_object() && o.value("kind", json()) == k && o.contains("optionId")) return o;
    }
  }
  return nullptr;
}

// The kind of the option an answer selected ("" when it selected none).
std::string selected_kind(const json& params, const json& result) {
  const json outcome = result.is_object() ? result.value("outcome", json()) : json();
  if (!outcome.is_object() || outcome.value("outcome", json()) != "selected") return "";
  const json id = outcome.value("optionId", json());
  if (params.contains("options") && params["options"].is_array()) {
    for (const json& o : params["options"]) {
      if (o.is_object() && o.value("optionId", json()) == id && o.contains("kind") && o["kind"].is_string()) {
        return o["kind"].get<std::string>();
      }
    }
  }
  return "";
}

}  // namespace

struct PermissionGate::Pending {
  json params;
  acp::Reply reply;
  harnesses::ToolCallFacts facts;
  std::string tool_call_id;
  std::string run_id;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  bool asked = false;  // went to the host
  std::unique_ptr<acp::Timer> timer;
};

PermissionGate::PermissionGate(Runtime& rt, std::string session_id, Hooks hooks)
    : rt_(rt), session_id_(std::move(session_id)), hooks_(std::move(hooks)) {}

PermissionGate::~PermissionGate() { *alive_ = false; }

void PermissionGate::note(const json& update) {
  const json id = update.value("toolCallId", json());
  if (!id.is_string()) return;
  auto it = calls_.find(id.get<std::string>());
  if (it == calls_.end()) {
    if (calls_.size() >= kMaxCalls) return;
    it = calls_.emplace(id.get<std::string>(), json::object()).first;
  }
  for (const auto& [k, v] : update.items()) {
    if (k != "sessionUpdate" && k != "content" && !v.is_null()) it->second[k] = v;
  }
}

void PermissionGate::turn_started() {
  calls_.clear();
  summary_ = nullptr;
}

json PermissionGate::take_summary() { return std::exchange(summary_, nullptr); }

void PermissionGate::request(const json& params, acp::Reply reply, AskHost ask) {
  auto p = std::make_shared<Pending>();
  p->params = params;
  p->reply = std::move(reply);
  const json tool_call = params.is_object() ? params.value("toolCall", json::object()) : json::object();
  if (tool_call.is_object() && tool_call.contains("toolCallId") && tool_call["toolCallId"].is_string()) {
    p->tool_call_id = tool_call["toolCallId"].get<std::string>();
  }
  auto earlier = calls_.find(p->tool_call_id);
  p->facts = harnesses::facts_of(tool_call, earlier == calls_.end() ? json() : earlier->second);
  if (RunRecorder* r = hooks_.recorder()) p->run_id = r->run_id();
  const Scope& scope = hooks_.scope();
  const harnesses::PolicyDecision d = harnesses::decide(scope.policy, p->facts, scope.cwd);
  if (d.action != PolicyAction::kAsk) return conclude(p, d.action, d.by);
  consult_approvals(std::move(p), std::move(ask));
}

void PermissionGate::consult_approvals(std::shared_ptr<Pending> p, AskHost ask) {
  // Read at every request (not cached), so that `harnessd approvals
  // --forget` takes effect at once.
  rt_.store.with_database(
      [session = session_id_, harness = hooks_.scope().harness](StateDb& db) -> Expected<json> {
        auto list = approvals_for(db, session, harness);
        if (!list) return std::move(list).error();
        json out = json::array();
        for (const auto& a : *list) {
          json j = a.to_json();
          out.push_back(std::move(j));
        }
        return out;
      },
      [this, alive = std::weak_ptr<bool>(alive_), p, ask = std::move(ask)](Expected<json> found) mutable {
        if (alive.expired()) {
          p->reply.result({{"outcome", {{"outcome", "cancelled"}}}});
          return;
        }
        if (!found) {
          acp::log::warn("session " + session_id_ + ": cannot read remembered approvals (" + found.error().message +
                         "); asking the host");
        } else {
          const Scope& scope = hooks_.scope();
          for (const json& j : *found) {
            Approval a;
            a.id = j.value("id", 0);
            a.action = j.value("action", "");
            a.kind = j.value("kind", "");
            if (j.contains("command")) a.command = j["command"].get<std::string>();
            a.paths = j.value("paths", std::vector<std::string>{});
            if (!covers(a, p->facts, scope.cwd)) continue;
            return conclude(p, a.action == "allow" ? PolicyAction::kAllow : PolicyAction::kDeny,
                            "remembered " + std::to_string(a.id));
          }
        }
        ask_host(std::move(p), std::move(ask));
      });
}

void PermissionGate::ask_host(std::shared_ptr<Pending> p, AskHost ask) {
  p->asked = true;
  const Scope& scope = hooks_.scope();
  if (scope.policy.ask_timeout.count() > 0) {
    p->timer = std::make_unique<acp::Timer>(rt_.loop);
    p->timer->start(scope.policy.ask_timeout, [this, alive = std::weak_ptr<bool>(alive_), weak = std::weak_ptr<Pending>(p)] {
      auto pending = weak.lock();
      if (alive.expired() || !pending || !pending->reply.pending()) return;
      conclude(pending, hooks_.scope().policy.ask_fallback, "ask_timeout");
    });
  }
  json out = p->params;
  ask(std::move(out), [this, alive = std::weak_ptr<bool>(alive_), p](acp::Connection::CallResult r) mutable {
    if (p->timer) p->timer->stop();
    if (!p->reply.pending()) return;  // decided meanwhile (ask_timeout): the late answer is dropped
    if (alive.expired()) {
      p->reply.result({{"outcome", {{"outcome", "cancelled"}}}});
      return;
    }
    host_answered(p, std::move(r));
  });
}

void PermissionGate::host_answered(const std::shared_ptr<Pending>& p, acp::Connection::CallResult r) {
  if (!r) {
    if (r.error().code == rpc_code::kPeerGone) {
      const json& data = r.error().data;
      if (data.is_object() && data.value("clientGone", false)) {
        // The client that asked left a server that goes on: the policy's
        // fallback decides, and the turn goes on.
        return conclude(p, hooks_.scope().policy.ask_fallback, "client gone");
      }
      // The host itself is gone and its turns end: ACP's answer for a
      // request of a turn that is being cancelled.
      audit(*p, "cancelled", "host gone", nullptr);
      p->reply.result({{"outcome", {{"outcome", "cancelled"}}}});
      return;
    }
    audit(*p, "error", "host", nullptr);
    p->reply.error(r.error());
    return;
  }
  const std::string kind = selected_kind(p->params, *r);
  const bool allowed = kind == "allow_once" || kind == "allow_always";
  const json outcome = r->is_object() ? r->value("outcome", json()) : json();
  audit(*p, allowed ? "allow" : (kind.empty() && outcome.is_object() && outcome.value("outcome", json()) == "cancelled")
                                    ? "cancelled"
                                    : "deny",
        "host", kind.empty() ? json() : json(kind));
  if (kind == "allow_always" || kind == "reject_always") remember(*p, kind);
  p->reply.result(std::move(*r));
}

void PermissionGate::conclude(const std::shared_ptr<Pending>& p, PolicyAction action, const std::string& by) {
  if (p->timer) p->timer->stop();
  json option;
  if (!(hooks_.cancelling && hooks_.cancelling())) {
    option = action == PolicyAction::kAllow ? option_of(p->params, {"allow_once", "allow_always"})
                                            : option_of(p->params, {"reject_once", "reject_always"});
  }
  if (option.is_null()) {
    // Cancelling, or no option says it: refused without choosing one.
    audit(*p, "cancelled", by, nullptr);
    p->reply.result({{"outcome", {{"outcome", "cancelled"}}}});
    return;
  }
  audit(*p, action == PolicyAction::kAllow ? "allow" : "deny", by, option.value("kind", json()));
  p->reply.result({{"outcome", {{"outcome", "selected"}, {"optionId", option["optionId"]}}}});
}

void PermissionGate::remember(const Pending& p, const std::string& option_kind) {
  const Scope& scope = hooks_.scope();
  Approval a = approval_for(p.facts, scope.cwd);
  a.scope = scope.policy.remember;
  a.session_id = session_id_;
  a.harness = scope.harness;
  a.action = option_kind == "allow_always" ? "allow" : "deny";
  a.created_at = acp::iso_time();
  a.run_id = p.run_id;
  rt_.store.with_database(
      [a](StateDb& db) -> Expected<json> {
        auto id = save_approval(db, a);
        if (!id) return std::move(id).error();
        return json(*id);
      },
      [session = session_id_](Expected<json> saved) {
        if (!saved) acp::log::warn("session " + session + ": cannot remember an approval: " + saved.error().message);
      });
}

void PermissionGate::audit(const Pending& p, const std::string& decision, const std::string& by, const json& option) {
  if (!summary_.is_object()) {
    summary_ = {{"asked", 0}, {"allowed", 0}, {"denied", 0}, {"byRule", json::object()}};
  }
  if (p.asked) summary_["asked"] = summary_["asked"].get<int>() + 1;
  if (decision == "allow") summary_["allowed"] = summary_["allowed"].get<int>() + 1;
  if (decision == "deny" || decision == "cancelled") summary_["denied"] = summary_["denied"].get<int>() + 1;
  json& n = summary_["byRule"][by];
  n = n.is_number() ? n.get<int>() + 1 : 1;

  json entry = {{"toolCallId", p.tool_call_id}, {"kind", p.facts.kind}, {"decision", decision},
                {"by", by},                     {"askedHost", p.asked}, {"decideMs", since_ms(p.t0)}};
  if (p.facts.command) entry["command"] = *p.facts.command;
  if (!p.facts.paths.empty()) entry["paths"] = p.facts.paths;
  if (!option.is_null()) entry["option"] = option;
  acp::log::info("session " + session_id_ + ": permission " + decision + " by " + by +
                 (p.facts.command ? " for `" + *p.facts.command + "`" : std::string()));
  if (RunRecorder* r = hooks_.recorder(); r && r->run_id() == p.run_id) {
    r->event("policy", acp::json_text(json{{"permission", std::move(entry)}}), true);
  }
}

}  // namespace harnessd::worker
