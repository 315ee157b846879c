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

#include "schema/json_parse.h"
#include "schema/session_update.h"
#include "worker/state_dir.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

RunRecording read_run_recording(int root, const std::string& run_id) {
  RunRecording rec;
  const std::string dir = Store::run_dir(run_id);
  auto read = [&](const std::string& name) -> std::string {
    auto text = read_beneath(root, dir + "/" + name, StateAccess::kReadOnly);
    return text ? *text : std::string();
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
  JsonlRead events = read_jsonl_beneath(root, dir + "/events.jsonl", StateAccess::kReadOnly);
  for (const auto& e : events.lines) {
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
  // The files of the run folder and their sizes.
  if (auto folder = open_beneath(root, dir, O_RDONLY | O_DIRECTORY, 0, StateAccess::kReadOnly)) {
    int fd = folder->get();
    std::vector<std::pair<std::string, long long>> found;
    if (DIR* d = ::fdopendir(folder->release())) {
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        struct stat st {};
        long long bytes = ::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_size : -1;
        found.emplace_back(name, bytes);
      }
      ::closedir(d);
    } else {
      ::close(fd);
    }
    std::sort(found.begin(), found.end());
    for (const auto& [name, bytes] : found) rec.files.push_back({{"name", name}, {"bytes", bytes}});
  }
  rec.prompt = read("prompt.md");
  return rec;
}

}  // namespace harnessd::worker
