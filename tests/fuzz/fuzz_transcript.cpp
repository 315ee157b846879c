// fuzz_transcript: a session's transcript and the run events it points at,
// as session/load expands them. The input is the transcript, a NUL byte,
// then the events.jsonl of run "run_fuzz" (the only run whose events
// exist; pointers at any other run find nothing).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "worker/transcript.h"

namespace {

using nlohmann::json;
using namespace harnessd;

constexpr const char* kSessionId = "sess_fuzz-1";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  std::size_t nul = input.find('\0');
  std::string_view transcript = input.substr(0, nul);
  std::optional<std::string> events;
  if (nul != std::string_view::npos) events = std::string(input.substr(nul + 1));

  std::size_t reads = 0;
  auto out = worker::transcript::expand(transcript, kSessionId, [&](const std::string& run) -> std::optional<std::string> {
    ++reads;
    if (run != "run_fuzz") return std::nullopt;
    return events;
  });

  // Every line replayed is one JSON object, on a line of its own; a frame
  // taken from the run's events is an update addressed to the session.
  std::size_t start = 0;
  while (start < out.lines.size()) {
    std::size_t end = out.lines.find('\n', start);
    if (end == std::string::npos) fuzz::fail("the expansion's last line has no newline");
    std::string_view line(out.lines.data() + start, end - start);
    start = end + 1;
    if (transcript.find(line) != std::string_view::npos) continue;  // the transcript's own frame
    if (!json::accept(line)) fuzz::fail("a replayed line is not JSON: " + std::string(line.substr(0, 200)));
    json frame = json::parse(line);
    if (!frame.is_object()) fuzz::fail("a replayed line is not an object");
    if (frame.value("method", "") != "session/update" || !frame["params"].is_object() ||
        frame["params"].value("sessionId", "") != kSessionId) {
      fuzz::fail("a frame taken from the run's events is not an update of the session: " +
                 std::string(line.substr(0, 200)));
    }
  }
  if (reads > 0 && out.missing == 0 && !events) fuzz::fail("a range of a run with no events was not counted missing");
  return 0;
}
