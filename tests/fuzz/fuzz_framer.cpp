// fuzz_framer: the NDJSON LineSplitter fed the input in random-sized pieces,
// compared with a model that splits the whole input at once.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "acp/line_splitter.h"
#include "fuzz_support.h"

namespace {

using harnessd::acp::LineSplitter;
using harnessd::fuzz::fail;

struct Event {
  bool overlong = false;
  std::string text;  // the line, or the overlong line's prefix
  std::size_t size = 0;
};

// What the splitter must deliver for `data`: one event per LF-terminated
// piece (and the last piece, at finish), blank lines skipped.
std::vector<Event> model(std::string_view data, std::size_t max) {
  std::vector<Event> events;
  for (std::string_view raw : harnessd::fuzz::split_lines(data)) {
    if (raw.size() > max) {
      events.push_back({true, std::string(raw), raw.size()});
      continue;
    }
    std::string_view line = raw;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; })) continue;
    events.push_back({false, std::string(line), line.size()});
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider fdp(bytes, size);
  // Limits on both sides of the 4 KiB prefix kept for overlong lines.
  const std::size_t max = fdp.ConsumeIntegralInRange<std::size_t>(1, 3 * LineSplitter::kOverlongPrefix);
  const std::uint32_t seed = fdp.ConsumeIntegral<std::uint32_t>();
  const std::string data = fdp.ConsumeRemainingBytesAsString();

  std::vector<Event> got;
  LineSplitter splitter(
      max,
      [&](std::string_view line) {
        if (line.find('\n') != std::string_view::npos) fail("a delivered line holds an LF");
        if (line.size() > max) fail("a delivered line is longer than the limit");
        got.push_back({false, std::string(line), line.size()});
      },
      [&](std::string_view prefix, std::size_t full) {
        if (prefix.size() > LineSplitter::kOverlongPrefix) fail("an overlong line's prefix exceeds kOverlongPrefix");
        if (full <= max) fail("a line within the limit was reported overlong");
        got.push_back({true, std::string(prefix), full});
      });

  // Piece sizes from a small LCG, so the same input always splits the same way.
  std::uint32_t state = seed | 1;
  std::string_view rest = data;
  while (!rest.empty()) {
    state = state * 1664525u + 1013904223u;
    std::size_t piece = (state >> 8) % 4 == 0 ? (state >> 12) % 9000 : (state >> 12) % 64;
    piece = std::min(std::max<std::size_t>(piece, 1), rest.size());
    splitter.feed(rest.substr(0, piece));
    rest.remove_prefix(piece);
    if (splitter.buffered() > std::max(max, LineSplitter::kOverlongPrefix)) fail("the splitter buffers past its limit");
  }
  splitter.finish();
  if (splitter.buffered() != 0) fail("bytes left buffered after finish()");

  std::vector<Event> want = model(data, max);
  if (got.size() != want.size()) {
    fail("delivered " + std::to_string(got.size()) + " events, the model has " + std::to_string(want.size()));
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    const Event& g = got[i];
    const Event& w = want[i];
    if (g.overlong != w.overlong || g.size != w.size) fail("event " + std::to_string(i) + " differs from the model");
    if (g.overlong ? w.text.compare(0, g.text.size(), g.text) != 0 : g.text != w.text) {
      fail("event " + std::to_string(i) + " has other bytes than the model");
    }
  }
  return 0;
}
