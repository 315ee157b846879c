// Relay: carries one session's traffic between its adapter and the host.
// Updates are checked against the ACP schema and the host's capabilities,
// long text chunks are split, the adapter's requests of its client are
// forwarded when the host can serve them, and every frame the host gets is
// written to the session's transcript and the running turn's recording.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "adapters/adapter_session.h"
#include "worker/frame_log.h"
#include "worker/host_order.h"
#include "worker/permission_gate.h"
#include "worker/run_recorder.h"
#include "worker/runtime.h"
#include "worker/transcript.h"

namespace harnessd::worker {

/// The clientCapabilities adapters are offered: the host's, less what
/// harnessd does not relay.
nlohmann::json adapter_client_capabilities(const Runtime& rt);

/// False for a worker (`harnessd --worker`) not configured to offer its
/// front's fs/* and terminal/* to its adapters.
bool worker_serves_client_fs(const Runtime& rt);

class Relay {
 public:
  struct Hooks {
    /// The running turn's recording, or null between turns.
    std::function<RunRecorder*()> recorder;
    /// An update that belongs to the running turn is on its way to the host.
    /// `text`: the chunk's text when it carries text content.
    std::function<void(std::string_view kind, std::string_view text)> turn_output;
    /// The adapter sent a new list of its configOptions; returns the
    /// session's complete list, which is what the host is told.
    std::function<nlohmann::json(const nlohmann::json& adapter_options)> options_changed;
    /// False when the session's harness records metadata only: no
    /// transcript is kept.
    std::function<bool()> keep_transcript;
    /// What the session's permission requests are decided by.
    std::function<const PermissionGate::Scope&()> permission_scope;
    /// The running turn is being cancelled.
    std::function<bool()> cancelling;
    /// The adapter reported usage (a usage_update, during a turn or
    /// between turns); `update` is the update object. May be empty.
    std::function<void(const nlohmann::json& update)> usage;
  };

  /// `adapter` tells whether a prompt is in flight and whether the adapter
  /// replays its own history; it must outlive the relay's bindings. What
  /// goes to the host waits in `order` behind answers of ended turns.
  Relay(Runtime& rt, std::string session_id, const adapters::AdapterSession& adapter, HostOrder& order, Hooks hooks);

  /// Installs the relay's handlers on a new adapter link.
  void bind(adapters::AdapterLink& link);
  /// Sends a session/update to the host, recording it.
  void send_update(const nlohmann::json& params);
  /// A session/update line for the host: `params` with this session's id.
  std::string update_line(const nlohmann::json& params) const;
  /// Records the update line and sends it to the host. `record_in_run`
  /// false: the line is the adapter's frame as the running turn recorded
  /// it, but for the session id, so only the transcript keeps it.
  void send_line(std::string line, bool record_in_run = true);
  /// Appends one frame (a line with its newline) to the transcript.
  void record_transcript(std::string line);
  /// Decides the adapter's permission requests.
  PermissionGate& permissions() { return gate_; }
  /// The session's transcript frames, numbered, and their watches.
  FrameLog& frames() { return frames_; }
  /// The session closes: each watch is told so, after its last frame.
  void end_watches();
  /// session/load: sends the host every frame of `transcript` (as
  /// Store::read_transcript reads it) again; returns how many.
  std::size_t replay(const transcript::Expanded& transcript);
  /// What the adapter is offered in initialize: the host's own
  /// capabilities, less those harnessd does not relay.
  nlohmann::json adapter_client_capabilities() const;
  /// False: the adapter runs on another machine (a remote profile without
  /// forward_client_fs), so the host's fs/* and terminal/* are neither
  /// offered to it nor served (-32601).
  void set_client_fs(bool on) { client_fs_ = on; }

 private:
  void relay_update(const nlohmann::json& params);
  /// The connection's fast path: a text chunk relayed from its bytes alone
  /// (schema::scan_text_chunk); false leaves the line to relay_update.
  bool fast_update(acp::Connection& rpc, std::string_view line);
  /// Sends the host an update it gets as the adapter sent it but for the
  /// session id (`line`), pointing the transcript at the run's events.
  void relay_as_is(std::string line);
  /// The host's line for the update being relayed: the adapter's line with
  /// the session id replaced, else update_line().
  std::string relayed_line(const nlohmann::json& params);
  void forward_to_host(const std::string& method, const nlohmann::json& params, acp::Reply reply);
  /// Sends the host a request of the adapter's (after any answer still on
  /// its way), with this session's id.
  void ask_host(const std::string& method, nlohmann::json params, acp::Connection::CallHandler answered);
  bool host_can_serve(const std::string& method) const;
  bool host_accepts_unstable(const std::string& kind) const;
  bool keeps_transcript() const;
  /// Sends a line to the host, after any answer still on its way.
  void deliver(std::string line);
  /// A watch's `_harnessd/session_event` for one frame.
  void send_event(const nlohmann::json& watch_id, std::uint64_t seq, std::string_view frame);
  /// Ends the transcript's open range of the running turn's events at byte
  /// `at` (default: all the run has recorded).
  void close_range(std::optional<std::uint64_t> at);
  /// Where the running turn's events hold the adapter frame being handled.
  std::optional<std::uint64_t> frame_start() const;

  Runtime& rt_;
  std::string session_id_;
  std::string quoted_id_;  // session_id_ as a JSON string
  std::string_view inbound_line_;  // the adapter's line being dispatched
  std::string range_run_;  // the run whose events the transcript points at now
  const adapters::AdapterSession& adapter_;
  HostOrder& order_;
  Hooks hooks_;
  FrameLog frames_;
  PermissionGate gate_;
  bool client_fs_ = true;
};

}  // namespace harnessd::worker
