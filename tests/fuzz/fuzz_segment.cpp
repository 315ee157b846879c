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
#include "schema/json_parse.h"
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
  // Written, then read back among the input's own lines. The tag is one
  // the input may use as well: the declaration makes it this run's.
  std::string segment(input);
  if (!segment.empty() && segment.back() != '\n') segment += '\n';
  segment += worker::segment::file_line("run_written", "stderr.log", input, false);
  segment += worker::segment::tag_line("run_written", 1);
  std::string expected = "{\"t\":1,\"dir\":\"adapter>harnessd\"}\n";
  segment += worker::segment::event_line(1, expected);
  std::string frame = "{\"jsonrpc\":\"2.0\",\"method\":\"session/update\"}";
  if (!input.empty() && input.find('\n') == std::string_view::npos && is_utf8(input) &&
      schema::accept_json(input)) {
    frame = std::string(input);
  }
  const std::size_t said = worker::segment::append_frame(segment, 1, -7, "harnessd>host", frame);
  std::string framed = "{\"t\":-7,\"dir\":\"harnessd>host\",\"msg\":" + frame + "}\n";
  if (said != framed.size()) fuzz::fail("append_frame miscounted the events line it reads back as");
  expected += framed;
  segment += worker::segment::file_line("run_written", "result.json", input, true);
  if (input.find("run_written") != std::string_view::npos) return 0;  // the input wrote some of it
  auto back = worker::segment::read(segment, "run_written");
  if (back.files["events.jsonl"] != expected) fuzz::fail("events lines did not read back as written");
  std::string kept;
  worker::segment::each_line(segment, [&](std::string_view line, std::string_view) { kept.append(line); });
  if (kept != segment) fuzz::fail("each_line lost bytes");
  if (is_utf8(input)) {
    if (back.files["stderr.log"] != input) fuzz::fail("a stderr piece did not read back as written");
    if (back.files["result.json"] != input) fuzz::fail("a whole file did not read back as written");
  }
  return 0;
}
