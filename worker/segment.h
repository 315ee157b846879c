// A session's recording (segments/<sessionId>.jsonl): every run of the
// session appends its frames, stderr, request, prompt and result there, so
// a prompt creates no file or folder. Each line belongs to one run and says
// so first:
//
//   {"run":"run_…","t":…,"dir":"adapter>harnessd","msg":{…}}   a line of the run's events.jsonl
//   {"run":"run_…","add":"stderr.log","text":"…"}             appended to a file of the run
//   {"run":"run_…","put":"result.json","text":"…"}            a file of the run, whole (the last one stands)
//
// An events line is the run's events.jsonl line with the run put in front,
// so the run's events read back byte for byte (transcript pointers count
// bytes of them). Reading a run gives its files as a run folder held them;
// `harnessd show RUN --export DIR` writes that folder.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace harnessd::worker::segment {

/// The segment of session `session_id` (a safe id), relative to the state
/// directory.
std::string file_of(const std::string& session_id);

/// The segment line for one line of the run's events.jsonl (`event` is one
/// JSON object and its newline).
std::string event_line(std::string_view run_id, std::string_view event);
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
/// The run a segment line belongs to, or empty.
std::string_view run_of(std::string_view line);

}  // namespace harnessd::worker::segment
