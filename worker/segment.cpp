// Segment lines: written by byte edits (an events line is not parsed
// again), read back with a parse only for the file pieces.
#include "worker/segment.h"

#include "acp/utf8.h"

#include <unordered_map>

#include <nlohmann/json.hpp>

#include "acp/json_write.h"
#include "schema/json_parse.h"

namespace harnessd::worker::segment {

using nlohmann::json;

namespace {

constexpr std::string_view kRunPrefix = "{\"run\":\"";
constexpr std::string_view kTagKey = ",\"tag\":";

struct Direction {
  std::string_view code, name;
};
constexpr Direction kDirections[] = {
    {"h>", "host>harnessd"}, {">a", "harnessd>adapter"}, {"a>", "adapter>harnessd"}, {">h", "harnessd>host"}};

std::string quoted(std::string_view text) {
  std::string out;
  acp::utf8::append_json_string(out, text);
  return out;
}

// Takes the decimal number at the front of `text` (a minus first when
// `sign`); false when there is none or it does not fit.
template <class Int>
bool take_number(std::string_view& text, Int& value, bool sign) {
  bool minus = sign && !text.empty() && text.front() == '-';
  if (minus) text.remove_prefix(1);
  std::size_t n = 0;
  std::uint64_t v = 0;
  while (n < text.size() && text[n] >= '0' && text[n] <= '9') {
    if (n == 18) return false;
    v = v * 10 + static_cast<std::uint64_t>(text[n] - '0');
    ++n;
  }
  if (n == 0) return false;
  text.remove_prefix(n);
  value = minus ? -static_cast<Int>(v) : static_cast<Int>(v);
  return true;
}

enum class Kind {
  kNone,    // belongs to no run
  kObject,  // {"run":"<id>",…}: `rest` is what follows the id's quote
  kTag,     // {"run":"<id>","tag":N}
  kTagged,  // [N,…]: `rest` is what follows the tag's comma, without the `]`
};

// Walks the lines of `segment`, keeping track of what each tag stands for,
// and calls fn(line, whole, run, kind, rest) for each (`line` without its
// newline; `whole` false for a last line without one).
template <class Fn>
void walk(std::string_view segment, Fn&& fn) {
  std::unordered_map<std::uint64_t, std::string_view> tags;
  std::size_t start = 0;
  while (start < segment.size()) {
    std::size_t end = segment.find('\n', start);
    const bool whole = end != std::string_view::npos;
    if (!whole) end = segment.size();
    std::string_view line = segment.substr(start, end - start);
    start = end + 1;
    if (!whole) {
      // A crash cut it short.
      fn(line, false, std::string_view{}, Kind::kNone, std::string_view{});
      break;
    }
    if (line.empty()) {
      fn(line, true, std::string_view{}, Kind::kNone, std::string_view{});
      continue;
    }
    if (line.rfind(kRunPrefix, 0) == 0) {
      std::size_t quote = line.find('"', kRunPrefix.size());
      if (quote != std::string_view::npos && quote > kRunPrefix.size()) {
        std::string_view id = line.substr(kRunPrefix.size(), quote - kRunPrefix.size());
        std::string_view rest = line.substr(quote + 1);
        std::uint64_t tag = 0;
        if (rest.rfind(kTagKey, 0) == 0) {
          std::string_view number = rest.substr(kTagKey.size());
          if (take_number(number, tag, false) && number == "}") {
            tags[tag] = id;
            fn(line, true, id, Kind::kTag, rest);
            continue;
          }
        }
        fn(line, true, id, Kind::kObject, rest);
        continue;
      }
    } else if (line.size() > 2 && line.front() == '[' && line.back() == ']') {
      std::string_view rest = line.substr(1, line.size() - 2);
      std::uint64_t tag = 0;
      if (take_number(rest, tag, false) && !rest.empty() && rest.front() == ',') {
        if (auto found = tags.find(tag); found != tags.end()) {
          fn(line, true, found->second, Kind::kTagged, rest.substr(1));
          continue;
        }
      }
    }
    fn(line, true, std::string_view{}, Kind::kNone, std::string_view{});
  }
}

// Rebuilds the events.jsonl line of a tagged line; false when garbled.
// `code` and `msg` are set for a frame.
bool expand(std::string_view rest, std::string& events, std::string_view& code, std::string_view& msg) {
  if (!rest.empty() && rest.front() == '{') {
    if (rest.back() != '}') return false;
    events.append(rest);
    events += '\n';
    return true;
  }
  std::string_view at = rest;
  std::int64_t t = 0;
  if (!take_number(at, t, true) || at.size() < 7 || at.substr(0, 2) != ",\"" || at.substr(4, 2) != "\",") return false;
  std::string_view time = rest.substr(0, rest.size() - at.size());
  code = at.substr(2, 2);
  msg = at.substr(6);
  if (msg.empty()) return false;
  for (const auto& d : kDirections) {
    if (d.code != code) continue;
    events += "{\"t\":";
    events.append(time);
    events += ",\"dir\":\"";
    events.append(d.name);
    events += "\",\"msg\":";
    events.append(msg);
    events += "}\n";
    return true;
  }
  return false;
}

// Adds one line of its run to `run`.
void take(Run& run, Kind kind, std::string_view line, std::string_view rest) {
  if (kind == Kind::kTag) return;
  if (kind == Kind::kTagged) {
    std::string_view code, msg;
    if (!expand(rest, run.files["events.jsonl"], code, msg)) {
      ++run.cut;
      return;
    }
    // The run's first request from the host is its request.json, unless
    // the run wrote one of its own (before it, as earlier harnessd did).
    if (code == "h>" && !run.files.contains("request.json")) {
      if (auto request = schema::parse_json(msg)) run.files["request.json"] = acp::json_text(*request, 2) + "\n";
    }
    return;
  }
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
    // A run's events are rebuilt from its event lines alone; harnessd never
    // writes them as a file piece, so a line that does is garbled.
    if (!name.is_string() || name.get_ref<const std::string&>() == "events.jsonl" || text == parsed->end() ||
        !text->is_string()) {
      ++run.cut;
      return;
    }
    std::string& file = run.files[name.get<std::string>()];
    if (put) file.clear();
    file += text->get<std::string>();
    return;
  }
  // An events line with the run in front, as an earlier harnessd wrote it.
  std::string& events = run.files["events.jsonl"];
  events += '{';
  events.append(rest);
  events += '\n';
}

void settle(Run& run) {
  run.files.try_emplace("events.jsonl");
  run.files.try_emplace("stderr.log");
}

}  // namespace

std::string file_of(const std::string& session_id) {
  constexpr std::string_view kDir = "segments/", kExt = ".jsonl";
  std::string out;
  out.reserve(kDir.size() + session_id.size() + kExt.size());
  out += kDir;
  out += session_id;
  out += kExt;
  return out;
}

std::string tag_line(std::string_view run_id, std::uint64_t tag) {
  std::string out;
  out.reserve(kRunPrefix.size() + run_id.size() + kTagKey.size() + 24);
  out += kRunPrefix;
  out += run_id;
  out += '"';
  out += kTagKey;
  out += std::to_string(tag);
  out += "}\n";
  return out;
}

std::size_t append_frame(std::string& out, std::uint64_t tag, std::int64_t t, std::string_view direction,
                         std::string_view msg) {
  const std::string time = std::to_string(t);
  for (const auto& d : kDirections) {
    if (d.name != direction) continue;
    out.reserve(out.size() + msg.size() + time.size() + 32);  // one allocation, not one per doubling
    out += '[';
    out += std::to_string(tag);
    out += ',';
    out += time;
    out += ",\"";
    out += d.code;
    out += "\",";
    out.append(msg);
    out += "]\n";
    return 5 + time.size() + 8 + d.name.size() + 8 + msg.size() + 2;
  }
  std::string event = "{\"t\":" + time + ",\"dir\":" + quoted(direction) + ",\"msg\":";
  event.append(msg);
  event += "}\n";
  out += event_line(tag, event);
  return event.size();
}

std::string event_line(std::uint64_t tag, std::string_view event) {
  std::string out;
  out.reserve(event.size() + 24);
  out += '[';
  out += std::to_string(tag);
  out += ',';
  if (event.size() > 2 && event[0] == '{') {
    out.append(event);
    while (!out.empty() && out.back() == '\n') out.pop_back();
  } else {
    out += "{}";  // nothing to keep
  }
  out += "]\n";
  return out;
}

std::string file_line(std::string_view run_id, std::string_view name, std::string_view text, bool replace) {
  std::string out;
  out.reserve(kRunPrefix.size() + run_id.size() + name.size() + text.size() + 32);
  out += kRunPrefix;
  out += run_id;
  out += replace ? "\",\"put\":" : "\",\"add\":";
  acp::utf8::append_json_string(out, name);
  out += ",\"text\":";
  acp::utf8::append_json_string(out, text);
  out += "}\n";
  return out;
}

void each_line(std::string_view segment, const std::function<void(std::string_view line, std::string_view run)>& fn) {
  walk(segment, [&](std::string_view line, bool whole, std::string_view run, Kind, std::string_view) {
    fn(std::string_view(line.data(), line.size() + (whole ? 1 : 0)), run);
  });
}

Run read(std::string_view segment, std::string_view run_id) {
  Run run;
  bool seen = false;
  walk(segment, [&](std::string_view line, bool, std::string_view id, Kind kind, std::string_view rest) {
    if (id != run_id || kind == Kind::kNone) return;
    seen = true;
    take(run, kind, line, rest);
  });
  if (seen) settle(run);
  return run;
}

std::map<std::string, Run> read_all(std::string_view segment, std::size_t* cut) {
  std::map<std::string, Run> runs;
  walk(segment, [&](std::string_view line, bool, std::string_view id, Kind kind, std::string_view rest) {
    if (kind == Kind::kNone) {
      if (cut && !line.empty()) ++*cut;
      return;
    }
    take(runs[std::string(id)], kind, line, rest);
  });
  for (auto& [id, run] : runs) settle(run);
  return runs;
}

}  // namespace harnessd::worker::segment
