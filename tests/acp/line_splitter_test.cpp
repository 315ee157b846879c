// NDJSON framing: LF and CRLF, blank lines, split reads, long lines.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "acp/line_splitter.h"

using harnessd::acp::LineSplitter;

namespace {
struct Collect {
  std::vector<std::string> lines;
  std::vector<std::pair<std::string, std::size_t>> overlong;
  LineSplitter make(std::size_t max) {
    return LineSplitter(
        max, [this](std::string_view l) { lines.emplace_back(l); },
        [this](std::string_view prefix, std::size_t size) { overlong.emplace_back(std::string(prefix), size); });
  }
};
}  // namespace

TEST_CASE("lines end in LF or CRLF and blank lines are skipped") {
  Collect c;
  auto s = c.make(1024);
  s.feed("one\ntwo\r\n\n  \r\nthree\n");
  CHECK(c.lines == std::vector<std::string>{"one", "two", "three"});
}

TEST_CASE("a line may arrive in many pieces") {
  Collect c;
  auto s = c.make(1024);
  for (char ch : std::string("{\"a\":1}\n{\"b\":2}\n")) s.feed(std::string_view(&ch, 1));
  CHECK(c.lines == std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"});
  CHECK(s.buffered() == 0);
}

TEST_CASE("a final line without LF is delivered at the end") {
  Collect c;
  auto s = c.make(1024);
  s.feed("partial");
  CHECK(c.lines.empty());
  s.finish();
  CHECK(c.lines == std::vector<std::string>{"partial"});
}

TEST_CASE("an over-long line is reported once, with its prefix and size, and framing goes on") {
  Collect c;
  auto s = c.make(16);
  std::string big = "{\"id\":7,\"x\":\"" + std::string(100, 'y') + "\"}";
  s.feed(big.substr(0, 10));
  s.feed(big.substr(10, 50));
  s.feed(big.substr(60) + "\nok\n");
  REQUIRE(c.overlong.size() == 1);
  CHECK(c.overlong[0].second == big.size());
  CHECK(c.overlong[0].first.rfind("{\"id\":7", 0) == 0);
  CHECK(c.lines == std::vector<std::string>{"ok"});
}

TEST_CASE("the kept prefix of an over-long line is bounded") {
  Collect c;
  auto s = c.make(100);
  s.feed(std::string(10 * LineSplitter::kOverlongPrefix, 'a'));
  CHECK(s.buffered() <= LineSplitter::kOverlongPrefix);
  s.feed("\n");
  REQUIRE(c.overlong.size() == 1);
  CHECK(c.overlong[0].first.size() == LineSplitter::kOverlongPrefix);
  CHECK(c.overlong[0].second == 10 * LineSplitter::kOverlongPrefix);
}

TEST_CASE("a line exactly at the limit is accepted") {
  Collect c;
  auto s = c.make(8);
  s.feed("12345678\n123456789\n");
  CHECK(c.lines == std::vector<std::string>{"12345678"});
  CHECK(c.overlong.size() == 1);
}
