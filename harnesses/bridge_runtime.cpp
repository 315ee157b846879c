// The bridge runtime: ACP agent side over stdio, sessions with a FIFO of
// prompts, one turn at a time, and turn ends that happen exactly once.
#include "harnesses/bridge_runtime.h"


#include <deque>
#include <random>

#include "acp/log.h"
#include "acp/stdio_serve.h"
#include "harnessd_version.h"
#include "schema/acp.h"

namespace harnessd::harnesses {

using nlohmann::json;

// ---------------------------------------------------------------- BridgeTurn

BridgeTurn::BridgeTurn(acp::Connection& client, std::string session_id, acp::Reply reply)
    : client_(client), session_id_(std::move(session_id)), reply_(std::move(reply)) {}

BridgeTurn::~BridgeTurn() {
  if (!ended_) {
    reply_.error(RpcError::internal("the bridge dropped the turn without an answer"));
    end();
  }
}

void BridgeTurn::update(json update) {
  if (ended_) return;
  client_.notify("session/update", {{"sessionId", session_id_}, {"update", std::move(update)}});
}

void BridgeTurn::ask_permission(json tool_call, json options,
                                acp::UniqueFunction<void(std::optional<std::string>)> done) {
  if (ended_) {
    done(std::nullopt);
    return;
  }
  json params = {{"sessionId", session_id_}, {"toolCall", std::move(tool_call)}, {"options", std::move(options)}};
  client_.call("session/request_permission", std::move(params),
               [done = std::move(done)](acp::Connection::CallResult r) mutable {
                 if (!r || !r->is_object()) return done(std::nullopt);
                 const json outcome = r->value("outcome", json::object());
                 if (outcome.value("outcome", "") == "selected" && outcome.contains("optionId") &&
                     outcome["optionId"].is_string()) {
                   return done(outcome["optionId"].get<std::string>());
                 }
                 done(std::nullopt);
               });
}

void BridgeTurn::finish(const std::string& stop_reason, json meta) {
  if (ended_) return;
  json result = {{"stopReason", cancel_requested_ ? std::string("cancelled") : stop_reason}};
  if (!meta.is_null()) result["_meta"] = std::move(meta);
  reply_.result(std::move(result));
  end();
}

void BridgeTurn::fail(const RpcError& error) {
  if (ended_) return;
  if (cancel_requested_) {
    // ACP: a cancelled turn ends "cancelled", never with an error.
    reply_.result({{"stopReason", "cancelled"}});
  } else {
    reply_.error(error);
  }
  end();
}

void BridgeTurn::end() {
  ended_ = true;
  if (on_end) {
    auto fn = std::move(on_end);
    on_end = nullptr;
    fn();
  }
}

// ---------------------------------------------------------------- helpers

std::string make_uuid() {
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  std::uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

std::string prompt_text(const json& blocks) {
  std::string text, refs;
  for (const auto& b : blocks) {
    std::string type = b.value("type", "");
    if (type == "text") {
      if (!text.empty()) text += "\n\n";
      text += b.value("text", "");
    } else if (type == "resource_link") {
      refs += "\n- " + b.value("uri", "");
    } else if (type == "resource" && b.contains("resource")) {
      const json& r = b["resource"];
      if (r.contains("text")) {
        refs += "\n\n" + r.value("uri", "") + ":\n" + r.value("text", "");
      } else {
        refs += "\n- " + r.value("uri", "");
      }
    }
  }
  if (!refs.empty()) text += "\n\nReferences:" + refs;
  return text;
}

void BridgeSession::set_config_option(const std::string& id, const std::string&, OptionDone done) {
  done(RpcError::invalid_params("session/set_config_option: no option '" + id + "'"));
}

// ---------------------------------------------------------------- the server

namespace {

struct Slot {
  std::unique_ptr<BridgeSession> session;
  std::deque<std::pair<json, acp::Reply>> waiting;
  std::shared_ptr<BridgeTurn> turn;
};

class BridgeServer {
 public:
  BridgeServer(acp::Loop& loop, Bridge& bridge, acp::Connection& client)
      : loop_(loop), bridge_(bridge), client_(client) {
    client_.on_request("initialize", [this](const json& p, acp::Reply r) { on_initialize(p, std::move(r)); });
    client_.on_request("session/new", [this](const json& p, acp::Reply r) { on_new(p, std::move(r)); });
    if (bridge_.can_resume) {
      client_.on_request("session/resume", [this](const json& p, acp::Reply r) { on_resume(p, std::move(r)); });
    }
    client_.on_request("session/prompt", [this](const json& p, acp::Reply r) { on_prompt(p, std::move(r)); });
    client_.on_request("session/close", [this](const json& p, acp::Reply r) { on_close(p, std::move(r)); });
    client_.on_request("session/set_config_option",
                       [this](const json& p, acp::Reply r) { on_set_config_option(p, std::move(r)); });
    client_.on_notification("session/cancel", [this](const json& p) { on_cancel(p); });
  }

  /// Cancels every turn, answers every waiting prompt cancelled, closes
  /// every session; `done` once all harness processes are gone.
  void close_all(std::function<void()> done) {
    auto slots = std::move(slots_);
    slots_.clear();
    auto left = std::make_shared<std::size_t>(slots.size() + 1);
    auto finish_one = [left, done] {
      if (--*left == 0) done();
    };
    for (auto& [id, slot] : slots) stop_slot(std::move(slot), finish_one);
    finish_one();
  }

 private:
  void on_initialize(const json& params, acp::Reply reply) {
    auto req = schema::decode_initialize(params);
    if (!req) return reply.error(req.error());
    json session_caps = {{"close", json::object()}};
    if (bridge_.can_resume) session_caps["resume"] = json::object();
    reply.result({{"protocolVersion", schema::kProtocolVersion},
                  {"agentCapabilities",
                   {{"loadSession", false},
                    {"promptCapabilities", {{"image", false}, {"audio", false}, {"embeddedContext", true}}},
                    {"mcpCapabilities", {{"http", false}, {"sse", false}}},
                    {"sessionCapabilities", session_caps}}},
                  {"authMethods", json::array()},
                  {"agentInfo", {{"name", "harnessd-" + bridge_.name}, {"version", HARNESSD_VERSION}}}});
    client_.mark_initialized();
  }

  void on_new(const json& params, acp::Reply reply) {
    auto req = schema::decode_new_session(params);
    if (!req) return reply.error(req.error());
    BridgeSessionSpec spec{make_uuid(), req->cwd, req->mcpServers, false};
    open(spec, std::move(reply), json{{"sessionId", spec.id}});
  }

  void on_resume(const json& params, acp::Reply reply) {
    auto req = schema::decode_load_session("session/resume", params);
    if (!req) return reply.error(req.error());
    if (slots_.count(req->sessionId)) return reply.result(json::object());  // already live here
    BridgeSessionSpec spec{req->sessionId, req->cwd, req->mcpServers.value_or(json::array()), true};
    open(spec, std::move(reply), json::object());
  }

  void open(const BridgeSessionSpec& spec, acp::Reply reply, json result) {
    auto session = bridge_.open_session(spec);
    if (!session) return reply.error(session.error());
    json options = (*session)->config_options();
    if (!options.empty()) result["configOptions"] = std::move(options);
    slots_[spec.id].session = std::move(*session);
    acp::log::info(bridge_.name + " bridge: session " + spec.id + (spec.resume ? " resumed" : " created"));
    reply.result(std::move(result));
  }

  void on_set_config_option(const json& params, acp::Reply reply) {
    auto req = schema::decode_set_config_option(params);
    if (!req) return reply.error(req.error());
    auto it = slots_.find(req->sessionId);
    if (it == slots_.end()) return reply.error(RpcError::session_not_found(req->sessionId));
    auto invalid = [&](const std::string& field, const std::string& problem) {
      RpcError e = RpcError::invalid_params("session/set_config_option: " + problem);
      e.data = {{"method", "session/set_config_option"}, {"field", field}};
      return e;
    };
    const json options = it->second.session->config_options();
    const json* option = nullptr;
    for (const json& o : options) {
      if (o.value("id", "") == req->configId) option = &o;
    }
    if (!option) return reply.error(invalid("configId", "no option '" + req->configId + "'"));
    bool known = false;
    if (req->value.is_string()) {
      for (const json& choice : option->value("options", json::array())) {
        if (choice.value("value", "") == req->value.get<std::string>()) known = true;
      }
    }
    if (!known) {
      return reply.error(invalid("value", "option '" + req->configId + "' has no value " + req->value.dump()));
    }
    std::string id = req->sessionId;
    it->second.session->set_config_option(
        req->configId, req->value.get<std::string>(),
        [this, id, reply = std::move(reply)](Expected<void, RpcError> done) mutable {
          if (!done) return reply.error(done.error());
          auto s = slots_.find(id);
          if (s == slots_.end()) return reply.error(RpcError::session_not_found(id));
          reply.result({{"configOptions", s->second.session->config_options()}});
        });
  }

  void on_prompt(const json& params, acp::Reply reply) {
    auto req = schema::decode_prompt(params, schema::PromptCapabilities{false, false, true});
    if (!req) return reply.error(req.error());
    auto it = slots_.find(req->sessionId);
    if (it == slots_.end()) return reply.error(RpcError::session_not_found(req->sessionId));
    it->second.waiting.emplace_back(std::move(req->prompt), std::move(reply));
    start_next(req->sessionId);
  }

  void start_next(const std::string& id) {
    auto it = slots_.find(id);
    if (it == slots_.end() || it->second.turn || it->second.waiting.empty()) return;
    Slot& slot = it->second;
    auto [blocks, reply] = std::move(slot.waiting.front());
    slot.waiting.pop_front();
    slot.turn = std::make_shared<BridgeTurn>(client_, id, std::move(reply));
    slot.turn->on_end = [this, id] {
      // Posted: the turn may end inside the bridge's own callbacks.
      loop_.post([this, id] {
        auto s = slots_.find(id);
        if (s == slots_.end()) return;
        s->second.turn.reset();
        start_next(id);
      });
    };
    slot.session->prompt(blocks, slot.turn);
  }

  void on_cancel(const json& params) {
    auto req = schema::decode_session_ref("session/cancel", params);
    if (!req) return;
    auto it = slots_.find(req->sessionId);
    if (it == slots_.end() || !it->second.turn || it->second.turn->ended()) return;
    it->second.turn->mark_cancelled();
    it->second.session->cancel();
  }

  void on_close(const json& params, acp::Reply reply) {
    auto req = schema::decode_session_ref("session/close", params);
    if (!req) return reply.error(req.error());
    auto it = slots_.find(req->sessionId);
    if (it == slots_.end()) return reply.error(RpcError::session_not_found(req->sessionId));
    Slot slot = std::move(it->second);
    slots_.erase(it);
    auto shared_reply = std::make_shared<acp::Reply>(std::move(reply));
    stop_slot(std::move(slot), [shared_reply] { shared_reply->result(json::object()); });
  }

  void stop_slot(Slot slot, std::function<void()> done) {
    for (auto& [blocks, reply] : slot.waiting) reply.result({{"stopReason", "cancelled"}});
    if (slot.turn && !slot.turn->ended()) {
      slot.turn->mark_cancelled();
      slot.session->cancel();
    }
    auto turn = slot.turn;
    BridgeSession* raw = slot.session.get();
    auto owned = std::make_shared<std::unique_ptr<BridgeSession>>(std::move(slot.session));
    raw->close([this, owned, turn, done] {
      // The harness is gone: a turn it never ended ends now, cancelled.
      if (turn && !turn->ended()) turn->finish("cancelled");
      loop_.post([owned, done] {
        owned->reset();
        done();
      });
    });
  }

  acp::Loop& loop_;
  Bridge& bridge_;
  acp::Connection& client_;
  std::map<std::string, Slot> slots_;
};

}  // namespace

namespace {

class BridgeService final : public acp::StdioService {
 public:
  BridgeService(acp::Loop& loop, Bridge& bridge, acp::StdioPeer& peer) : server_(loop, bridge, peer.rpc()) {}
  void stop(const std::string&, acp::UniqueFunction<void()> done) override {
    server_.close_all([done = std::make_shared<acp::UniqueFunction<void()>>(std::move(done))] { (*done)(); });
  }

 private:
  BridgeServer server_;
};

}  // namespace

int run_bridge(acp::Loop& loop, Bridge& bridge, const BridgeRunOptions& options) {
  acp::StdioServeOptions serve_options;
  serve_options.peer.in_fd = options.in_fd;
  serve_options.peer.out_fd = options.out_fd;
  serve_options.peer.connection.peer = "client";
  serve_options.peer.connection.require_initialize = true;
  // Bounded: a harness that does not die must not keep the bridge up.
  serve_options.stop_bound = std::chrono::seconds(5);
  serve_options.what = bridge.name + " bridge";
  return acp::serve_stdio(loop, serve_options,
                          [&](acp::StdioPeer& peer) { return std::make_unique<BridgeService>(loop, bridge, peer); });
}

}  // namespace harnessd::harnesses
