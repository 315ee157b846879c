// Files are opened beneath the state directory like everything else, so a
// link planted in a run's folder is refused, not followed.
#include "worker/run_recording.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "acp/files.h"
#include "schema/json_parse.h"
#include "schema/session_update.h"
#include "worker/state_dir.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// The regular files of `rel` and its folders, by path below it.
void read_folder(int root, const std::string& rel, const std::string& below, std::map<std::string, std::string>& out,
                 int depth) {
  auto folder = open_beneath(root, rel, O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly);
  if (!folder || depth > 4) return;
  std::vector<std::pair<std::string, bool>> found;
  int fd = folder->get();
  if (DIR* d = ::fdopendir(folder->release())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st {};
      if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) found.emplace_back(name, S_ISDIR(st.st_mode));
    }
    ::closedir(d);
  } else {
    ::close(fd);
  }
  for (const auto& [name, is_dir] : found) {
    if (is_dir) {
      read_folder(root, rel + "/" + name, below + name + "/", out, depth + 1);
    } else if (auto text = read_beneath(root, rel + "/" + name, StateAccess::kReadOnly)) {
      out[below + name] = std::move(*text);
    }
  }
}

}  // namespace

segment::Run read_run_files(int root, const std::string& run_id, const std::string& session_id) {
  segment::Run run;
  if (!acp::is_safe_id(run_id)) return run;
  read_folder(root, Store::run_dir(run_id), "", run.files, 0);
  if (!acp::is_safe_id(session_id)) return run;
  auto text = read_beneath(root, segment::file_of(session_id), StateAccess::kReadOnly);
  if (!text) return run;
  segment::Run recorded = segment::read(*text, run_id);
  for (auto& [name, bytes] : recorded.files) run.files[name] = std::move(bytes);
  run.cut = recorded.cut;
  return run;
}

std::string recording_of(int root, const std::string& run_id, const std::string& session_id) {
  struct stat st {};
  const std::string old_events = Store::run_dir(run_id) + "/events.jsonl";
  if (!acp::is_safe_id(session_id) ||
      (acp::is_safe_id(run_id) && ::fstatat(root, old_events.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)) {
    return Store::run_dir(run_id);
  }
  return segment::file_of(session_id);
}

RunRecording read_run_recording(int root, const std::string& run_id, const std::string& session_id) {
  RunRecording rec;
  const segment::Run run = read_run_files(root, run_id, session_id);
  auto read = [&](const std::string& name) -> std::string {
    auto it = run.files.find(name);
    return it == run.files.end() ? std::string() : it->second;
  };
  rec.result = schema::parse_or_discard(read("result.json"));
  if (!rec.result.is_object()) rec.result = json::object();

  json& tools = rec.tool_calls;
  std::map<std::string, std::size_t> tool_at;
  std::map<std::string, long long> tool_start;
  auto take = [&](const json& u, long long t) {
    const json kind = u.value("sessionUpdate", json());
    const std::string id = u.value("toolCallId", json("")).is_string() ? u.value("toolCallId", "") : "";
    if (kind == "tool_call" && !id.empty()) {
      tool_at[id] = tools.size();
      tool_start[id] = t;
      tools.push_back({{"toolCallId", id},
                       {"title", u.value("title", json(id))},
                       {"kind", u.value("kind", json())},
                       {"status", u.value("status", json("pending"))},
                       {"durationMs", nullptr}});
    } else if (kind == "tool_call_update" && tool_at.count(id)) {
      json& call = tools[tool_at[id]];
      if (u.contains("title") && u["title"].is_string()) call["title"] = u["title"];
      if (u.contains("status") && u["status"].is_string()) {
        call["status"] = u["status"];
        if ((u["status"] == "completed" || u["status"] == "failed") && t >= tool_start[id]) {
          call["durationMs"] = t - tool_start[id];
        }
      }
    } else if (kind == "agent_message_chunk" && u.contains("content") && u["content"].is_object() &&
               u["content"].value("type", json()) == "text" && u["content"].contains("text") &&
               u["content"]["text"].is_string()) {
      rec.answer += u["content"]["text"].get<std::string>();
    } else if (kind == "usage_update") {
      rec.usage = u;
      rec.usage.erase("sessionUpdate");
    }
  };
  // The update a frame carries, or null.
  auto update_of = [](const json& e) -> const json* {
    if (!e.contains("msg") || !e["msg"].is_object()) return nullptr;
    const json& msg = e["msg"];
    if (msg.value("method", json()) != "session/update" || !msg.contains("params") || !msg["params"].is_object()) {
      return nullptr;
    }
    auto u = msg["params"].find("update");
    return u != msg["params"].end() && u->is_object() ? &*u : nullptr;
  };
  // An update the host got as the adapter sent it is recorded once, as the
  // adapter's frame; one harnessd rewrote (a long chunk split, a list of
  // options completed) is followed by what the host got instead. So an
  // adapter's update counts unless harnessd>host updates of its kind follow
  // it, or harnessd dropped it as malformed.
  const json* held = nullptr;
  long long held_t = 0;
  std::vector<json> events;
  {
    const std::string text = read("events.jsonl");
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) break;  // cut by a crash
      if (auto e = schema::parse_json(std::string_view(text).substr(start, end - start))) events.push_back(std::move(*e));
      start = end + 1;
    }
  }
  for (const auto& e : events) {
    if (!e.is_object()) continue;
    const json dir_of = e.value("dir", json());
    const long long t = e.value("t", json(0)).is_number_integer() ? e["t"].get<long long>() : 0;
    const json* u = update_of(e);
    if (dir_of == "harnessd>host" && u) {
      // Of the same kind: the held update rewritten, these lines are what
      // the host got. Another kind is harnessd's own (its options).
      if (held && held->value("sessionUpdate", json()) == u->value("sessionUpdate", json())) held = nullptr;
      take(*u, t);
      continue;
    }
    if (held) take(*held, held_t);
    held = nullptr;
    if (dir_of == "adapter>harnessd" && u) {
      const std::string kind = u->value("sessionUpdate", json("")).is_string() ? u->value("sessionUpdate", "") : "";
      if (schema::is_known_update_kind(kind) && !schema::check_session_update(*u)) {
        held = u;
        held_t = t;
      }
    }
  }
  if (held) take(*held, held_t);
  for (const auto& [name, bytes] : run.files) {
    rec.files.push_back({{"name", name}, {"bytes", static_cast<long long>(bytes.size())}});
  }
  rec.prompt = read("prompt.md");
  return rec;
}

}  // namespace harnessd::worker
