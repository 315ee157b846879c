// A session's recording (segments/<sessionId>.jsonl): every run of the
// session appends its frames, stderr, request, prompt and result there, so
// a prompt creates no file or folder. Each line belongs to one run:
//
//   {"run":"run_…","add":"stderr.log","text":"…"}   appended to a file of the run
//   {"run":"run_…","put":"result.json","text":"…"}  a file of the run, whole (the last one stands)
//   {"run":"run_…","tag":3}                         from here on, tag 3 stands for this run
//   [3,1796252104782,"a>",{…}]                      a frame of the run tagged 3: time, direction, message
//   [3,{"t":…,"cut":"…"}]                           any other line of its events.jsonl, whole
//
// Frames are most of a recording, so they are kept at about their own size:
// the run is a small tag (declared by the run's first frame, and standing
// until the tag is declared again), the direction a two-letter code ("h>"
// host>harnessd, ">a" harnessd>adapter, "a>" adapter>harnessd, ">h"
// harnessd>host). Reading a run rebuilds its events.jsonl byte for byte as
// {"t":…,"dir":"…","msg":…} lines (transcript pointers count bytes of it),
// and gives its files as a run folder held them, request.json being the
// run's first host>harnessd message (unless a line put one before it),
// indented as the file always was; `harnessd show RUN
// --export DIR` writes that folder. Lines {"run":"run_…","t":…,…} (an
// events line with the run in front, as an earlier harnessd wrote them)
// are read too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace harnessd::worker::segment {

/// The segment of session `session_id` (a safe id), relative to the state
/// directory.
std::string file_of(const std::string& session_id);

/// The line that makes `tag` stand for run `run_id` from here on.
std::string tag_line(std::string_view run_id, std::uint64_t tag);
/// Appends to `out` the segment line of one frame of the run tagged `tag`:
/// `msg` (JSON) passed in `direction` (one of the four) at `t`. Returns the
/// size of the events.jsonl line it reads back as,
/// {"t":…,"dir":"…","msg":…} and a newline. A direction without a code is
/// kept as a whole events line.
std::size_t append_frame(std::string& out, std::uint64_t tag, std::int64_t t, std::string_view direction,
                         std::string_view msg);
/// The segment line for one line of the run's events.jsonl, kept whole
/// (`event` is one JSON object and its newline).
std::string event_line(std::uint64_t tag, std::string_view event);
/// The segment line for `text` added to (`replace` false) or replacing
/// (`replace` true) file `name` of the run. Bytes that are not UTF-8 are
/// kept as U+FFFD.
std::string file_line(std::string_view run_id, std::string_view name, std::string_view text, bool replace);

/// One run's files as a folder would hold them, by name. A run with any
/// line has "events.jsonl" and "stderr.log", empty if nothing was said.
struct Run {
  std::map<std::string, std::string> files;
  std::size_t cut = 0;  // lines of the run a crash cut short or garbled
};

/// Run `run_id` of `segment` (the whole file).
Run read(std::string_view segment, std::string_view run_id);
/// Every run of `segment`, by run id; `cut` counts the lines that belong to
/// no run (cut before the run was named).
std::map<std::string, Run> read_all(std::string_view segment, std::size_t* cut = nullptr);
/// Calls `fn(line, run)` for each line of `segment` in order: `line` with
/// its newline (a last line a crash cut short has none), `run` the run it
/// belongs to, or empty (a garbled line, a frame whose tag was never
/// declared, a cut last line).
void each_line(std::string_view segment, const std::function<void(std::string_view line, std::string_view run)>& fn);

}  // namespace harnessd::worker::segment
