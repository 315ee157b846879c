// append_json writes what nlohmann's dump() writes, compact and indented.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "acp/json_write.h"
#include "acp/utf8.h"

using namespace harnessd;
using nlohmann::json;

namespace {

std::string dumped(const json& v, int indent) { return v.dump(indent, ' ', false, json::error_handler_t::replace); }

// Random values of every kind, strings with the characters JSON escapes.
json random_value(std::mt19937& rng, int depth) {
  static const std::string kPieces[] = {"a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\b", "\f", "\r", std::string(1, '\0'),
                                        "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "key"};
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto text = [&] {
    std::string s;
    // Long runs of plain text too, with the odd character to escape in them.
    for (int i = pick(3) == 0 ? pick(60) : pick(6); i > 0; --i) {
      s += pick(4) == 0 ? kPieces[pick(std::size(kPieces))] : std::string(static_cast<std::size_t>(pick(20)), 'p');
    }
    return s;
  };
  switch (depth > 3 ? pick(7) : pick(9)) {
    case 0: return nullptr;
    case 1: return pick(2) == 0;
    case 2: return static_cast<std::int64_t>(rng()) - static_cast<std::int64_t>(rng()) * 4096;
    case 3: return std::numeric_limits<std::uint64_t>::max() - rng();
    case 4: return static_cast<double>(pick(100000)) / 7.0;
    case 5: return text();
    case 6: return pick(3) == 0 ? json::object() : json::array();
    case 7: {
      json a = json::array();
      for (int i = pick(4); i > 0; --i) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      for (int i = pick(4); i > 0; --i) o[text()] = random_value(rng, depth + 1);
      return o;
    }
  }
}

}  // namespace

TEST_CASE("append_json writes what dump writes, compact and indented") {
  std::mt19937 rng(20261204);
  for (int round = 0; round < 2000; ++round) {
    const json v = random_value(rng, 0);
    INFO(dumped(v, -1));
    CHECK(acp::json_text(v) == dumped(v, -1));
    CHECK(acp::json_text(v, 2) == dumped(v, 2));
    CHECK(acp::json_text(v, 0) == dumped(v, 0));
  }
  // Appends: what is already there stays.
  std::string out = "x=";
  acp::append_json(out, json{{"a", {1, "b", nullptr}}});
  CHECK(out == R"(x={"a":[1,"b",null]})");
}

TEST_CASE("append_json repairs ill-formed UTF-8 in keys and strings") {
  const std::string bad = "ok\xff\xc0\xafz";
  const json v = {{bad, bad}};
  const std::string text = acp::json_text(v);
  const std::string fixed = acp::utf8::repair(bad);
  CHECK(text == json{{fixed, fixed}}.dump());
  CHECK(json::parse(text) == json{{fixed, fixed}});
  // Wherever a bad or cut sequence falls against the 16-byte blocks.
  for (const std::string odd : {"\xff", "\xe2\x82", "\xc3\xa9", "\"", "\x01", "\xf0\x9f\x98\x80"}) {
    for (std::size_t at = 0; at <= 40; ++at) {
      std::string long_text(48, 'a');
      long_text.insert(at, odd);
      INFO(at);
      CHECK(acp::json_text(json(long_text)) == json(acp::utf8::repair(long_text)).dump());
    }
  }
}
