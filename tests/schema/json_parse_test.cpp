// The bounded JSON parser every outside input goes through.
#include <catch2/catch.hpp>

#include <string>

#include "schema/json_parse.h"

using namespace harnessd::schema;

namespace {
std::string nested(std::size_t depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}
}  // namespace

TEST_CASE("parse_json reads one value and nothing else") {
  auto ok = parse_json(R"( {"a":[1,2.5,"x",null,true]} )");
  REQUIRE(ok);
  CHECK((*ok)["a"][1] == 2.5);
  for (const char* bad : {"", "{", "{\"a\":1} x", "{\"a\":1}{\"b\":2}", "[1,]", "nul"}) {
    INFO(bad);
    auto r = parse_json(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == JsonError::Kind::kSyntax);
    CHECK_FALSE(accept_json(bad));
  }
}

TEST_CASE("nesting is limited, right at the limit and far beyond it") {
  CHECK(parse_json(nested(kMaxJsonDepth)));
  auto over = parse_json(nested(kMaxJsonDepth + 1));
  REQUIRE_FALSE(over);
  CHECK(over.error().kind == JsonError::Kind::kTooDeep);
  CHECK(over.error().message == "nested deeper than 256 levels");
  // Far beyond: no stack overflow, in the parser or when the partial tree
  // is destroyed.
  CHECK_FALSE(parse_json(nested(1'000'000)));
  std::string objects;
  for (int i = 0; i < 300'000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(300'000, '}');
  auto deep = parse_json(objects);
  REQUIRE_FALSE(deep);
  CHECK(deep.error().kind == JsonError::Kind::kTooDeep);
  CHECK_FALSE(accept_json(objects));
  CHECK(accept_json(nested(10)));
  CHECK_FALSE(parse_json(nested(11), 10));
}

TEST_CASE("numbers out of a double's range are refused, never thrown") {
  for (const char* big : {"1e400", "[-1e999]", "{\"x\":2e308}"}) {
    INFO(big);
    auto r = parse_json(big);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == JsonError::Kind::kNumberRange);
  }
  // Huge integers still parse (as unsigned or float), tiny ones underflow to 0.
  CHECK(parse_json("18446744073709551615"));
  CHECK(parse_json("1e-400"));
}

TEST_CASE("a raw NUL anywhere is refused, an escaped one is text") {
  std::string after("{\"a\":1}\0junk", 12);
  auto r = parse_json(after);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == JsonError::Kind::kNulByte);
  CHECK(r.error().offset == 7);
  CHECK_FALSE(parse_json(std::string("\"a\0b\"", 5)));
  auto escaped = parse_json(R"("a\u0000b")");
  REQUIRE(escaped);
  CHECK(escaped->get<std::string>() == std::string("a\0b", 3));
}

TEST_CASE("parse_or_discard keeps nlohmann's no-exception idiom") {
  CHECK(parse_or_discard("[1]").is_array());
  CHECK(parse_or_discard("1e400").is_discarded());
  CHECK(parse_or_discard(nested(5000)).is_discarded());
}
