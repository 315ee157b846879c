// The read-only methods of the host connection: session/list and
// harnessd's `_harnessd/sessions/list`, `_harnessd/status`,
// `_harnessd/runs/get`, `_harnessd/runs/list` and `_harnessd/runs/wait`.
// They read the store, the open sessions and the scheduler, and change
// nothing.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "acp/loop.h"
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
  Queries(Runtime& rt, Registry& registry, const Scheduler& scheduler);
  /// Waits still open are answered with what the store says now.
  ~Queries();

 private:
  struct Waiter {
    std::string run_id;
    acp::Reply reply;
    std::optional<std::chrono::steady_clock::time_point> deadline;
  };
  void wait_run(schema::WaitRequest req, acp::Reply reply);
  void answer_ended(const RunRecord& run, acp::Reply reply);
  /// Answers the waits whose run ended or whose time ran out.
  void check_waits(bool all);
  void status(acp::Reply reply) const;
  void list_sessions(schema::ListSessionsRequest req, acp::Reply reply) const;
  void open_sessions(acp::Reply reply) const;
  void get_run(const std::string& run_id, acp::Reply reply) const;
  void list_runs(schema::ListRunsRequest req, acp::Reply reply) const;
  nlohmann::json run_json(const RunRecord& run) const;

  Runtime& rt_;
  Registry& registry_;
  const Scheduler& scheduler_;
  std::vector<Waiter> waiters_;
  acp::Timer wait_poll_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  const std::string started_at_;
};

}  // namespace harnessd::worker
