// Agent: the host-facing ACP agent. A thin table of handlers that decode
// params and hand the work to sessions.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "acp/connection.h"
#include "worker/runtime.h"
#include "worker/session.h"

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
  void close_all();
  std::size_t session_count() const { return sessions_.size(); }

 private:
  void on_initialize(const nlohmann::json& params, Reply reply);
  void on_new_session(const nlohmann::json& params, Reply reply);
  void on_prompt(const nlohmann::json& params, Reply reply);
  void on_cancel(const nlohmann::json& params);
  void on_close(const nlohmann::json& params, Reply reply);
  void on_list(const nlohmann::json& params, Reply reply);

  Session* find(const std::string& id);

  Runtime& rt_;
  // Ordered by id, and ids sort by creation time: session/list pages are stable.
  std::map<std::string, std::unique_ptr<Session>> sessions_;
};

/// The agentCapabilities harnessd advertises: only what works.
nlohmann::json agent_capabilities();

}  // namespace harnessd::worker
