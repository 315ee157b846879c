#include "worker/server_commands.h"

#include <csignal>
#include <cstdio>
#include <thread>

#include "acp/files.h"
#include "worker/inspect.h"
#include "worker/inspect_text.h"
#include "worker/server_client.h"
#include "worker/state_dir.h"
#include "worker/state_db.h"
#include "worker/wrapper.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

void complain(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "harnessd %s: %s\n", command.c_str(), message.c_str());
}

// The server's client, initialized; nullopt (said on stderr) when none
// listens or it refuses.
std::optional<ServerClient> open_client(const std::string& command, const std::string& socket) {
  auto fd = connect_server(socket);
  if (!fd) {
    complain(command, "no harnessd server listens on " + socket +
                          " (start one with 'harnessd serve --listen', or run with --shared)");
    return std::nullopt;
  }
  auto client = ServerClient::open(*fd);
  if (!client) {
    complain(command, client.error().message);
    return std::nullopt;
  }
  return std::move(*client);
}

bool looks_like(const std::string& target, const char* prefix) { return target.rfind(prefix, 0) == 0; }

// The exit code `harnessd run` gives a run that ended this way.
int exit_code_of(const json& run) {
  const std::string state = run.value("state", "");
  if (state == "completed") return run.value("stopReason", "") == "end_turn" ? run_exit::kDone : run_exit::kFailed;
  if (state == "timeout") return run_exit::kTimeout;
  if (state == "cancelled" || state == "interrupted") return run_exit::kInterrupted;
  return run_exit::kFailed;
}

// A session of the server by id, or the one open session with that name.
std::optional<json> find_session(ServerClient& c, const std::string& command, const std::string& target) {
  auto st = c.call("_harnessd/status", json::object());
  if (!st) {
    complain(command, st.error().message);
    return std::nullopt;
  }
  for (const json& s : (*st)["sessions"]) {
    if (s.value("sessionId", "") == target || (s["name"].is_string() && s["name"] == target)) return s;
  }
  complain(command, "the server has no open session with the id or name '" + target + "'");
  return std::nullopt;
}

std::string text_of(const json& update) {
  const json content = update.value("content", json::object());
  if (content.is_object() && content.value("type", "") == "text" && content.contains("text") &&
      content["text"].is_string()) {
    return content["text"].get<std::string>();
  }
  return "";
}

// One frame as `harnessd run` shows a turn: the agent's text as it comes,
// a line per tool call, and the user's prompts marked.
void print_frame(const json& update, bool& mid_line) {
  const std::string kind = update.value("sessionUpdate", "");
  std::string out;
  if (kind == "agent_message_chunk") {
    out = text_of(update);
    if (!out.empty()) mid_line = out.back() != '\n';
    acp::write_all(1, out);
    return;
  }
  if (kind == "user_message_chunk") {
    out = "> " + text_of(update) + "\n";
  } else if (kind == "tool_call") {
    out = "[tool] " + (update.contains("title") && update["title"].is_string() ? update["title"].get<std::string>()
                                                                              : update.value("toolCallId", "")) +
          "\n";
  } else {
    return;
  }
  if (mid_line) out = "\n" + out;
  mid_line = false;
  acp::write_all(1, out);
}

}  // namespace

int watch_command(const std::string& socket, const std::string& target, std::uint64_t from, const std::string& format) {
  auto c = open_client("watch", socket);
  if (!c) return 1;
  json params = {{"fromSeq", from}};
  params[looks_like(target, "sess_") ? "sessionId" : "name"] = target;
  bool mid_line = false;
  std::string session;
  auto show = [&](const json& m) {
    if (m.value("method", "") != "_harnessd/session_event") return false;
    const json& p = m["params"];
    if (p.value("closed", false)) {
      if (format == "json") print_line(json{{"version", 1}, {"sessionId", p["sessionId"]}, {"closed", true}}.dump());
      return true;
    }
    if (format == "json") {
      print_line(json{{"version", 1}, {"sessionId", p["sessionId"]}, {"seq", p["seq"]}, {"update", p["update"]}}.dump());
    } else {
      print_frame(p["update"], mid_line);
    }
    return false;
  };
  bool closed = false;
  auto started = c->call("_harnessd/sessions/watch", params, [&](const json& m) { closed = show(m) || closed; });
  if (!started) {
    complain("watch", started.error().message);
    return 1;
  }
  while (!closed) {
    auto m = c->next();
    if (!m) {
      if (mid_line) acp::write_all(1, "\n");
      complain("watch", "the server closed the connection");
      return 1;
    }
    closed = show(*m);
  }
  if (mid_line && format != "json") acp::write_all(1, "\n");
  return 0;
}

int wait_command(const std::optional<std::string>& socket, const std::string& state_dir, const std::string& run_id,
                 std::optional<double> timeout_s, const std::string& format) {
  auto report = [&](const json& run, bool pending) {
    if (format == "json") {
      json out = {{"version", 1}, {"run", run}};
      if (pending) out["pending"] = true;
      print_line(out.dump());
    } else {
      print_line(run_id + " " + (pending ? "still " + run.value("state", std::string("queued")) : run.value("state", "")) +
                 (run.contains("stopReason") ? " (" + run["stopReason"].get<std::string>() + ")" : ""));
    }
    return pending ? kWaitPending : exit_code_of(run);
  };
  std::optional<int> fd = socket ? connect_server(*socket) : std::nullopt;
  if (fd) {
    auto c = ServerClient::open(*fd);
    if (!c) {
      complain("wait", c.error().message);
      return 1;
    }
    json params = {{"runId", run_id}};
    if (timeout_s) params["timeoutMs"] = static_cast<long long>(*timeout_s * 1000);
    auto r = c->call("_harnessd/runs/wait", params);
    if (!r) {
      complain("wait", r.error().message);
      return r.error().code == rpc_code::kResourceNotFound ? run_exit::kUsage : 1;
    }
    return report((*r)["run"], r->value("pending", false));
  }
  // No server: the ledger says when the run ended, whoever runs it.
  const auto end = timeout_s ? std::optional(std::chrono::steady_clock::now() +
                                             std::chrono::milliseconds(static_cast<long long>(*timeout_s * 1000)))
                             : std::nullopt;
  for (;;) {
    std::optional<RunRecord> run;
    auto root = open_state_dir(state_dir, StateAccess::kReadOnly);
    if (root) {
      auto db = open_state_db(state_dir, root->get());
      if (!db) {
        complain("wait", db.error().message);
        return 1;
      }
      if (*db) {
        auto found = (*db)->find_run(run_id);
        if (found && *found) run = std::move(**found);
      }
    }
    if (!run) {
      complain("wait", "no run " + run_id + " in " + state_dir);
      return run_exit::kUsage;
    }
    if (run->ended()) return report(run->to_json(), false);
    if (end && std::chrono::steady_clock::now() >= *end) return report(run->to_json(), true);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int cancel_command(const std::string& socket, const std::string& target) {
  auto c = open_client("cancel", socket);
  if (!c) return 1;
  std::string run_id = target;
  if (!looks_like(target, "run_")) {
    auto s = find_session(*c, "cancel", target);
    if (!s) return 1;
    if (!(*s)["activeRunId"].is_string()) {
      print_line("session " + s->value("sessionId", "") + " has no running turn");
      return 0;
    }
    run_id = (*s)["activeRunId"].get<std::string>();
  }
  auto r = c->call("_harnessd/runs/cancel", {{"runId", run_id}});
  if (!r) {
    complain("cancel", r.error().message);
    return 1;
  }
  if (r->value("cancelled", false)) {
    print_line(run_id + " cancelled (it was " + r->value("was", "") + ")");
    return 0;
  }
  complain("cancel", run_id + " is not queued or running in the server (" + r->value("state", "") + ")");
  return 1;
}

int close_through_server(const std::string& socket, const std::string& target) {
  auto c = open_client("close", socket);
  if (!c) return 1;
  auto s = find_session(*c, "close", target);
  if (!s) return 1;
  const std::string id = s->value("sessionId", "");
  auto r = c->call("session/close", {{"sessionId", id}});
  if (!r) {
    complain("close", r.error().message);
    return 1;
  }
  print_line(id + " closed");
  return 0;
}

std::optional<json> server_status(const std::string& socket) {
  auto fd = connect_server(socket);
  if (!fd) return std::nullopt;
  auto c = ServerClient::open(*fd);
  if (!c) return std::nullopt;
  auto r = c->call("_harnessd/status", json::object());
  if (!r) return std::nullopt;
  return *r;
}

}  // namespace harnessd::worker
