// A session's transcript (sessions/<id>.jsonl): every frame its host got,
// in order, which session/load replays. An update the host got exactly as
// the adapter sent it, with only the session id changed, is already in the
// run's events.jsonl; the transcript points there instead of holding it a
// second time. A pointer line names the run and where its range starts
// (`from`) or ends (`to`) in bytes of that file:
//
//   {"events":"run_…","from":1234}
//   {"events":"run_…","to":5678}
//
// The range holds every adapter>harnessd session/update of the file from
// `from` up to the run's next pointer line, or to the end of the file. A
// range is closed (with `to`) before anything else the relay handled goes
// into the transcript, so the replay keeps the host's order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace harnessd::worker::transcript {

std::string from_line(const std::string& run_id, std::uint64_t from);
std::string to_line(const std::string& run_id, std::uint64_t to);

struct Expanded {
  std::string lines;          // the host's frames, one per line
  std::size_t cut = 0;        // lines a crash cut (of the transcript or of a run's events)
  std::size_t missing = 0;    // ranges whose run's events are no longer kept
};

/// The transcript as the host got it, pointers replaced by the frames they
/// point at, re-addressed to `session_id`. `events_of(run_id)` reads a
/// run's events.jsonl (nothing when it is not there).
Expanded expand(std::string_view transcript, const std::string& session_id,
                const std::function<std::optional<std::string>(const std::string& run_id)>& events_of);

}  // namespace harnessd::worker::transcript
