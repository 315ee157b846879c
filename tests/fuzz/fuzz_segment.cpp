// fuzz_segment: a session's segment (segments/<sessionId>.jsonl) as it may
// be found on disk, cut by a crash or garbled, read back into runs' files.
// Reading one run agrees with reading them all; a rebuilt events.jsonl is
// whole lines of objects; and text written as a file piece reads back as
// it was when it is UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "worker/segment.h"

namespace {

using nlohmann::json;
using namespace harnessd;

bool is_utf8(std::string_view text) {
  try {
    (void)json(std::string(text)).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  std::size_t cut = 0;
  auto all = worker::segment::read_all(input, &cut);
  for (const auto& [id, run] : all) {
    if (id.empty()) fuzz::fail("a run without an id");
    if (worker::segment::read(input, id).files != run.files) fuzz::fail("reading run " + id + " alone differs");
    const std::string& events = run.files.at("events.jsonl");
    if (!events.empty() && (events.front() != '{' || events.back() != '\n')) {
      fuzz::fail("a rebuilt events.jsonl is not whole lines of objects");
    }
  }
  // Written, then read back among the input's own lines.
  std::string segment(input);
  if (!segment.empty() && segment.back() != '\n') segment += '\n';
  segment += worker::segment::file_line("run_written", "stderr.log", input, false);
  segment += worker::segment::event_line("run_written", "{\"t\":1,\"dir\":\"adapter>harnessd\"}\n");
  segment += worker::segment::file_line("run_written", "result.json", input, true);
  if (input.find("run_written") != std::string_view::npos) return 0;  // the input wrote some of it
  auto back = worker::segment::read(segment, "run_written");
  if (back.files["events.jsonl"] != "{\"t\":1,\"dir\":\"adapter>harnessd\"}\n") {
    fuzz::fail("an events line did not read back as written");
  }
  if (is_utf8(input)) {
    if (back.files["stderr.log"] != input) fuzz::fail("a stderr piece did not read back as written");
    if (back.files["result.json"] != input) fuzz::fail("a whole file did not read back as written");
  }
  return 0;
}
