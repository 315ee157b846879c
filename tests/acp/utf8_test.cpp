// UTF-8 validation, repair and safe cutting.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

TEST_CASE("a JSON string literal reads back as the repaired text") {
  std::vector<std::string> texts = {"", "plain text", "quote \" back\\slash", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                    "ok \xff\xfe end", "\xe2\x82", "cut \xf0\x9f", "\x7f del stays"};
  for (int c = 0; c < 256; ++c) texts.push_back("a" + std::string(1, static_cast<char>(c)) + "z");
  // Random bytes, mostly ASCII, from a fixed seed.
  std::uint64_t seed = 88172645463325252ULL;
  for (int n = 0; n < 500; ++n) {
    std::string s;
    for (int k = 0; k < n % 40; ++k) {
      seed ^= seed << 13;
      seed ^= seed >> 7;
      seed ^= seed << 17;
      s += static_cast<char>(seed % 4 == 0 ? (seed >> 8) & 0xff : 0x20 + (seed >> 8) % 0x60);
    }
    texts.push_back(s);
  }
  for (const std::string& s : texts) {
    INFO(nlohmann::json(s).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    std::string out = "x";
    acp::utf8::append_json_string(out, s);
    REQUIRE(out.front() == 'x');
    const auto parsed = nlohmann::json::parse(out.substr(1));  // strict: throws on a bad escape or byte
    CHECK(parsed.get<std::string>() == acp::utf8::repair(s));
    for (char c : out) CHECK(static_cast<unsigned char>(c) >= 0x20);  // nothing raw below a space
  }
  std::string simple;
  acp::utf8::append_json_string(simple, "caf\xc3\xa9 ok");
  CHECK(simple == "\"caf\xc3\xa9 ok\"");  // copied as it is
}
