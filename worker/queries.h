// The read-only methods of the host connection: session/list and
// harnessd's `_harnessd/sessions/list`, `_harnessd/runs/get` and
// `_harnessd/runs/list`. They read the store, the open sessions and the
// scheduler, and change nothing.
#pragma once

#include "queue/scheduler.h"
#include "schema/acp.h"
#include "queue/session_registry.h"
#include "worker/ledger.h"
#include "worker/runtime.h"
#include "worker/session.h"

namespace harnessd::worker {

class Queries {
 public:
  using Registry = queue::SessionRegistry<Session>;
  using Scheduler = queue::Scheduler<QueuedPrompt>;

  /// Binds the methods on `rt.host`; everything given outlives this.
  Queries(Runtime& rt, const Registry& registry, const Scheduler& scheduler);

 private:
  void list_sessions(schema::ListSessionsRequest req, acp::Reply reply) const;
  void open_sessions(acp::Reply reply) const;
  void get_run(const std::string& run_id, acp::Reply reply) const;
  void list_runs(schema::ListRunsRequest req, acp::Reply reply) const;
  nlohmann::json run_json(const RunRecord& run) const;

  Runtime& rt_;
  const Registry& registry_;
  const Scheduler& scheduler_;
};

}  // namespace harnessd::worker
