// The relay between one session's adapter and the host. References are to
// the ACP v1 spec ("session update", "client methods").
#include "worker/relay.h"

#include <set>
#include <utility>

#include "acp/json_write.h"
#include "acp/log.h"
#include "acp/utf8.h"
#include "schema/frame_edit.h"
#include "schema/json_parse.h"
#include "schema/session_update.h"
#include "schema/text_chunk.h"
#include "worker/transcript.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// Text chunks longer than this are relayed as several chunks, so that no
// line we write comes near acpx's 8 MiB line limit.
constexpr std::size_t kMaxChunkText = 1u << 20;

// Updates that belong to a prompt turn. Outside a turn they would break
// clients that treat "updates after the answer" as a protocol violation.
const std::set<std::string, std::less<>> kTurnUpdates = {
    "user_message_chunk", "agent_message_chunk", "agent_thought_chunk", "tool_call", "tool_call_update", "plan"};
const std::set<std::string, std::less<>> kChunkUpdates = {"user_message_chunk", "agent_message_chunk",
                                                          "agent_thought_chunk"};
// Requests an adapter may make of its client, which harnessd forwards to the host.
const char* const kForwarded[] = {"session/request_permission", "fs/read_text_file", "fs/write_text_file",
                                  "terminal/create",            "terminal/output",   "terminal/wait_for_exit",
                                  "terminal/kill",              "terminal/release",  "elicitation/create"};

bool flag(const json& caps, const char* a, const char* b = nullptr) {
  if (!caps.is_object() || !caps.contains(a)) return false;
  const json& v = caps.at(a);
  if (!b) return v.is_boolean() ? v.get<bool>() : v.is_object();
  if (!v.is_object() || !v.contains(b)) return false;
  const json& w = v.at(b);
  return w.is_boolean() && w.get<bool>();
}

}  // namespace

Relay::Relay(Runtime& rt, std::string session_id, const adapters::AdapterSession& adapter, HostOrder& order,
             Hooks hooks)
    : rt_(rt),
      session_id_(std::move(session_id)),
      quoted_id_(json(session_id_).dump()),
      adapter_(adapter),
      order_(order),
      hooks_(std::move(hooks)),
      frames_([this](const json& id, std::uint64_t seq, std::string_view frame) { send_event(id, seq, frame); },
              [this](acp::UniqueFunction<void(Expected<std::string>)> done) {
                // Everything recorded so far is on disk first.
                rt_.store.barrier_all([this, done = std::move(done)](Expected<void>) mutable {
                  rt_.store.read_transcript(session_id_, [done = std::move(done)](
                                                             Expected<transcript::Expanded> read) mutable {
                    if (!read) return done(read.error());
                    done(std::move(read->lines));
                  });
                });
              }),
      gate_(rt, session_id_,
            {hooks_.recorder, hooks_.permission_scope, hooks_.cancelling}) {}

bool Relay::keeps_transcript() const { return !hooks_.keep_transcript || hooks_.keep_transcript(); }

void Relay::record_transcript(std::string line) {
  frames_.add(line);
  if (!keeps_transcript()) return;
  close_range(std::nullopt);
  rt_.store.append(Store::transcript_file(session_id_), std::move(line));
}

void Relay::close_range(std::optional<std::uint64_t> at) {
  if (range_run_.empty()) return;
  // Once its run has ended, the range ends with the run's events.
  RunRecorder* r = hooks_.recorder();
  if (r && r->run_id() == range_run_) {
    rt_.store.append(Store::transcript_file(session_id_), transcript::to_line(range_run_, at.value_or(r->events_bytes())));
  }
  range_run_.clear();
}

std::optional<std::uint64_t> Relay::frame_start() const {
  // The adapter's frame being handled, as the tap recorded it just now.
  RunRecorder* r = hooks_.recorder();
  if (!r) return std::nullopt;
  return r->last_frame_at() ? r->last_frame_at() : std::optional<std::uint64_t>(r->events_bytes());
}

std::size_t Relay::replay(const transcript::Expanded& transcript) {
  // Every line is a frame as the host saw it.
  std::size_t replayed = 0, start = 0;
  const std::string& lines = transcript.lines;
  while (start < lines.size()) {
    std::size_t end = lines.find('\n', start);
    if (end == std::string::npos) end = lines.size();
    if (end > start) {
      rt_.host.send_line(lines.substr(start, end + 1 - start));
      ++replayed;
    }
    start = end + 1;
  }
  if (transcript.cut) {
    acp::log::warn("session " + session_id_ + ": " + std::to_string(transcript.cut) +
                   " transcript line(s) cut by a crash were skipped");
  }
  if (transcript.missing) {
    acp::log::warn("session " + session_id_ + ": " + std::to_string(transcript.missing) +
                   " part(s) of the transcript pointed at runs no longer kept (retention, gc); skipped");
  }
  return replayed;
}

void Relay::bind(adapters::AdapterLink& link) {
  link.set_taps(
      [this](bool outbound, std::string_view line, bool is_json) {
        // The line being handled: the update it carries is re-addressed
        // by its bytes (read only while the connection dispatches it).
        if (!outbound) inbound_line_ = is_json ? line : std::string_view();
        if (RunRecorder* r = hooks_.recorder()) {
          r->event(outbound ? "harnessd>adapter" : "adapter>harnessd", line, is_json);
        }
      },
      [this](std::string_view data) {
        if (RunRecorder* r = hooks_.recorder()) r->stderr_data(data);
      });
  acp::Connection& rpc = link.rpc();
  rpc.set_fast_path([this, &rpc](std::string_view line) { return fast_update(rpc, line); });
  rpc.on_notification("session/update", [this](const json& params) {
    relay_update(params);
    inbound_line_ = {};  // its line is gone once the dispatch returns
  });
  rpc.on_request("session/request_permission", [this](const json& params, acp::Reply reply) {
    gate_.request(params, std::move(reply), [this](json out, PermissionGate::Answered answered) {
      ask_host("session/request_permission", std::move(out), std::move(answered));
    });
  });
  for (const char* method : kForwarded) {
    std::string m = method;
    if (m == "session/request_permission") continue;
    rpc.on_request(m,
                   [this, m](const json& params, acp::Reply reply) { forward_to_host(m, params, std::move(reply)); });
  }
  rpc.on_notification("elicitation/complete", [this](const json& params) {
    if (!flag(rt_.client_capabilities, "elicitation")) return;
    order_.then([&host = rt_.host, params]() { host.notify("elicitation/complete", params); });
  });
}

bool Relay::fast_update(acp::Connection& rpc, std::string_view line) {
  // A chunk of text, recognised without a parse. Whatever the parse path
  // would refuse, split or warn about is left to it.
  auto chunk = schema::scan_text_chunk(line);
  if (!chunk || chunk->text.size() > kMaxChunkText || !adapter_.prompting() || adapter_.replaying()) return false;
  rpc.tap_inbound(line);
  inbound_line_ = {};
  hooks_.turn_output(chunk->kind, chunk->text);
  relay_as_is(schema::readdress(line, chunk->session_id, quoted_id_));
  return true;
}

void Relay::relay_as_is(std::string line) {
  // The run's recording holds the adapter's frame, which differs only by
  // the session id, so the transcript points at it instead of keeping a
  // copy.
  RunRecorder* r = hooks_.recorder();
  const bool in_events = r && r->last_frame_at() && keeps_transcript();
  if (!in_events) {
    send_line(std::move(line), false);
    return;
  }
  if (range_run_ != r->run_id()) {
    close_range(std::nullopt);
    range_run_ = r->run_id();
    rt_.store.append(Store::transcript_file(session_id_), transcript::from_line(range_run_, *r->last_frame_at()));
  }
  frames_.add(line);
  deliver(std::move(line));
}

void Relay::relay_update(const json& params) {
  // Unless this update reaches the host as the adapter sent it, a range of
  // the transcript that points at the run's events ends before its frame.
  const std::optional<std::uint64_t> frame_at = frame_start();
  auto dropped = [&](const std::string& why) {
    close_range(frame_at);
    acp::log::warn("session " + session_id_ + ": " + why);
  };
  const json* update = nullptr;
  if (params.is_object()) {
    auto it = params.find("update");
    if (it != params.end() && it->is_object()) update = &*it;
  }
  if (!update) return dropped("adapter sent session/update without an update object; dropped");
  std::string kind = update->value("sessionUpdate", "");
  // The host must never receive an update its own schema rejects: an
  // update of a known kind is relayed only in its ACP shape; a kind
  // harnessd does not know only when the host opted into it.
  if (!schema::is_known_update_kind(kind)) {
    if (!host_accepts_unstable(kind)) {
      return dropped("adapter sent session/update of unknown kind '" + kind + "'; dropped");
    }
  } else if (auto problem = schema::check_session_update(*update)) {
    return dropped("adapter sent a malformed " + kind + " (" + *problem + "); dropped");
  }
  if (kTurnUpdates.count(kind) && !adapter_.prompting()) {
    return dropped("adapter sent " + kind + " outside a turn; dropped");
  }
  if (adapter_.replaying()) {
    close_range(frame_at);  // the adapter replaying its own history
    return;
  }
  const json* content = update->contains("content") ? &(*update)["content"] : nullptr;
  const std::string* text = content && content->is_object() && content->value("type", "") == "text" &&
                                    content->contains("text") && (*content)["text"].is_string()
                                ? &(*content)["text"].get_ref<const std::string&>()
                                : nullptr;
  if (kind == "tool_call" || kind == "tool_call_update") gate_.note(*update);
  if (kTurnUpdates.count(kind)) hooks_.turn_output(kind, text ? std::string_view(*text) : std::string_view());
  if (kind == "usage_update" && hooks_.usage) hooks_.usage(*update);
  const bool too_long = kChunkUpdates.count(kind) && text && text->size() > kMaxChunkText;
  if (kind != "config_option_update" && !too_long && params.contains("sessionId")) {
    // The usual update: serialised straight from what the adapter sent,
    // with harnessd's session id in place of the adapter's (no copy).
    relay_as_is(relayed_line(params));
    return;
  }
  close_range(frame_at);  // what the host gets differs from the adapter's frame
  json out = params;
  out["sessionId"] = session_id_;
  if (kind == "config_option_update" && update->contains("configOptions") && (*update)["configOptions"].is_array()) {
    // The host sees the complete list: harnessd's option, then the adapter's.
    out["update"]["configOptions"] = hooks_.options_changed((*update)["configOptions"]);
  }

  if (too_long) {
    std::string_view rest = *text;
    while (!rest.empty()) {
      std::size_t n = acp::utf8::safe_cut(rest, kMaxChunkText);
      out["update"]["content"]["text"] = std::string(rest.substr(0, n));
      send_update(out);
      rest.remove_prefix(n);
    }
    return;
  }
  send_update(out);
}

std::string Relay::relayed_line(const json& params) {
  // The adapter's own bytes with harnessd's session id in place of its own,
  // when the line allows that edit exactly (schema::session_id_span) and is
  // the one these params came from.
  std::string_view raw = std::exchange(inbound_line_, std::string_view());
  auto theirs = params.find("sessionId");
  if (!raw.empty() && theirs != params.end() && theirs->is_string()) {
    auto span = schema::session_id_span(raw);
    if (span && raw.substr(span->first + 1, span->second - span->first - 2) == theirs->get_ref<const std::string&>()) {
      return schema::readdress(raw, *span, quoted_id_);
    }
  }
  return update_line(params);
}

std::string Relay::update_line(const json& params) const {
  // Byte for byte what dumping {"jsonrpc", "method", "params"} would give
  // (keys in order), without building that object.
  std::string line = R"({"jsonrpc":"2.0","method":"session/update","params":{)";
  bool first = true;
  for (const auto& [key, value] : params.items()) {
    if (!first) line += ',';
    first = false;
    acp::utf8::append_json_string(line, key);
    line += ':';
    if (key == "sessionId") {
      acp::utf8::append_json_string(line, session_id_);
    } else {
      acp::append_json(line, value);
    }
  }
  line += "}}\n";
  return line;
}

void Relay::send_update(const json& params) {
  send_line(acp::to_line({{"jsonrpc", "2.0"}, {"method", "session/update"}, {"params", params}}));
}

void Relay::send_line(std::string line, bool record_in_run) {
  // Serialised once: the same line goes to the host, the transcript and,
  // when it is not the adapter's frame as received, the run's events.
  if (RunRecorder* r = record_in_run ? hooks_.recorder() : nullptr) {
    r->event("harnessd>host", std::string_view(line).substr(0, line.size() - 1), true);
  }
  record_transcript(line);
  deliver(std::move(line));
}

void Relay::deliver(std::string line) {
  if (order_.waiting()) {
    // The previous turn's answer is not out yet: the host hears it first.
    const std::size_t bytes = line.size();
    order_.then([&host = rt_.host, line = std::move(line)]() mutable { host.send_line(std::move(line)); }, bytes);
    return;
  }
  rt_.host.send_line(std::move(line));
}

void Relay::send_event(const json& watch_id, std::uint64_t seq, std::string_view frame) {
  // The frame's update as it is, without the envelope of a session/update.
  json parsed = schema::parse_or_discard(frame);
  if (!parsed.is_object() || !parsed.contains("params") || !parsed["params"].is_object()) return;
  json params = {{"watchId", watch_id},
                 {"sessionId", session_id_},
                 {"seq", seq},
                 {"update", std::move(parsed["params"]["update"])}};
  deliver(acp::to_line({{"jsonrpc", "2.0"}, {"method", "_harnessd/session_event"}, {"params", std::move(params)}}));
}

void Relay::end_watches() {
  frames_.end_all([this](const json& watch_id) {
    deliver(acp::to_line({{"jsonrpc", "2.0"},
                          {"method", "_harnessd/session_event"},
                          {"params", {{"watchId", watch_id}, {"sessionId", session_id_}, {"closed", true}}}}));
  });
}

bool Relay::host_accepts_unstable(const std::string& kind) const {
  // Kinds that SDK schemas know but ACP v1 marks unstable, each behind the
  // client capability that announces it.
  const json& caps = rt_.client_capabilities;
  if (kind == "notice") return flag(caps, "session", "notices");
  if (kind == "compaction_update" || kind == "compaction_summary_chunk") return flag(caps, "session", "compaction");
  return false;
}

bool Relay::host_can_serve(const std::string& method) const {
  const json& caps = rt_.client_capabilities;
  if (method == "session/request_permission") return true;
  if (!client_fs_ || !worker_serves_client_fs(rt_)) {
    if (method.rfind("fs/", 0) == 0 || method.rfind("terminal/", 0) == 0) return false;
  }
  if (method == "fs/read_text_file") return flag(caps, "fs", "readTextFile");
  if (method == "fs/write_text_file") return flag(caps, "fs", "writeTextFile");
  if (method.rfind("terminal/", 0) == 0) return flag(caps, "terminal");
  if (method == "elicitation/create") return flag(caps, "elicitation");
  return false;
}

bool worker_serves_client_fs(const Runtime& rt) { return !rt.config.daemon.worker || rt.config.daemon.worker_client_fs; }

json adapter_client_capabilities(const Runtime& rt) {
  json caps = rt.client_capabilities.is_object() ? rt.client_capabilities : json::object();
  // harnessd does not relay authentication flows, so terminal auth is not offered.
  caps.erase("auth");
  // A worker's host is a front on another machine: its files and
  // terminals are not where this adapter works.
  if (!worker_serves_client_fs(rt)) {
    caps.erase("fs");
    caps.erase("terminal");
  }
  return caps;
}

json Relay::adapter_client_capabilities() const {
  json caps = worker::adapter_client_capabilities(rt_);
  if (!client_fs_) {
    caps.erase("fs");
    caps.erase("terminal");
  }
  return caps;
}

void Relay::forward_to_host(const std::string& method, const json& params, acp::Reply reply) {
  if (!host_can_serve(method)) {
    // The host did not advertise this capability (ACP: never call what
    // was not advertised), so the adapter gets "method not found".
    reply.error(RpcError::method_not_found(method));
    return;
  }
  ask_host(method, params, [reply = std::move(reply)](acp::Connection::CallResult r) mutable {
    if (r) {
      reply.result(std::move(*r));
    } else {
      reply.error(r.error());
    }
  });
}

void Relay::ask_host(const std::string& method, json params, acp::Connection::CallHandler answered) {
  if (params.is_object() && params.contains("sessionId")) params["sessionId"] = session_id_;
  order_.then([&host = rt_.host, method, params = std::move(params), answered = std::move(answered)]() mutable {
    host.call(method, std::move(params), std::move(answered));
  });
}

}  // namespace harnessd::worker
