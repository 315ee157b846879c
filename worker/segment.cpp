// Segment lines: written by byte edits (an events line is not parsed
// again), read back with a parse only for the file pieces.
#include "worker/segment.h"

#include <nlohmann/json.hpp>

#include "schema/json_parse.h"

namespace harnessd::worker::segment {

using nlohmann::json;

namespace {

constexpr std::string_view kRunPrefix = "{\"run\":\"";

std::string quoted(std::string_view text) {
  return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Adds one segment line of its run to `run`.
void take(Run& run, std::string_view line, std::size_t after_id) {
  std::string_view rest = line.substr(after_id);  // after `{"run":"<id>"`
  if (rest.size() < 2 || rest[0] != ',') {
    ++run.cut;
    return;
  }
  rest.remove_prefix(1);
  const bool put = rest.rfind("\"put\":", 0) == 0;
  if (put || rest.rfind("\"add\":", 0) == 0) {
    auto parsed = schema::parse_json(line);
    if (!parsed || !parsed->is_object()) {
      ++run.cut;
      return;
    }
    const json& name = (*parsed)[put ? "put" : "add"];
    auto text = parsed->find("text");
    if (!name.is_string() || text == parsed->end() || !text->is_string()) {
      ++run.cut;
      return;
    }
    std::string& file = run.files[name.get<std::string>()];
    if (put) file.clear();
    file += text->get<std::string>();
    return;
  }
  std::string& events = run.files["events.jsonl"];
  events += '{';
  events.append(rest);
  events += '\n';
}

template <class Fn>
void each_line(std::string_view segment, std::size_t* cut, Fn&& fn) {
  std::size_t start = 0;
  while (start < segment.size()) {
    std::size_t end = segment.find('\n', start);
    if (end == std::string_view::npos) {
      // A last line without its newline was cut by a crash.
      if (cut) ++*cut;
      break;
    }
    std::string_view line = segment.substr(start, end - start);
    start = end + 1;
    if (!line.empty()) fn(line);
  }
}

void settle(Run& run) {
  run.files.try_emplace("events.jsonl");
  run.files.try_emplace("stderr.log");
}

}  // namespace

std::string file_of(const std::string& session_id) { return "segments/" + session_id + ".jsonl"; }

std::string event_line(std::string_view run_id, std::string_view event) {
  std::string out;
  out.reserve(kRunPrefix.size() + run_id.size() + event.size() + 2);
  out += kRunPrefix;
  out += run_id;
  out += '"';
  if (event.size() > 2 && event[0] == '{' && event[1] != '}') {
    out += ',';
    out.append(event.substr(1));
  } else {
    out += "}\n";  // nothing to keep
  }
  if (out.back() != '\n') out += '\n';
  return out;
}

std::string file_line(std::string_view run_id, std::string_view name, std::string_view text, bool replace) {
  std::string out;
  out.reserve(kRunPrefix.size() + run_id.size() + name.size() + text.size() + 32);
  out += kRunPrefix;
  out += run_id;
  out += replace ? "\",\"put\":" : "\",\"add\":";
  out += quoted(name);
  out += ",\"text\":";
  out += quoted(text);
  out += "}\n";
  return out;
}

std::string_view run_of(std::string_view line) {
  if (line.rfind(kRunPrefix, 0) != 0) return {};
  std::size_t end = line.find('"', kRunPrefix.size());
  if (end == std::string_view::npos) return {};
  return line.substr(kRunPrefix.size(), end - kRunPrefix.size());
}

Run read(std::string_view segment, std::string_view run_id) {
  Run run;
  bool seen = false;
  each_line(segment, nullptr, [&](std::string_view line) {
    if (run_of(line) != run_id) return;
    seen = true;
    take(run, line, kRunPrefix.size() + run_id.size() + 1);
  });
  if (seen) settle(run);
  return run;
}

std::map<std::string, Run> read_all(std::string_view segment, std::size_t* cut) {
  std::map<std::string, Run> runs;
  each_line(segment, cut, [&](std::string_view line) {
    std::string_view id = run_of(line);
    if (id.empty()) {
      if (cut) ++*cut;
      return;
    }
    take(runs[std::string(id)], line, kRunPrefix.size() + id.size() + 1);
  });
  for (auto& [id, run] : runs) settle(run);
  return runs;
}

}  // namespace harnessd::worker::segment
