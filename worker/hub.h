// Hub: many client connections over one Engine. The engine still speaks to
// one host connection; the hub is that host. It gives each client's
// requests ids of its own and sends the answers back to the client that
// asked; sends a turn's updates to the client whose prompt it is and to
// the clients that loaded the session (between turns, to every client
// attached to it); and routes the engine's requests (permission) to the
// client whose prompt is running on the session. See docs/server.md.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/loop.h"
#include "acp/unique_function.h"
#include "worker/engine.h"

namespace harnessd::worker {

struct HubOptions {
  std::size_t max_line_bytes = 64u << 20;
  /// A client whose unread output passes this many bytes is disconnected,
  /// so that one client that stops reading never holds the others back.
  std::size_t max_client_queued = 32u << 20;
  /// What happens to the running turn of a client that disconnects.
  OnDisconnect on_disconnect = OnDisconnect::kCancel;
};

class Hub {
 public:
  Hub(acp::Loop& loop, EngineOptions engine, HubOptions options);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  /// Serves a connected socket (takes the fd) of process `pid`.
  void add_client(int fd, pid_t pid);
  std::size_t clients() const { return clients_.size(); }
  /// Prompts sent to the engine and not answered yet.
  std::size_t prompts_open() const;
  /// Runs `fn` (posted) whenever the last client left or the last open
  /// prompt was answered.
  void on_idle(std::function<void()> fn) { on_idle_ = std::move(fn); }
  /// Disconnects every client (their output flushed, bounded) and shuts the
  /// engine down; `done` runs once both are over.
  void shutdown(const std::string& why, acp::UniqueFunction<void()> done);
  /// Drops every client's connection at once (the last step of a stop).
  void close_clients();

 private:
  struct Client;
  /// A client's request on its way through the engine, by the id the
  /// engine saw.
  struct Forwarded {
    std::uint64_t client = 0;
    nlohmann::json id;  // the client's own id
    std::string method;
    std::string session;  // params.sessionId, where there is one
    bool attach = false;  // a session/load made a watch (see from_client)
  };
  /// A watch, by the id the engine knows it by.
  struct Watch {
    std::uint64_t client = 0;
    nlohmann::json id;    // the client's id for it
    std::string session;
    bool as_updates = false;  // a session/load that attached: its frames go as session/update
  };

  void from_client(Client& c, std::string_view line);
  void from_engine(std::string line);
  void answer_engine(std::int64_t id, nlohmann::json result);
  void send(Client& c, std::string line);
  void error_to(Client& c, const nlohmann::json& id, const RpcError& e);
  /// The engine's answer to a forwarded request, back to its client.
  void answered(std::int64_t id, nlohmann::json& msg);
  /// An engine request about `session` goes to the client whose prompt is
  /// running there; nullptr when there is none.
  Client* asker_for(const std::string& session);
  /// Decides an engine request no client can answer.
  void decide_alone(std::int64_t id, const std::string& method, const nlohmann::json& params, bool cancelling);
  void drop(std::uint64_t id, const std::string& why);
  /// The client's input ended: see the .cpp.
  void input_ended(std::uint64_t id);
  /// Its queued prompts, and its running one unless on_disconnect says
  /// continue, are cancelled.
  void cancel_prompts_of(std::uint64_t id);
  bool has_open_requests(std::uint64_t id) const;
  /// Answers, without the client, the engine's requests it was asked.
  void decide_asked_of(std::uint64_t id);
  /// A session_event to the client of its watch.
  void route_event(nlohmann::json& msg);
  /// A request of the hub's own to the engine; its answer is dropped.
  void engine_call(const std::string& method, nlohmann::json params);
  nlohmann::json clients_json() const;
  void check_idle();

  acp::Loop& loop_;
  HubOptions options_;
  acp::Connection engine_host_;
  std::unique_ptr<Engine> engine_;
  std::map<std::uint64_t, std::unique_ptr<Client>> clients_;
  std::uint64_t next_client_ = 1;
  std::int64_t next_id_ = 1;
  std::unordered_map<std::int64_t, Forwarded> forwarded_;
  /// (client, its id as JSON text) to the engine's id, for $/cancel_request.
  std::map<std::pair<std::uint64_t, std::string>, std::int64_t> by_client_id_;
  /// Per session, the prompts sent to the engine in order; the first one is
  /// the running (or next) turn.
  std::map<std::string, std::deque<std::int64_t>> prompts_;
  /// Per session, the clients attached to it (they made, loaded or
  /// prompted it): they get its updates between turns.
  std::map<std::string, std::set<std::uint64_t>> attached_;
  /// Per session, the clients that loaded it: they get every turn's
  /// updates, not only their own prompts'.
  std::map<std::string, std::set<std::uint64_t>> watchers_;
  /// A session being replayed to one client (its session/load): its
  /// updates go to that client alone meanwhile.
  std::map<std::string, std::uint64_t> loading_;
  std::unordered_map<std::int64_t, Watch> watches_;
  std::int64_t next_own_id_ = -1;  // the hub's own requests count down
  /// The engine's requests waiting on a client, by the engine's id.
  struct Asked {
    std::uint64_t client = 0;
    std::string method;
    nlohmann::json params;
  };
  std::unordered_map<std::int64_t, Asked> asked_;
  std::function<void()> on_idle_;
  acp::Timer flush_bound_;
  bool stopping_ = false;
};

}  // namespace harnessd::worker
