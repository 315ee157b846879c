// fuzz_template: Template::parse and render. The input is the template's
// text, then a NUL byte, then the data as JSON (when it is JSON; otherwise
// the data of a typical packaged prompt).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "harnesses/template.h"
#include "schema/json_parse.h"

namespace {

using nlohmann::json;

std::size_t count_chars(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

const json& typical_data() {
  static const json data = {
      {"task", "Fix the failing test in src/a.cpp."},
      {"background", "The build broke yesterday."},
      {"constraints", {"keep the API", "no new dependencies"}},
      {"acceptance", {"ctest passes"}},
      {"references", {{{"path", "/src/a.cpp"}, {"content", std::string(3000, 'x')}}, {{"uri", "https://e.x/b"}, {"title", "b"}}}},
      {"history", {{{"task", "first"}, {"answer", "one"}}, {{"task", "second"}, {"answer", std::string(5000, 'y')}}}},
      {"summary", "two turns so far"},
      {"workspace", "/src"},
      {"harness", "fake"},
      {"session", "s"},
      {"vars", {{"team", "core"}, {"list", {1, "two", nullptr, true}}}},
  };
  return data;
}

void render_checked(const harnessd::harnesses::Template& t, const json& data) {
  std::string once = t.render(data);
  if (t.render(data) != once) harnessd::fuzz::fail("rendering the same data twice gave different text");
  // The hard cut keeps the text within the budget once the marker fits.
  if (t.budget() >= 200 && count_chars(once) > t.budget()) {
    harnessd::fuzz::fail("the text has " + std::to_string(count_chars(once)) + " characters, over the budget of " +
                         std::to_string(t.budget()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(bytes), size);
  std::size_t nul = input.find('\0');
  std::string text(input.substr(0, nul));
  auto parsed = harnessd::harnesses::Template::parse(text, "fuzz");
  if (!parsed) {
    if (parsed.error().message.empty()) harnessd::fuzz::fail("a template was refused without a message");
    return 0;
  }
  render_checked(*parsed, typical_data());
  if (nul != std::string_view::npos) {
    auto data = harnessd::schema::parse_json(input.substr(nul + 1));
    if (data) render_checked(*parsed, *data);
  }
  return 0;
}
