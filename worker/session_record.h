// A session's record (sessions/<id>.json), typed. Every reader and writer of
// session records goes through it: the session saving itself, session/load
// and resume, session/close and set_summary of a session no one serves, the
// command line's sessions, close and prune, and the engine learning what
// each harness's adapter offers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "schema/expected.h"

namespace harnessd::worker {

struct SessionRecord {
  std::string session_id;
  std::optional<std::string> name;
  std::optional<std::string> host_session;  // the host's own name for it
  std::string harness;
  std::string cwd;
  std::string mode = "persistent";  // or "oneshot"
  std::optional<std::string> template_name;
  std::optional<std::string> summary;
  /// The permission mode the host asked for at session/new, stricter than
  /// its profile's (_meta.harnessd.permissions); none: the profile's.
  std::optional<std::string> permissions;
  /// The host's stricter sandbox ({mode, network}); null: the harness's.
  nlohmann::json sandbox;
  /// A remote session's worker host (ssh://...), where it stays ("host").
  std::optional<std::string> worker_host;
  /// Oneshot sessions: [{task, answer, runId}] of the turns that ended.
  nlohmann::json history = nlohmann::json::array();
  nlohmann::json mcp_servers = nlohmann::json::array();
  /// The adapter's own session id, to resume it in a later lifetime.
  std::optional<std::string> adapter_session_id;
  std::int64_t run_timeout_ms = 0;
  std::string lane = "interactive";
  /// The host's choices of the adapter's config options ({id: value}).
  nlohmann::json config_options = nlohmann::json::object();
  /// What the adapter offered (null: not known yet).
  nlohmann::json adapter_options;
  /// The adapter as its process last saw it: {pid} while one runs,
  /// {evictedAt} once evicted, null otherwise.
  nlohmann::json adapter;
  /// What the session's runs used (usage::add of each ended run); null
  /// until a run ended.
  nlohmann::json usage;
  bool closed = false;
  std::string daemon;  // the instance that wrote it last
  std::string created_at;
  std::string updated_at;

  nlohmann::json to_json() const;
  bool operator==(const SessionRecord&) const = default;
  /// The record, or what is wrong with it (a field of the wrong type, an
  /// id that is no session id). Fields it does not know are dropped.
  static Expected<SessionRecord, std::string> from_json(const nlohmann::json& j);
};

/// What is wrong with a session record read from disk, if anything.
std::optional<std::string> session_record_problem(const nlohmann::json& record);

}  // namespace harnessd::worker
