// UTF-8 validation, repair and safe cutting.
#include <catch2/catch.hpp>

#include "acp/utf8.h"

using namespace harnessd;

TEST_CASE("valid UTF-8 is recognised") {
  CHECK(acp::utf8::valid("plain"));
  CHECK(acp::utf8::valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  CHECK_FALSE(acp::utf8::valid("\xff"));
  CHECK_FALSE(acp::utf8::valid("\xc0\xaf"));          // overlong
  CHECK_FALSE(acp::utf8::valid("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(acp::utf8::valid("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(acp::utf8::valid("\xe2\x82"));          // truncated
}

TEST_CASE("repair replaces each broken sequence with U+FFFD") {
  CHECK(acp::utf8::repair("ok \xff\xfe end") == "ok \xef\xbf\xbd\xef\xbf\xbd end");
  CHECK(acp::utf8::repair("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(acp::utf8::valid(acp::utf8::repair("\xe2\x82 x \xf0\x9f")));
}

TEST_CASE("a broken or multi-byte sequence is found wherever it sits in a run of ASCII") {
  // ASCII is skipped eight bytes at a time: put the sequence at every
  // offset around those words, and end the text at every length after it.
  for (std::size_t at = 0; at < 20; ++at) {
    for (std::size_t after = 0; after < 10; ++after) {
      INFO("at " << at << ", then " << after << " bytes");
      const std::string before(at, 'a'), tail(after, 'z');
      CHECK_FALSE(acp::utf8::valid(before + "\xff" + tail));
      CHECK_FALSE(acp::utf8::valid(before + "\xe2\x82" + tail));
      CHECK(acp::utf8::valid(before + "\xe2\x82\xac" + tail));
      CHECK(acp::utf8::repair(before + "\xff" + tail) == before + "\xef\xbf\xbd" + tail);
      CHECK(acp::utf8::repair(before + "\xe2\x82\xac" + tail) == before + "\xe2\x82\xac" + tail);
    }
  }
}

TEST_CASE("safe_cut never splits a character") {
  std::string s = "a\xe2\x82\xac";  // "a€"
  CHECK(acp::utf8::safe_cut(s, 1) == 1);
  CHECK(acp::utf8::safe_cut(s, 2) == 1);
  CHECK(acp::utf8::safe_cut(s, 3) == 1);
  CHECK(acp::utf8::safe_cut(s, 4) == 4);
  CHECK(acp::utf8::safe_cut(s, 10) == 4);
}
