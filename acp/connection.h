// Connection: JSON-RPC 2.0 over NDJSON lines, for both directions of ACP.
// It parses and checks envelopes, dispatches requests and notifications to
// handlers, answers every request exactly once, and tracks the calls it
// makes to the peer. It does no I/O: lines come in through receive_line()
// and go out through the Send function, so it is testable on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "acp/unique_function.h"
#include "schema/expected.h"
#include "schema/rpc_error.h"

namespace harnessd::acp {

/// Serialises one message as a single compact line ending in LF. Invalid
/// UTF-8 in strings becomes U+FFFD, so the output is always valid UTF-8.
std::string to_line(const nlohmann::json& message);

namespace detail {
struct ConnectionShared;
/// What a decoder given to Connection::bind returns for the params.
template <class Decode>
using Decoded = std::invoke_result_t<const Decode&, nlohmann::json&>;
}  // namespace detail

/// The one answer to one request. Move-only; answering twice is a bug that
/// is logged and ignored. If a Reply is destroyed unanswered while its
/// connection is open, it answers -32603 (a safety net, not the plan).
class Reply {
 public:
  /// An empty Reply answers nothing (pending() is false).
  Reply() = default;
  Reply(Reply&&) noexcept;
  Reply& operator=(Reply&&) noexcept;
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply();

  void result(nlohmann::json value);
  void error(const RpcError& error);
  /// The line result(value) sends, LF included, made without building the
  /// message: for an answer that is also recorded, serialised once.
  std::string result_line(const nlohmann::json& value) const;
  /// Sends a line result_line() made, as result() would.
  void send_result_line(std::string line);
  /// True until result() or error() is called.
  bool pending() const { return shared_ != nullptr && !done_; }
  const nlohmann::json& id() const { return id_; }
  const std::string& method() const { return method_; }

 private:
  friend class Connection;
  Reply(std::shared_ptr<detail::ConnectionShared> shared, nlohmann::json id, std::string method);
  void send(nlohmann::json message);
  void send(std::string line);

  std::shared_ptr<detail::ConnectionShared> shared_;
  nlohmann::json id_;
  std::string method_;
  bool done_ = false;
};

struct ConnectionOptions {
  /// Used in log lines ("host", "adapter 12345").
  std::string peer = "peer";
  /// When true, every request except `initialize` is answered -32600 until
  /// mark_initialized() (the policy of the official ACP SDK's agent side).
  bool require_initialize = false;
  /// Outgoing calls that may await an answer at once; more fail at once.
  std::size_t max_pending_calls = 1024;
  /// When true, a line that is not valid UTF-8 is repaired (U+FFFD) before
  /// parsing instead of being rejected. Used for adapters, whose output
  /// carries model and tool bytes; the host must send valid UTF-8.
  bool repair_utf8 = false;
  /// When false, lines that cannot be answered with a request id (not JSON,
  /// not an object) are only logged. Adapters print banners; answering
  /// them would only add noise.
  bool answer_malformed = true;
};

class Connection {
 public:
  using Send = std::function<void(std::string line)>;
  /// The params are the handler's: it may take them (move from them).
  using RequestHandler = std::function<void(nlohmann::json& params, Reply reply)>;
  using NotificationHandler = std::function<void(const nlohmann::json& params)>;
  /// Receives the peer's answer to an outgoing call: the result or the error.
  using CallResult = Expected<nlohmann::json, RpcError>;
  using CallHandler = UniqueFunction<void(CallResult)>;

  Connection(ConnectionOptions options, Send send);
  /// Closes the connection (see close()).
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void on_request(std::string method, RequestHandler handler);
  void on_notification(std::string method, NotificationHandler handler);
  /// Forgets every handler, the fast path included (requests then get
  /// -32601, notifications are dropped), e.g. before the object the
  /// handlers point to goes away.
  void clear_handlers();
  /// Binds a request whose params are decoded by `decode`, any callable
  /// taking the params (which it may take) and returning
  /// Expected<P, RpcError> (a decoder, or a lambda that passes it context). A decoding error is answered as-is
  /// (-32602 naming the field) and the handler not called.
  template <class P, class Decode>
  void bind(std::string method, Decode decode, std::function<void(P, Reply)> handler) {
    static_assert(std::is_same_v<detail::Decoded<Decode>, Expected<P, RpcError>>,
                  "decode(params) must return Expected<P, RpcError>");
    on_request(std::move(method), [decode = std::move(decode), handler = std::move(handler)](
                                      nlohmann::json& params, Reply reply) {
      auto decoded = decode(params);
      if (!decoded) return reply.error(decoded.error());
      handler(std::move(*decoded), std::move(reply));
    });
  }
  /// Binds a notification the same way. A notification is never answered:
  /// a decoding error is logged as a warning ("ignored <method>: <reason>")
  /// and the handler not called.
  template <class P, class Decode>
  void bind_notification(std::string method, Decode decode, std::function<void(P)> handler) {
    static_assert(std::is_same_v<detail::Decoded<Decode>, Expected<P, RpcError>>,
                  "decode(params) must return Expected<P, RpcError>");
    on_notification(method, [method, decode = std::move(decode), handler = std::move(handler)](
                                const nlohmann::json& params) {
      auto decoded = decode(params);
      if (!decoded) return log_ignored(method, decoded.error());
      handler(std::move(*decoded));
    });
  }

  /// Handles one inbound line (without its LF). Never throws, and nothing a
  /// line holds affects the next one. JSON nested deeper than
  /// schema::kMaxJsonDepth or with a number out of range is refused like an
  /// over-long line.
  void receive_line(std::string_view line) noexcept;
  /// Sees every inbound line once it is parsed and before it is handled:
  /// the line (UTF-8 repaired where the options say so) and whether it was
  /// JSON, so an observer (a recording) needs no parse of its own.
  void set_inbound_tap(std::function<void(std::string_view line, bool is_json)> tap) {
    inbound_tap_ = std::move(tap);
  }
  /// A handler that may take a line whole before it is parsed (the relay's
  /// commonest updates): `fast(line)` returns false to let the line be
  /// parsed and dispatched as usual. A line it takes must be a notification
  /// it recognised exactly, and it shows the line to the inbound tap itself
  /// (tap_inbound) before acting on it. Only a connection that repairs
  /// UTF-8 (ConnectionOptions::repair_utf8) offers lines to it, so a line
  /// it sees is always valid UTF-8.
  void set_fast_path(std::function<bool(std::string_view line)> fast) { fast_path_ = std::move(fast); }
  /// Shows a line taken by the fast path to the inbound tap, as parsed JSON.
  void tap_inbound(std::string_view line) {
    if (inbound_tap_) inbound_tap_(line, true);
  }
  /// Handles a line that exceeded the size limit: a request is answered
  /// -32600 (with its id when it can be read from the line's first bytes),
  /// a notification is only logged, an answer to one of our calls fails
  /// that call.
  void receive_overlong(std::string_view prefix, std::size_t size, std::size_t limit) noexcept;

  /// Sends a request; `on_done` runs once with the answer, or with an error
  /// when the peer goes away (kPeerGone) or the pending table is full
  /// (kTooManyPending, called before call() returns). Returns the id used.
  std::int64_t call(const std::string& method, nlohmann::json params, CallHandler on_done);
  /// The same with params already written as compact JSON text (as
  /// append_json writes it): a hot caller need not build them as a value.
  std::int64_t call_text(const std::string& method, std::string_view params, CallHandler on_done);
  void notify(const std::string& method, nlohmann::json params);
  /// Sends a message that is already serialised (one line, ending in LF,
  /// as to_line() makes it), e.g. a frame also written to a transcript.
  void send_line(std::string line);

  void mark_initialized() { initialized_ = true; }
  bool initialized() const { return initialized_; }

  /// The peer will answer nothing more (its input ended) but may still
  /// read: pending calls fail with kPeerGone, the connection stays open
  /// for what is still to be sent.
  void fail_pending(const std::string& why);
  /// The peer is gone: pending calls fail with kPeerGone, unanswered
  /// Replies become silent, and nothing more is sent. Idempotent.
  void close();
  bool closed() const;
  std::size_t pending_calls() const { return pending_.size(); }
  /// Requests from the peer that are not answered yet.
  std::size_t unanswered_requests() const;
  /// Runs `fn` once every request read so far is answered: now if none is
  /// open, else right after the last answer is sent. One waiter at a time;
  /// nullptr forgets it.
  void when_all_answered(UniqueFunction<void()> fn);
  const ConnectionOptions& options() const { return options_; }

 private:
  void handle_line(std::string_view line);
  /// Discards a message harnessd will not handle, answering as
  /// receive_overlong() describes; `head` is the message or its first bytes.
  void refuse(std::string_view head, const std::string& what, nlohmann::json data);
  void dispatch_request(const std::string& method, nlohmann::json id, nlohmann::json& params);
  void dispatch_notification(const std::string& method, const nlohmann::json& params);
  void dispatch_response(const nlohmann::json& message);
  void send_error(const nlohmann::json& id, const RpcError& error);
  /// Logs a notification dropped because its params did not decode.
  static void log_ignored(const std::string& method, const RpcError& error);

  struct Pending {
    std::string method;
    CallHandler on_done;
  };
  /// call() with `params` (a value, or else text; neither: none).
  std::int64_t send_call(const std::string& method, const nlohmann::json* params, std::string_view params_text,
                         CallHandler on_done);

  ConnectionOptions options_;
  std::function<void(std::string_view, bool)> inbound_tap_;
  std::function<bool(std::string_view)> fast_path_;
  std::shared_ptr<detail::ConnectionShared> shared_;
  /// Shared, so that a dispatch keeps the handler it runs (which may
  /// replace the table) without copying it.
  std::unordered_map<std::string, std::shared_ptr<const RequestHandler>> requests_;
  std::unordered_map<std::string, NotificationHandler> notifications_;
  std::map<std::int64_t, Pending> pending_;
  std::int64_t next_id_ = 0;
  bool initialized_ = false;
};

}  // namespace harnessd::acp
