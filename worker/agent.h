// Agent: the host-facing ACP agent. A thin table of handlers that receive
// decoded params, keep the session registry and the scheduler, and hand
// the work to sessions.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "acp/connection.h"
#include "acp/loop.h"
#include "queue/scheduler.h"
#include "queue/session_registry.h"
#include "schema/acp.h"
#include "worker/ledger.h"
#include "worker/queries.h"
#include "worker/runtime.h"
#include "worker/session.h"
#include "worker/session_record.h"

namespace harnessd::worker {

class Agent {
 public:
  /// Binds the handlers on `rt.host`. The Runtime outlives the Agent.
  explicit Agent(Runtime& rt);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// The host is gone (stdin EOF) or a stop signal came: every session is
  /// closed (open prompts answered cancelled) and its adapter stopped.
  /// `answered` runs once every prompt has been answered. With `for_good`
  /// the sessions are recorded closed (as by session/close); otherwise
  /// they stay loadable by a later lifetime.
  void close_all(acp::UniqueFunction<void()> answered = nullptr, bool for_good = false);
  std::size_t session_count() const { return registry_.open_count(); }

 private:
  // The handlers; the connection decodes their params (Connection::bind).
  void on_initialize(schema::InitializeRequest req, acp::Reply reply);
  void on_new_session(schema::NewSessionRequest req, acp::Reply reply);
  /// session/prompt: the decoded params, and the params as received, which
  /// the run's record keeps.
  struct PromptParams {
    schema::PromptRequest req;
    nlohmann::json received;
  };
  void on_prompt(PromptParams params, acp::Reply reply);
  void on_cancel(schema::SessionRef req);
  void on_cancel_request(schema::CancelRequest req);
  /// _harnessd/runs/cancel {runId}: a queued or running run of this process.
  void on_cancel_run(std::string run_id, acp::Reply reply);
  void on_close(schema::SessionRef req, acp::Reply reply);
  void on_load(bool replay, schema::LoadSessionRequest req, acp::Reply reply);
  /// session/load or resume of a session this process serves.
  void restore(bool replay, const std::string& id, acp::Reply reply);
  void on_set_summary(schema::SetSummaryRequest req, acp::Reply reply);
  /// _harnessd/sessions/watch and unwatch (see FrameLog). A watch's id is
  /// its request's id.
  void on_watch(schema::WatchRequest req, acp::Reply reply);
  void start_watch(const std::string& id, std::uint64_t from_seq, acp::Reply reply);
  void on_unwatch(nlohmann::json watch_id, acp::Reply reply);
  void on_set_config_option(schema::SetConfigOptionRequest req, acp::Reply reply);
  void on_set_mode(schema::SetModeRequest req, acp::Reply reply);

  /// The template a prompt is packaged with, if any.
  Expected<std::optional<harnesses::Template>, RpcError> prompt_template(const Session& session,
                                                                          const schema::HarnessdMeta& meta);
  RpcError template_error(const std::string& method, const std::string& problem) const;

  // session/new. With ensure, the state database decides which session
  // serves the name (ensure_claimed), or this process alone when there is no
  // database (ensure_locally).
  void ensure_claimed(schema::NewSessionRequest req, acp::Reply reply, Store::Claim claim);
  void ensure_locally(schema::NewSessionRequest req, acp::Reply reply, std::string id);
  void reopen_named(schema::NewSessionRequest req, acp::Reply reply, const SessionRecord& record);
  /// A new session `id`; `leased`: its lease was taken with its name.
  void create_session(schema::NewSessionRequest req, acp::Reply reply, std::string id, bool leased);
  static RpcError shutting_down(const std::string& method);
  /// -32017: another live process serves the session.
  static RpcError session_busy(const StateDb::Lease& held, const std::optional<std::string>& name);

  /// Registers a live session (taking its name from an older holder).
  Session& open_session(SessionInit init);
  /// Open sessions per worker host (remote sessions only).
  std::map<std::string, std::size_t> sessions_per_host() const;
  /// -32019: every host of a remote harness is full.
  RpcError no_capacity(const std::string& harness, const harnesses::RemoteSpec& remote) const;
  /// Starts a new remote session's worker on the first of `hosts` that
  /// takes it, then answers session/new (or refuses it and closes the session).
  void place_session(Session& session, std::vector<std::string> hosts, std::optional<std::string> name,
                     acp::Reply reply);
  /// Brings a session of an earlier lifetime back from its record.
  Expected<Session*, RpcError> reopen(const SessionRecord& record, const schema::LoadSessionRequest& req);
  /// The record of a session no one here serves, if the store has a usable one.
  std::optional<SessionRecord> stored_record(const std::string& id) const;

  /// Starts queued prompts while slots are free. Re-entrant calls (a turn
  /// that ends while starting) are folded into the running pump.
  void pump();
  void prepare_next(const std::string& session);
  /// Closes a session: running and queued prompts answered cancelled,
  /// adapter stopped, name freed.
  /// `answered` runs once every prompt of the session has been answered.
  void close_session(const std::string& id, const std::string& why, bool forget = true,
                     acp::UniqueFunction<void()> answered = nullptr);

  Runtime& rt_;
  queue::SessionRegistry<Session> registry_;
  queue::Scheduler<QueuedPrompt> scheduler_;
  /// The read-only methods; they see the sessions and the queue above.
  Queries queries_{rt_, registry_, scheduler_};
  /// Watches by their id (as JSON text), to their session.
  std::map<std::string, std::string> watches_;
  bool closing_ = false;  // close_all ran: no session is opened any more
  bool pumping_ = false;
  bool pump_again_ = false;
  /// A worker's watch on its front's `_harnessd/alive` (docs/remote.md).
  void on_front_alive(const nlohmann::json& params);
  std::unique_ptr<acp::Timer> front_watch_;
  /// Answers from the store that arrive after the Agent is gone are dropped.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// -32010 (with the install hint) when the harness's program cannot be found.
std::optional<RpcError> check_harness(const Runtime& rt, const std::string& name,
                                      const harnesses::HarnessProfile& profile);

/// The agentCapabilities harnessd advertises: only what works, and under
/// _meta.harnessd its extensions and harness names.
nlohmann::json agent_capabilities(const Config& config);

}  // namespace harnessd::worker
