// Transcript pointers into a run's events, and their expansion for a replay.
#include "worker/transcript.h"

#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/files.h"
#include "acp/json_write.h"
#include "acp/utf8.h"
#include "schema/frame_edit.h"
#include "schema/json_parse.h"

namespace harnessd::worker::transcript {

using nlohmann::json;

namespace {

struct Item {
  std::string_view line;       // a frame, when run is empty
  std::string run;             // a pointer: its run
  std::optional<std::uint64_t> from, to;
};

// The transcript's lines, each a frame or a pointer; lines cut by a crash
// are counted and left out.
std::vector<Item> read_items(std::string_view transcript, std::size_t& cut) {
  std::vector<Item> items;
  std::size_t start = 0;
  while (start < transcript.size()) {
    std::size_t end = transcript.find('\n', start);
    if (end == std::string_view::npos) end = transcript.size();
    std::string_view line = transcript.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    auto parsed = schema::parse_json(line);
    if (!parsed || !parsed->is_object()) {
      ++cut;
      continue;
    }
    auto run = parsed->find("events");
    if (run == parsed->end() || parsed->contains("jsonrpc")) {
      items.push_back({line, {}, {}, {}});
      continue;
    }
    Item item;
    if (run->is_string()) item.run = run->get<std::string>();
    for (const char* key : {"from", "to"}) {
      auto at = parsed->find(key);
      if (at != parsed->end() && at->is_number_unsigned()) {
        (std::string_view(key) == "from" ? item.from : item.to) = at->get<std::uint64_t>();
      }
    }
    if (item.run.empty() || !acp::is_safe_id(item.run)) {
      ++cut;  // not a pointer we wrote
      continue;
    }
    items.push_back(std::move(item));
  }
  return items;
}

// The host's line (newline included) for one events.jsonl line of the
// range, if it is an update the adapter sent.
std::optional<std::string> host_line(std::string_view event, const std::string& quoted_id, bool& cut) {
  auto parsed = schema::parse_json(event);
  if (!parsed || !parsed->is_object()) {
    cut = true;
    return std::nullopt;
  }
  const json& e = *parsed;
  auto dir = e.find("dir");
  auto msg = e.find("msg");
  if (dir == e.end() || *dir != "adapter>harnessd" || msg == e.end() || !msg->is_object()) return std::nullopt;
  // value(key, json()) never throws on a member of another type; the
  // events file is read back from disk and may hold anything.
  if (msg->value("method", json()) != "session/update" || msg->contains("id")) return std::nullopt;
  auto params = msg->find("params");
  if (params == msg->end() || !params->is_object() || !params->contains("sessionId")) return std::nullopt;
  // The frame's own bytes, as the recorder wrote them after "msg":, with
  // the id replaced; else its parse, re-addressed.
  static constexpr std::string_view kMsg = "\"msg\":";
  std::size_t at = event.find(kMsg);
  if (at != std::string_view::npos && event.size() >= at + kMsg.size() + 1 && event.back() == '}') {
    std::string_view frame = event.substr(at + kMsg.size(), event.size() - at - kMsg.size() - 1);
    if (auto span = schema::session_id_span(frame)) return schema::readdress(frame, *span, quoted_id);
  }
  json out = *msg;
  out["params"]["sessionId"] = json::parse(quoted_id);
  return acp::json_text(out) + "\n";
}

}  // namespace

namespace {
// {"events":RUN,"KEY":N}: written once per relayed update, so as text.
std::string pointer_line(const std::string& run_id, std::string_view key, std::uint64_t n) {
  std::string out;
  out.reserve(run_id.size() + 48);
  out += "{\"events\":";
  acp::utf8::append_json_string(out, run_id);
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(n);
  out += "}\n";
  return out;
}
}  // namespace

std::string from_line(const std::string& run_id, std::uint64_t from) { return pointer_line(run_id, "from", from); }

std::string to_line(const std::string& run_id, std::uint64_t to) { return pointer_line(run_id, "to", to); }

Expanded expand(std::string_view transcript, const std::string& session_id,
                const std::function<std::optional<std::string>(const std::string& run_id)>& events_of) {
  Expanded out;
  const std::vector<Item> items = read_items(transcript, out.cut);
  const std::string quoted_id = json(session_id).dump();
  std::string events_run;  // the run whose events are read (one at a time)
  std::optional<std::string> events;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Item& item = items[i];
    if (item.run.empty()) {
      out.lines.append(item.line);
      out.lines += '\n';
      continue;
    }
    if (!item.from) continue;  // a range's end
    // The range ends at the run's next pointer, else with its events.
    std::optional<std::uint64_t> end;
    for (std::size_t j = i + 1; j < items.size() && !end; ++j) {
      if (items[j].run == item.run) end = items[j].to ? items[j].to : items[j].from;
    }
    if (events_run != item.run) {
      events_run = item.run;
      events = events_of(item.run);
    }
    if (!events) {
      ++out.missing;
      continue;
    }
    std::size_t start = *item.from, stop = end ? *end : events->size();
    if (stop > events->size()) stop = events->size();
    while (start < stop) {
      std::size_t nl = events->find('\n', start);
      // A line with no newline was cut by a crash, unless it ends the file
      // exactly where the range ends.
      if (nl == std::string::npos || nl >= stop) {
        if (nl == std::string::npos) ++out.cut;
        break;
      }
      bool bad = false;
      if (auto line = host_line(std::string_view(*events).substr(start, nl - start), quoted_id, bad)) {
        out.lines += *line;
      }
      out.cut += bad;
      start = nl + 1;
    }
  }
  return out;
}

}  // namespace harnessd::worker::transcript
