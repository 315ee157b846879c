// Remembered approvals: what a host answered "always" to, kept in the state
// database so that later permission requests of the same kind are decided
// without asking, for the session (or for every session of the harness),
// also after a restart. `harnessd approvals` lists and forgets them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harnesses/permission_policy.h"
#include "schema/expected.h"

namespace harnessd::worker {

class StateDb;

struct Approval {
  std::int64_t id = 0;
  std::string scope = "session";  // "session" or "harness"
  std::string session_id;         // the session's, for scope "session"
  std::string harness;
  std::string action = "allow";  // "allow" or "deny"
  /// What it covers: a tool call of this kind whose command is exactly
  /// `command` (when set) and whose paths are all among `paths`.
  std::string kind;
  std::optional<std::string> command;
  std::vector<std::string> paths;
  std::string created_at;
  std::string run_id;  // the run whose answer it remembers

  nlohmann::json to_json() const;
};

/// What the host's "always" answer to a tool call with these facts
/// remembers. Paths are kept absolute (against `cwd`).
Approval approval_for(const harnesses::ToolCallFacts& facts, const std::string& cwd);

/// Whether `a` decides a request with these facts: same kind, the same
/// command, every path among its paths. An allow never covers a path
/// outside the cwd.
bool covers(const Approval& a, const harnesses::ToolCallFacts& facts, const std::string& cwd);

/// The approvals that apply to a session of `harness`: its own and the
/// harness's, newest first.
Expected<std::vector<Approval>> approvals_for(StateDb& db, const std::string& session_id, const std::string& harness);
/// Every approval, or those of one session (by id) when `session_id` is set.
Expected<std::vector<Approval>> all_approvals(StateDb& db, const std::optional<std::string>& session_id);
/// Keeps `a` (replacing one that covers exactly the same calls); its id.
Expected<std::int64_t> save_approval(StateDb& db, const Approval& a);
/// Forgets the approval `id`; false when there is none.
Expected<bool> forget_approval(StateDb& db, std::int64_t id);
/// Forgets every approval of a session (by id); how many.
Expected<std::size_t> forget_session_approvals(StateDb& db, const std::string& session_id);

/// `harnessd approvals [--session S] [--forget ID|all] [--format json]`.
int approvals_command(const std::string& state_dir, const std::optional<std::string>& session,
                      const std::optional<std::string>& forget, const std::string& format);

}  // namespace harnessd::worker
