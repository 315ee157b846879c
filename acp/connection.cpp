// JSON-RPC 2.0 envelope checks, dispatch, reply-once and outgoing calls.
// ACP v1 has no batches (transports section), answers nothing to a
// notification, and echoes request ids with their JSON type.
#include "acp/connection.h"

#include <charconv>
#include <exception>
#include <optional>
#include <vector>

#include "acp/json_write.h"
#include "acp/log.h"
#include "acp/utf8.h"
#include "schema/decoder.h"
#include "schema/json_parse.h"

namespace harnessd::acp {

using nlohmann::json;

namespace detail {
struct ConnectionShared {
  Connection::Send send;
  bool open = true;
  std::string peer;
  /// While a request handler runs: the replies it dropped unanswered as an
  /// exception went through it, for dispatch_request to answer with the
  /// exception's message.
  int dispatching = 0;
  std::vector<Reply> unwound;
  /// Requests read and not answered yet, and who waits for none to be left.
  std::size_t unanswered = 0;
  UniqueFunction<void()> when_answered;
};
}  // namespace detail

std::string to_line(const json& message) {
  std::string line;
  line.reserve(256);  // most lines fit: one allocation, not one per doubling
  append_json(line, message);
  line.push_back('\n');
  return line;
}

// ---------------------------------------------------------------- Reply

Reply::Reply(std::shared_ptr<detail::ConnectionShared> shared, json id, std::string method)
    : shared_(std::move(shared)), id_(std::move(id)), method_(std::move(method)) {}

Reply::Reply(Reply&& other) noexcept
    : shared_(std::move(other.shared_)), id_(std::move(other.id_)), method_(std::move(other.method_)),
      done_(other.done_) {
  other.shared_.reset();
}

Reply& Reply::operator=(Reply&& other) noexcept {
  if (this != &other) {
    if (pending()) error(RpcError::internal("Internal error: the answer to " + method_ + " was replaced"));
    shared_ = std::move(other.shared_);
    other.shared_.reset();
    id_ = std::move(other.id_);
    method_ = std::move(other.method_);
    done_ = other.done_;
  }
  return *this;
}

Reply::~Reply() {
  if (!pending()) return;
  if (shared_->dispatching > 0 && std::uncaught_exceptions() > 0) {
    try {
      shared_->unwound.push_back(Reply(shared_, std::move(id_), std::move(method_)));
      return;
    } catch (...) {
      // Out of memory: answer below, without the exception's message.
    }
  }
  if (shared_->open) log::error("request " + method_ + " was never answered; answering with an internal error");
  RpcError e = RpcError::internal("Internal error: " + method_ + " was not answered");
  try {
    send({{"jsonrpc", "2.0"}, {"id", id_}, {"error", e}});
  } catch (...) {
  }
}

void Reply::send(json message) { send(to_line(message)); }

void Reply::send(std::string line) {
  if (!shared_ || done_) {
    log::error("second answer to " + method_ + " dropped");
    return;
  }
  done_ = true;
  auto shared = shared_;  // the send may end what holds this Reply
  if (shared->open && shared->send) shared->send(std::move(line));
  if (shared->unanswered > 0 && --shared->unanswered == 0 && shared->when_answered) {
    auto fn = std::move(shared->when_answered);
    shared->when_answered = nullptr;
    fn();
  }
}

void Reply::result(json value) {
  if (value.is_null()) value = json::object();
  send({{"jsonrpc", "2.0"}, {"id", id_}, {"result", std::move(value)}});
}

std::string Reply::result_line(const json& value) const {
  // The members in the order to_line() writes them.
  std::string line = "{\"id\":";
  append_json(line, id_);
  line += ",\"jsonrpc\":\"2.0\",\"result\":";
  if (value.is_null()) {
    line += "{}";
  } else {
    append_json(line, value);
  }
  line += "}\n";
  return line;
}

void Reply::send_result_line(std::string line) { send(std::move(line)); }

void Reply::error(const RpcError& e) { send({{"jsonrpc", "2.0"}, {"id", id_}, {"error", e}}); }

// ---------------------------------------------------------------- Connection

namespace {

bool valid_id(const json& id) { return id.is_string() || id.is_number_integer() || id.is_null(); }

// Finds the top-level "id" and whether "method" appears, in the first bytes
// of a line that was too long to keep. The prefix is truncated JSON, so the
// SAX parse always stops early; what was seen before that is enough.
struct IdScanner : nlohmann::json_sax<json> {
  int depth = 0;
  bool next_is_id = false;
  std::optional<json> id;
  bool has_method = false;
  bool has_result = false;

  bool value(json v) {
    if (next_is_id && depth == 1 && valid_id(v)) id = std::move(v);
    next_is_id = false;
    return true;
  }
  bool null() override { return value(nullptr); }
  bool boolean(bool) override { return value(json()) ; }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t, const string_t&) override {
    next_is_id = false;
    return true;
  }
  bool string(string_t& s) override { return value(s); }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    next_is_id = false;
    ++depth;
    return true;
  }
  bool key(string_t& k) override {
    if (depth == 1) {
      next_is_id = k == "id";
      if (k == "method") has_method = true;
      if (k == "result" || k == "error") has_result = true;
    }
    return true;
  }
  bool end_object() override {
    --depth;
    return true;
  }
  bool start_array(std::size_t) override {
    next_is_id = false;
    ++depth;
    return true;
  }
  bool end_array() override {
    --depth;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

}  // namespace

Connection::Connection(ConnectionOptions options, Send send)
    : options_(std::move(options)), shared_(std::make_shared<detail::ConnectionShared>()) {
  shared_->send = std::move(send);
  shared_->peer = options_.peer;
}

Connection::~Connection() { close(); }

bool Connection::closed() const { return !shared_->open; }

std::size_t Connection::unanswered_requests() const { return shared_->unanswered; }

void Connection::when_all_answered(UniqueFunction<void()> fn) {
  if (fn && shared_->unanswered == 0) {
    fn();
    return;
  }
  shared_->when_answered = std::move(fn);
}

void Connection::on_request(std::string method, RequestHandler handler) {
  requests_[std::move(method)] = std::make_shared<const RequestHandler>(std::move(handler));
}

void Connection::on_notification(std::string method, NotificationHandler handler) {
  notifications_[std::move(method)] = std::move(handler);
}

void Connection::clear_handlers() {
  requests_.clear();
  notifications_.clear();
  fast_path_ = nullptr;
}

void Connection::send_error(const json& id, const RpcError& error) {
  if (!shared_->open) return;
  if (id.is_null() && !options_.answer_malformed) return;
  shared_->send(to_line({{"jsonrpc", "2.0"}, {"id", id}, {"error", error}}));
}

void Connection::receive_line(std::string_view line) noexcept {
  if (!shared_->open) return;
  // Whatever one line does, the next line is read as if it had not been
  // there: nothing thrown here may reach the reader and drop its buffer.
  try {
    handle_line(line);
  } catch (const std::exception& e) {
    log::error(options_.peer + ": a message could not be handled: " + e.what());
  } catch (...) {
    log::error(options_.peer + ": a message could not be handled");
  }
}

void Connection::handle_line(std::string_view line) {
  std::string repaired;
  if (options_.repair_utf8 && !utf8::valid(line)) {
    log::warn(options_.peer + " sent invalid UTF-8; it was replaced with U+FFFD");
    repaired = utf8::repair(line);
    line = repaired;
  }
  // Only a repairing connection knows the line is valid UTF-8 by now,
  // which a fast path may take for granted.
  if (fast_path_ && options_.repair_utf8 && !(options_.require_initialize && !initialized_) && fast_path_(line)) {
    return;
  }
  auto parsed = schema::parse_json(line);
  if (inbound_tap_) inbound_tap_(line, parsed.has_value());
  if (!parsed) {
    const schema::JsonError& e = parsed.error();
    if (e.kind == schema::JsonError::Kind::kSyntax || e.kind == schema::JsonError::Kind::kNulByte) {
      log::warn(options_.peer + " sent a line that is not JSON: " + e.message);
      send_error(nullptr, RpcError::parse_error("Parse error: " + e.message));
      return;
    }
    // Well-formed as far as it was read, but beyond what harnessd accepts
    // (nesting, a number no double holds): answered like an over-long line,
    // with the request id when it comes before the problem.
    refuse(line, "message " + e.message, json::object());
    return;
  }
  json msg = std::move(*parsed);

  if (msg.is_array()) {
    send_error(nullptr, RpcError::invalid_request("Invalid request: JSON-RPC batches are not supported"));
    return;
  }
  if (!msg.is_object()) {
    send_error(nullptr, RpcError::invalid_request("Invalid request: a message must be a JSON object, not " +
                                                  std::string(schema::type_name(msg))));
    return;
  }

  auto id_it = msg.find("id");
  bool has_id = id_it != msg.end();
  json reply_id = (has_id && valid_id(*id_it)) ? *id_it : json();
  // Something that looks like a notification (a string method, no id) is
  // never answered, even when malformed (ACP: notifications get no reply).
  auto method_it = msg.find("method");
  const bool notification_like = !has_id && method_it != msg.end() && method_it->is_string();
  auto invalid = [&](const std::string& why) {
    log::warn(options_.peer + " sent an invalid message: " + why);
    if (!notification_like) send_error(reply_id, RpcError::invalid_request("Invalid request: " + why));
  };

  auto version = msg.find("jsonrpc");
  if (version == msg.end() || !version->is_string() || *version != "2.0") {
    return invalid("\"jsonrpc\" must be \"2.0\"");
  }
  if (has_id && !valid_id(*id_it)) return invalid("\"id\" must be a string, an integer or null");

  if (method_it != msg.end()) {
    if (!method_it->is_string()) return invalid("\"method\" must be a string");
    std::string method = method_it->get<std::string>();
    if (method.empty()) return invalid("\"method\" must not be empty");
    auto params_it = msg.find("params");
    json params;  // absent or null params read as {} by the decoders
    if (params_it != msg.end()) {
      if (!params_it->is_object() && !params_it->is_array() && !params_it->is_null()) {
        return invalid("\"params\" must be an object");
      }
      params = std::move(*params_it);
    }
    if (has_id) {
      dispatch_request(method, std::move(*id_it), params);
    } else {
      dispatch_notification(method, params);
    }
    return;
  }

  if (has_id && (msg.contains("result") || msg.contains("error"))) {
    dispatch_response(msg);
    return;
  }
  invalid("a message needs \"method\", or \"id\" with \"result\" or \"error\"");
}

void Connection::receive_overlong(std::string_view prefix, std::size_t size, std::size_t limit) noexcept {
  if (!shared_->open) return;
  try {
    refuse(prefix,
           "message of " + std::to_string(size) + " bytes exceeds the limit of " + std::to_string(limit) + " bytes",
           {{"size", size}, {"limit", limit}});
  } catch (const std::exception& e) {
    log::error(options_.peer + ": an over-long message could not be handled: " + e.what());
  }
}

void Connection::refuse(std::string_view head, const std::string& what, json data) {
  // The SAX scan builds nothing and stops at the first problem, so it is
  // safe on a cut prefix, on deep nesting and on numbers out of range.
  IdScanner scan;
  json::sax_parse(head.begin(), head.end(), &scan, json::input_format_t::json, false);
  log::warn(options_.peer + " sent a " + what + "; it was discarded");
  if (scan.id && !scan.has_method && scan.has_result) {
    // An answer to one of our calls: fail that call instead of replying.
    if (!scan.id->is_number_integer()) return;
    auto it = pending_.find(scan.id->get<std::int64_t>());
    if (it != pending_.end()) {
      auto handler = std::move(it->second.on_done);
      pending_.erase(it);
      handler(RpcError::internal("the answer was discarded: " + what));
    }
    return;
  }
  // A method and no id before it: a notification, which is never answered.
  // (Every client we know writes the id before the params.)
  if (scan.has_method && !scan.id) return;
  RpcError e = RpcError::invalid_request("Invalid request: " + what);
  if (!data.empty()) e.data = std::move(data);
  send_error(scan.id.value_or(json()), e);
}

void Connection::dispatch_request(const std::string& method, json id, json& params) {
  Reply reply(shared_, std::move(id), method);
  ++shared_->unanswered;
  if (options_.require_initialize && !initialized_ && method != "initialize") {
    reply.error(RpcError::invalid_request("Invalid request: " + method + " before initialize"));
    return;
  }
  auto it = requests_.find(method);
  if (it == requests_.end()) {
    reply.error(RpcError::method_not_found(method));
    return;
  }
  // Kept here: the handler may replace or clear the handler table.
  std::shared_ptr<const RequestHandler> handler = it->second;
  // The reply moves into the handler; if an exception goes through it, the
  // reply is dropped in the unwinding and kept in `unwound` to be answered
  // here with what went wrong.
  auto shared = shared_;
  ++shared->dispatching;
  std::string failure;
  try {
    (*handler)(params, std::move(reply));
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "an unknown exception";
  }
  --shared->dispatching;
  if (failure.empty() && shared->unwound.empty()) return;
  if (!failure.empty()) log::error("handler for " + method + " failed: " + failure);
  std::vector<Reply> dropped = std::move(shared->unwound);
  shared->unwound.clear();
  for (auto& r : dropped) {
    r.error(RpcError::internal("Internal error: " + r.method() + " failed: " +
                               (failure.empty() ? std::string("an exception was caught inside the handler") : failure)));
  }
}

void Connection::dispatch_notification(const std::string& method, const json& params) {
  if (options_.require_initialize && !initialized_) {
    log::warn(options_.peer + " sent " + method + " before initialize; ignored");
    return;
  }
  auto it = notifications_.find(method);
  if (it == notifications_.end()) {
    log::debug(options_.peer + " sent unhandled notification " + method);
    return;
  }
  NotificationHandler handler = it->second;
  try {
    handler(params);
  } catch (const std::exception& e) {
    log::error("handler for notification " + method + " failed: " + e.what());
  }
}

void Connection::log_ignored(const std::string& method, const RpcError& error) {
  log::warn("ignored " + method + ": " + error.message);
}

void Connection::dispatch_response(const json& msg) {
  const json& id = msg["id"];
  if (!id.is_number_integer()) {
    log::warn(options_.peer + " answered an id we never sent: " + id.dump());
    return;
  }
  auto it = pending_.find(id.get<std::int64_t>());
  if (it == pending_.end()) {
    log::warn(options_.peer + " answered an unknown or finished call " + id.dump());
    return;
  }
  auto handler = std::move(it->second.on_done);
  pending_.erase(it);
  CallResult result = RpcError{};
  if (auto err = msg.find("error"); err != msg.end() && !err->is_null()) {
    result = err->get<RpcError>();
  } else {
    result = msg.value("result", json::object());
  }
  try {
    handler(std::move(result));
  } catch (const std::exception& e) {
    log::error("answer handler failed: " + std::string(e.what()));
  }
}

std::int64_t Connection::call(const std::string& method, json params, CallHandler on_done) {
  return send_call(method, params.is_null() ? nullptr : &params, {}, std::move(on_done));
}

std::int64_t Connection::call_text(const std::string& method, std::string_view params, CallHandler on_done) {
  return send_call(method, nullptr, params, std::move(on_done));
}

std::int64_t Connection::send_call(const std::string& method, const json* params, std::string_view params_text,
                                   CallHandler on_done) {
  std::int64_t id = next_id_++;
  if (!shared_->open) {
    on_done(RpcError{rpc_code::kPeerGone, options_.peer + " is gone", {}});
    return id;
  }
  if (pending_.size() >= options_.max_pending_calls) {
    on_done(RpcError{rpc_code::kTooManyPending,
                     "too many requests awaiting an answer from " + options_.peer, {{"limit", options_.max_pending_calls}}});
    return id;
  }
  pending_.emplace(id, Pending{method, std::move(on_done)});
  // The members in the order a json object keeps them (sorted), as
  // to_line() would write the message.
  std::string line;
  line.reserve(params_text.size() + method.size() + 64);
  line += "{\"id\":";
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, id);
  line.append(digits, end);
  line += ",\"jsonrpc\":\"2.0\",\"method\":";
  utf8::append_json_string(line, method);
  if (params) {
    line += ",\"params\":";
    append_json(line, *params);
  } else if (!params_text.empty()) {
    line += ",\"params\":";
    line += params_text;
  }
  line += "}\n";
  shared_->send(std::move(line));
  return id;
}

void Connection::notify(const std::string& method, json params) {
  if (!shared_->open) return;
  json msg = {{"jsonrpc", "2.0"}, {"method", method}};
  if (!params.is_null()) msg["params"] = std::move(params);
  shared_->send(to_line(msg));
}

void Connection::send_line(std::string line) {
  if (shared_->open) shared_->send(std::move(line));
}

void Connection::fail_pending(const std::string& why) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) {
    try {
      p.on_done(RpcError{rpc_code::kPeerGone, options_.peer + " " + why + " before answering " + p.method, {}});
    } catch (const std::exception& e) {
      log::error("answer handler failed: " + std::string(e.what()));
    }
  }
}

void Connection::close() {
  if (!shared_->open) return;
  shared_->open = false;
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) {
    try {
      p.on_done(RpcError{rpc_code::kPeerGone, options_.peer + " went away before answering " + p.method, {}});
    } catch (const std::exception& e) {
      log::error("answer handler failed: " + std::string(e.what()));
    }
  }
}

}  // namespace harnessd::acp
