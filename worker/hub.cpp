// The hub between socket clients and the one engine of a server.
#include "worker/hub.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "acp/files.h"
#include "acp/line_splitter.h"
#include "acp/log.h"
#include "acp/stream.h"
#include "schema/json_parse.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// The engine serves every client with one set of client capabilities. The
// clients' own file system and terminal stay theirs: adapters use their
// own (docs/server.md).
const json& hub_client_capabilities() {
  static const json caps = {{"fs", {{"readTextFile", false}, {"writeTextFile", false}}}, {"terminal", false}};
  return caps;
}

std::string session_of(const json& msg) {
  auto p = msg.find("params");
  if (p == msg.end() || !p->is_object()) return "";
  auto s = p->find("sessionId");
  return s != p->end() && s->is_string() ? s->get<std::string>() : "";
}

}  // namespace

struct Hub::Client {
  Client(std::uint64_t client_id, std::string name, std::size_t max_line, Hub& hub)
      : id(client_id),
        label(std::move(name)),
        splitter(
            max_line, [this, &hub](std::string_view line) { hub.from_client(*this, line); },
            [this, &hub, max_line](std::string_view, std::size_t size) {
              hub.error_to(*this, json(),
                           RpcError::invalid_request("Invalid request: a line of " + std::to_string(size) +
                                                     " bytes is longer than the limit of " + std::to_string(max_line)));
            }) {}

  std::uint64_t id;
  std::string label;
  std::unique_ptr<acp::Reader> in;
  std::unique_ptr<acp::Writer> out;
  acp::LineSplitter splitter;
  bool initialized = false;
  bool gone = false;
  std::set<std::string> sessions;
  /// Sessions it attached to by a load while they were busy: their frames
  /// come to it through a watch, not as the session's updates.
  std::set<std::string> attached_by_watch;
  std::string connected_at = acp::iso_time();
  pid_t pid = 0;
  bool input_ended = false;  // it sends nothing more; it goes once answered
};

Hub::Hub(acp::Loop& loop, EngineOptions engine, HubOptions options)
    : loop_(loop),
      options_(options),
      engine_host_({.peer = "hub", .require_initialize = true, .max_pending_calls = engine.config.daemon.max_pending_calls},
                   [this](std::string line) { from_engine(std::move(line)); }),
      flush_bound_(loop) {
  engine_ = std::make_unique<Engine>(loop, engine_host_, std::move(engine));
  // The engine is initialized once, by the hub, so that warm adapters fill
  // before the first client comes; each client's initialize is answered by
  // the engine too, with these same capabilities.
  json init = {{"jsonrpc", "2.0"},
               {"id", 0},
               {"method", "initialize"},
               {"params", {{"protocolVersion", 1}, {"clientCapabilities", hub_client_capabilities()}}}};
  engine_host_.receive_line(init.dump());
}

Hub::~Hub() {
  clients_.clear();
  engine_.reset();
}

std::size_t Hub::prompts_open() const {
  std::size_t n = 0;
  for (const auto& [session, ids] : prompts_) n += ids.size();
  return n;
}

void Hub::add_client(int fd, pid_t pid) {
  const std::uint64_t id = next_client_++;
  auto c = std::make_unique<Client>(id, "pid " + std::to_string(pid), options_.max_line_bytes, *this);
  c->pid = pid;
  int out_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  auto reader = acp::open_fd_reader(loop_, fd);
  auto writer = out_fd >= 0 ? acp::open_fd_writer(loop_, out_fd) : Expected<std::unique_ptr<acp::Writer>>(Error{"dup failed"});
  if (!reader || !writer) {
    acp::log::warn("client " + c->label + ": cannot serve it: " + (!reader ? reader.error().message : writer.error().message));
    if (!reader) ::close(fd);
    if (out_fd >= 0 && !writer) ::close(out_fd);
    return;
  }
  c->in = std::move(*reader);
  c->out = std::move(*writer);
  Client* raw = c.get();
  c->out->on_error([this, id](int status) {
    loop_.post([this, id, status] { drop(id, "its connection failed (" + acp::uv_error_text(status) + ")"); });
  });
  c->in->start([raw](std::string_view data) { raw->splitter.feed(data); },
               [this, raw, id](int status) {
                 raw->splitter.finish();
                 loop_.post([this, id, status] {
                   if (status == 0) return input_ended(id);
                   drop(id, "reading it failed (" + acp::uv_error_text(status) + ")");
                 });
               });
  acp::log::info("client " + c->label + " connected");
  clients_.emplace(id, std::move(c));
}

void Hub::send(Client& c, std::string line) {
  if (c.gone || !c.out) return;
  c.out->write(std::move(line));
  if (c.out->queued_bytes() > options_.max_client_queued) {
    c.gone = true;
    loop_.post([this, id = c.id] {
      drop(id, "it did not read " + std::to_string(options_.max_client_queued) + " bytes of its output");
    });
  }
}

void Hub::error_to(Client& c, const json& id, const RpcError& e) {
  json err = {{"code", e.code}, {"message", e.message}};
  if (!e.data.is_null()) err["data"] = e.data;
  send(c, acp::to_line({{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(err)}}));
}

void Hub::from_client(Client& c, std::string_view line) {
  if (c.gone) return;
  auto parsed = schema::parse_json(line);
  if (!parsed || !parsed->is_object()) {
    acp::log::warn("client " + c.label + " sent a line that is not a JSON object; answered -32700");
    error_to(c, json(), RpcError{-32700, "Parse error: " + (parsed ? std::string("not an object") : parsed.error().message), json()});
    return;
  }
  json& msg = *parsed;
  auto method_it = msg.find("method");
  const bool has_id = msg.contains("id");
  if (method_it == msg.end()) {
    // An answer to one of the engine's requests that this client was asked.
    if (!has_id || !msg["id"].is_number_integer()) return;
    auto asked = asked_.find(msg["id"].get<std::int64_t>());
    if (asked == asked_.end() || asked->second.client != c.id) {
      acp::log::warn("client " + c.label + " answered a request it was not asked; ignored");
      return;
    }
    asked_.erase(asked);
    engine_host_.receive_line(std::string(line));
    return;
  }
  if (!method_it->is_string()) {
    if (has_id) error_to(c, msg["id"], RpcError::invalid_request("Invalid request: method must be a string"));
    return;
  }
  const std::string method = method_it->get<std::string>();
  if (!has_id) {
    // A notification. $/cancel_request names the client's own id.
    if (!c.initialized) {
      acp::log::warn("client " + c.label + " sent " + method + " before initialize; ignored");
      return;
    }
    if (method == "$/cancel_request") {
      const json* req = msg.contains("params") && msg["params"].is_object() && msg["params"].contains("requestId")
                            ? &msg["params"]["requestId"]
                            : nullptr;
      if (!req) return;
      auto it = by_client_id_.find({c.id, req->dump()});
      if (it == by_client_id_.end()) return;
      msg["params"]["requestId"] = it->second;
      engine_host_.receive_line(msg.dump());
      return;
    }
    engine_host_.receive_line(std::string(line));
    return;
  }
  json client_id = msg["id"];
  if (method != "initialize" && !c.initialized) {
    return error_to(c, client_id, RpcError::invalid_request("Invalid request: " + method + " before initialize"));
  }
  if (!client_id.is_string() && !client_id.is_number_integer()) {
    return error_to(c, client_id, RpcError::invalid_request("Invalid request: the id must be a string or an integer"));
  }
  const std::string key = client_id.dump();
  if (by_client_id_.count({c.id, key})) {
    return error_to(c, client_id, RpcError::invalid_request("Invalid request: id " + key + " is already in use"));
  }
  if (method == "initialize" && msg.contains("params") && msg["params"].is_object()) {
    msg["params"]["clientCapabilities"] = hub_client_capabilities();
  }
  const std::int64_t id = next_id_++;
  Forwarded f{c.id, client_id, method, session_of(msg)};
  if (method == "session/prompt" && !f.session.empty()) {
    prompts_[f.session].push_back(id);
    if (!c.attached_by_watch.count(f.session)) attached_[f.session].insert(c.id);
    c.sessions.insert(f.session);
  }
  if (method == "session/load" && !f.session.empty()) {
    auto busy = prompts_.find(f.session);
    if (busy != prompts_.end() && !busy->second.empty()) {
      // A turn runs: the session is not reloaded but watched from its first
      // frame, and the watch's frames reach this client as updates.
      f.attach = true;
      msg = {{"jsonrpc", "2.0"},
             {"method", "_harnessd/sessions/watch"},
             {"params", {{"sessionId", f.session}, {"fromSeq", 1}}}};
      watches_[id] = Watch{c.id, client_id, f.session, true};
    } else {
      loading_[f.session] = c.id;
    }
  }
  if (method == "_harnessd/sessions/watch") watches_[id] = Watch{c.id, client_id, f.session, false};
  if (method == "_harnessd/sessions/unwatch" && msg.contains("params") && msg["params"].is_object() &&
      msg["params"].contains("watchId")) {
    // The client names its own id for the watch.
    for (const auto& [wid, w] : watches_) {
      if (w.client == c.id && !w.as_updates && w.id == msg["params"]["watchId"]) msg["params"]["watchId"] = wid;
    }
  }
  forwarded_.emplace(id, std::move(f));
  by_client_id_.emplace(std::make_pair(c.id, key), id);
  msg["id"] = id;
  engine_host_.receive_line(msg.dump());
}

void Hub::route_event(json& msg) {
  json& params = msg["params"];
  if (!params.is_object() || !params.contains("watchId") || !params["watchId"].is_number_integer()) return;
  auto it = watches_.find(params["watchId"].get<std::int64_t>());
  if (it == watches_.end()) return;
  const Watch w = it->second;
  if (params.value("closed", false)) watches_.erase(it);
  auto c = clients_.find(w.client);
  if (c == clients_.end()) return;
  if (!w.as_updates) {
    params["watchId"] = w.id;
    send(*c->second, acp::to_line(msg));
    return;
  }
  if (!params.contains("update")) return;
  send(*c->second, acp::to_line({{"jsonrpc", "2.0"},
                                 {"method", "session/update"},
                                 {"params", {{"sessionId", w.session}, {"update", std::move(params["update"])}}}}));
}

void Hub::engine_call(const std::string& method, json params) {
  engine_host_.receive_line(
      json{{"jsonrpc", "2.0"}, {"id", next_own_id_--}, {"method", method}, {"params", std::move(params)}}.dump());
}

json Hub::clients_json() const {
  json out = json::array();
  for (const auto& [id, c] : clients_) {
    std::size_t prompts = 0, watches = 0;
    for (const auto& [fid, f] : forwarded_) prompts += f.client == id && f.method == "session/prompt";
    for (const auto& [wid, w] : watches_) watches += w.client == id && !w.as_updates;
    out.push_back({{"id", id},
                   {"pid", c->pid},
                   {"connectedAt", c->connected_at},
                   {"sessions", c->sessions},
                   {"prompts", prompts},
                   {"watches", watches}});
  }
  return out;
}

void Hub::from_engine(std::string line) {
  json msg = schema::parse_or_discard(std::string_view(line).substr(0, line.size() - (line.ends_with('\n') ? 1 : 0)));
  if (!msg.is_object()) return;
  auto method_it = msg.find("method");
  if (method_it == msg.end()) {
    if (msg.contains("id") && msg["id"].is_number_integer()) answered(msg["id"].get<std::int64_t>(), msg);
    return;
  }
  const std::string method = method_it->is_string() ? method_it->get<std::string>() : "";
  if (method == "_harnessd/session_event") return route_event(msg);
  const std::string session = session_of(msg);
  if (msg.contains("id")) {
    // A request for a client: the one whose prompt runs on the session.
    const std::int64_t id = msg["id"].is_number_integer() ? msg["id"].get<std::int64_t>() : 0;
    Client* c = asker_for(session);
    if (!c || c->input_ended) {
      loop_.post([this, id, method, params = msg.value("params", json::object())] {
        decide_alone(id, method, params, false);
      });
      return;
    }
    asked_[id] = Asked{c->id, method, msg.value("params", json::object())};
    send(*c, std::move(line));
    return;
  }
  // A notification: to the session's clients, or to a client replaying it.
  if (session.empty()) {
    for (auto& [id, c] : clients_) {
      if (c->initialized) send(*c, line);
    }
    return;
  }
  if (auto l = loading_.find(session); l != loading_.end()) {
    if (auto c = clients_.find(l->second); c != clients_.end()) send(*c->second, std::move(line));
    return;
  }
  // While a turn runs, its updates go to the client that sent the prompt
  // and to the session's watchers (the clients that loaded it); between
  // turns, to every client attached to it.
  std::set<std::uint64_t> to;
  if (Client* asker = asker_for(session)) {
    // One that joined during a turn follows the session through its watch.
    if (!asker->attached_by_watch.count(session)) to.insert(asker->id);
    if (auto w = watchers_.find(session); w != watchers_.end()) to.insert(w->second.begin(), w->second.end());
  } else if (auto a = attached_.find(session); a != attached_.end()) {
    to = a->second;
  }
  for (std::uint64_t id : to) {
    if (auto c = clients_.find(id); c != clients_.end()) send(*c->second, line);
  }
}

void Hub::answered(std::int64_t id, json& msg) {
  if (id <= 0) return;  // the hub's own requests
  auto it = forwarded_.find(id);
  if (it == forwarded_.end()) return;
  Forwarded f = std::move(it->second);
  forwarded_.erase(it);
  by_client_id_.erase({f.client, f.id.dump()});
  const bool ok = msg.contains("result");
  if (f.method == "session/prompt") {
    auto p = prompts_.find(f.session);
    if (p != prompts_.end()) {
      std::erase(p->second, id);
      if (p->second.empty()) prompts_.erase(p);
    }
  }
  if (f.method == "session/load") {
    if (auto l = loading_.find(f.session); l != loading_.end() && l->second == f.client) loading_.erase(l);
  }
  std::string attach;
  if (ok && f.method == "session/new" && msg["result"].is_object() && msg["result"].contains("sessionId") &&
      msg["result"]["sessionId"].is_string()) {
    attach = msg["result"]["sessionId"].get<std::string>();
  }
  if (ok && (f.method == "session/load" || f.method == "session/resume")) {
    attach = f.session;
    // Over a server every load attaches: the client follows the session live.
    if (msg["result"].is_object() && !f.attach) msg["result"]["_meta"]["harnessd"]["attached"] = true;
  }
  if (ok && f.method == "session/close") {
    if (auto a = attached_.find(f.session); a != attached_.end()) {
      for (std::uint64_t cid : a->second) {
        if (auto c = clients_.find(cid); c != clients_.end()) c->second->sessions.erase(f.session);
      }
      attached_.erase(a);
    }
    watchers_.erase(f.session);
  }
  if (f.method == "_harnessd/sessions/watch" || f.attach) {
    auto w = watches_.find(id);
    if (!ok && w != watches_.end()) watches_.erase(w);
    if (ok && msg["result"].is_object()) msg["result"]["watchId"] = f.id;
  }
  if (ok && f.method == "_harnessd/status" && msg["result"].is_object()) msg["result"]["clients"] = clients_json();
  auto c = clients_.find(f.client);
  if (c != clients_.end() && !c->second->gone) {
    Client& client = *c->second;
    if (ok && f.method == "initialize") client.initialized = true;
    if (f.attach) {
      // The load's answer: the replay is out, and what follows is live.
      if (ok) {
        client.attached_by_watch.insert(f.session);
        client.sessions.insert(f.session);
        const json replayed = msg["result"].value("replayed", json(0));
        const json next = msg["result"].value("nextSeq", json(0));
        msg = {{"jsonrpc", "2.0"},
               {"result", {{"_meta", {{"harnessd", {{"attached", true}, {"replayed", replayed}, {"nextSeq", next}}}}}}}};
      }
      attach.clear();
    }
    if (!attach.empty()) {
      attached_[attach].insert(client.id);
      if (f.method == "session/load") watchers_[attach].insert(client.id);
      client.sessions.insert(attach);
    }
    msg["id"] = f.id;
    send(client, acp::to_line(msg));
    if (client.input_ended && !has_open_requests(client.id)) {
      loop_.post([this, cid = client.id] { drop(cid, "it disconnected"); });
    }
  }
  if (f.method == "session/prompt") check_idle();
}

Hub::Client* Hub::asker_for(const std::string& session) {
  auto p = prompts_.find(session);
  if (p == prompts_.end() || p->second.empty()) return nullptr;
  auto f = forwarded_.find(p->second.front());
  if (f == forwarded_.end()) return nullptr;
  auto c = clients_.find(f->second.client);
  if (c == clients_.end() || c->second->gone) return nullptr;
  return c->second.get();
}

void Hub::decide_alone(std::int64_t id, const std::string& method, const json& /*params*/, bool cancelling) {
  json answer = {{"jsonrpc", "2.0"}, {"id", id}};
  if (method == "session/request_permission" && cancelling) {
    answer["result"] = {{"outcome", {{"outcome", "cancelled"}}}};
  } else if (method == "session/request_permission") {
    // Nobody to ask: the session's permission policy decides by its
    // ask_fallback (docs/policy.md).
    answer["error"] = {{"code", rpc_code::kPeerGone},
                       {"message", method + ": the client that asked for this turn is gone"},
                       {"data", {{"clientGone", true}}}};
  } else {
    answer["error"] = {{"code", -32603}, {"message", method + ": the client that asked for this turn is gone"}};
  }
  engine_host_.receive_line(answer.dump());
}

void Hub::cancel_prompts_of(std::uint64_t id) {
  const bool cancel_running = options_.on_disconnect == OnDisconnect::kCancel;
  // Its prompts: queued ones leave the queue; the running one is cancelled
  // or goes on, as [daemon] on_disconnect says.
  std::vector<std::int64_t> cancel;
  for (const auto& [fid, f] : forwarded_) {
    if (f.client != id || f.method != "session/prompt") continue;
    auto p = prompts_.find(f.session);
    const bool running = p != prompts_.end() && !p->second.empty() && p->second.front() == fid;
    if (!running || cancel_running) cancel.push_back(fid);
  }
  for (std::int64_t fid : cancel) {
    engine_host_.receive_line(json{{"jsonrpc", "2.0"}, {"method", "$/cancel_request"}, {"params", {{"requestId", fid}}}}.dump());
  }
}

void Hub::decide_asked_of(std::uint64_t id) {
  // What the engine asked the client is decided without it: refused, or
  // cancelled when its turn is being cancelled too (ACP's answer to a
  // request of a cancelled turn).
  std::vector<std::pair<std::int64_t, Asked>> unanswered;
  for (const auto& [rid, a] : asked_) {
    if (a.client == id) unanswered.emplace_back(rid, a);
  }
  for (auto& [rid, a] : unanswered) {
    asked_.erase(rid);
    decide_alone(rid, a.method, a.params, options_.on_disconnect == OnDisconnect::kCancel);
  }
}

bool Hub::has_open_requests(std::uint64_t id) const {
  return std::any_of(forwarded_.begin(), forwarded_.end(), [id](const auto& kv) { return kv.second.client == id; });
}

void Hub::input_ended(std::uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  // The client sends nothing more but may still read, as a host that
  // closes harnessd's stdin does: what it asked is answered (its prompts
  // cancelled, or a running one let run by on_disconnect), then it goes.
  c.input_ended = true;
  c.in.reset();
  cancel_prompts_of(id);
  decide_asked_of(id);
  if (!has_open_requests(id)) drop(id, "it disconnected");
}

void Hub::drop(std::uint64_t id, const std::string& why) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  std::unique_ptr<Client> c = std::move(it->second);
  clients_.erase(it);
  c->gone = true;
  acp::log::info("client " + c->label + " left: " + why);
  if (!c->input_ended) cancel_prompts_of(id);
  for (auto& [session, client] : std::map<std::string, std::uint64_t>(loading_)) {
    if (client == id) loading_.erase(session);
  }
  for (const std::string& s : c->sessions) {
    for (auto* map : {&attached_, &watchers_}) {
      if (auto a = map->find(s); a != map->end()) {
        a->second.erase(id);
        if (a->second.empty()) map->erase(a);
      }
    }
  }
  std::erase_if(by_client_id_, [id](const auto& kv) { return kv.first.first == id; });
  std::vector<std::int64_t> watching;
  for (const auto& [wid, w] : watches_) {
    if (w.client == id) watching.push_back(wid);
  }
  for (std::int64_t wid : watching) {
    watches_.erase(wid);
    engine_call("_harnessd/sessions/unwatch", {{"watchId", wid}});
  }
  decide_asked_of(id);
  // The reader and writer may be inside their own callbacks' callers.
  loop_.post([c = std::move(c)]() mutable { c.reset(); });
  check_idle();
}

void Hub::check_idle() {
  if (on_idle_ && clients_.empty() && prompts_open() == 0) loop_.post([this] { if (on_idle_) on_idle_(); });
}

void Hub::shutdown(const std::string& why, acp::UniqueFunction<void()> done) {
  if (stopping_) return;
  stopping_ = true;
  on_idle_ = nullptr;
  // The engine answers every open prompt first (cancelled), so clients
  // hear how their turns ended; then their output gets 3 s to leave.
  engine_->shutdown(why, [this, done = std::move(done)]() mutable {
    auto d = std::make_shared<acp::UniqueFunction<void()>>(std::move(done));
    auto left = std::make_shared<std::size_t>(clients_.size() + 1);
    auto one = [this, left, d] {
      if (--*left != 0 || !*d) return;
      flush_bound_.stop();
      auto fn = std::move(*d);
      *d = nullptr;
      fn();
    };
    flush_bound_.start(std::chrono::seconds(3), [this, left, d] {
      acp::log::warn("server: a client does not read its last output; stopping without it");
      *left = 1;
      if (*d) {
        auto fn = std::move(*d);
        *d = nullptr;
        fn();
      }
    });
    for (auto& [id, c] : clients_) {
      c->in.reset();
      c->out->flush(one);
    }
    one();
  });
}

void Hub::close_clients() {
  for (auto& [id, c] : clients_) {
    c->gone = true;
    c->in.reset();
    c->out.reset();
  }
}

}  // namespace harnessd::worker
