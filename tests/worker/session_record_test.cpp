// The typed session record: what it writes it reads back unchanged, and a
// record with a field of the wrong type is refused with the field named.
#include <catch2/catch.hpp>

#include "worker/session_record.h"

using namespace harnessd::worker;
using nlohmann::json;

TEST_CASE("session record: to_json and from_json are each other's inverse") {
  SessionRecord r;
  r.session_id = "sess_06h2abc";
  r.name = "agent:daily";
  r.host_session = "agent:harnessd:acp:1";
  r.harness = "claude-code";
  r.cwd = "/src/project";
  r.mode = "oneshot";
  r.template_name = "single-shot";
  r.summary = "what happened so far";
  r.history = json::array({{{"task", "t"}, {"answer", "a"}, {"runId", "run_1"}}});
  r.mcp_servers = json::array({{{"name", "fs"}, {"command", "mcp-fs"}}});
  r.adapter_session_id = "adapter-7";
  r.run_timeout_ms = 60000;
  r.lane = "background";
  r.config_options = {{"model", "large"}};
  r.adapter_options = json::array({{{"id", "model"}}});
  r.closed = true;
  r.daemon = "d_1";
  r.created_at = "2026-12-01T00:00:00.000Z";
  r.updated_at = "2026-12-01T00:00:01.000Z";
  json j = r.to_json();
  auto back = SessionRecord::from_json(j);
  REQUIRE(back);
  CHECK(back->to_json() == j);
  CHECK(back->host_session == r.host_session);
  CHECK(back->adapter_options == r.adapter_options);

  // The fewest fields: what is left out reads as its default.
  auto bare = SessionRecord::from_json({{"sessionId", "sess_1"}, {"harness", "fake"}, {"cwd", "/"}});
  REQUIRE(bare);
  CHECK(bare->mode == "persistent");
  CHECK_FALSE(bare->name);
  CHECK(bare->adapter_options.is_null());
  CHECK(bare->lane == "interactive");
  CHECK_FALSE(bare->closed);
  // Null where a value may be unknown.
  json nulls = bare->to_json();
  CHECK(nulls["name"].is_null());
  CHECK(nulls["summary"].is_null());
  CHECK(nulls["adapterSessionId"].is_null());
  CHECK(SessionRecord::from_json(nulls));
}

TEST_CASE("session record: the wrong type of a field is refused, naming it") {
  json good = {{"sessionId", "sess_1"}, {"harness", "fake"}, {"cwd", "/"}};
  struct Bad {
    const char* field;
    json value;
    const char* problem;
  };
  for (const Bad& bad : {Bad{"closed", "yes", "closed must be a boolean"},
                         Bad{"name", 7, "name must be a string or null"},
                         Bad{"runTimeoutMs", -5, "runTimeoutMs must be an integer"},
                         Bad{"history", json::object(), "history must be an array or null"},
                         Bad{"hostSession", json::array(), "hostSession must be a string or null"},
                         Bad{"sessionId", "../x", "sessionId is not a session id"}}) {
    json j = good;
    j[bad.field] = bad.value;
    auto r = SessionRecord::from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error() == bad.problem);
  }
  CHECK_FALSE(SessionRecord::from_json(json::array()));
}
