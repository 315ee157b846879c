// The session registry: unique names among open sessions, close frees them.
#include <catch2/catch.hpp>

#include <memory>

#include "queue/session_registry.h"

using harnessd::queue::SessionRegistry;

TEST_CASE("a name maps to at most one open session") {
  SessionRegistry<int> r;
  CHECK_FALSE(r.add("s1", std::string("agent:x"), std::make_unique<int>(1)));
  CHECK(r.find_name("agent:x") == "s1");
  auto displaced = r.add("s2", std::string("agent:x"), std::make_unique<int>(2));
  REQUIRE(displaced);
  CHECK(*displaced == "s1");
  CHECK(r.find_name("agent:x") == "s2");
  CHECK(r.entries().at("s1").name == std::nullopt);
  CHECK(*r.find("s1") == 1);  // still open until the caller closes it
}

TEST_CASE("closing frees the name and keeps the id known") {
  SessionRegistry<int> r;
  r.add("s1", std::string("n"), std::make_unique<int>(1));
  r.add("s2", std::nullopt, std::make_unique<int>(2));
  auto value = r.close("s1");
  REQUIRE(value);
  CHECK(*value == 1);
  CHECK(r.find("s1") == nullptr);
  CHECK(r.known("s1"));
  CHECK_FALSE(r.find_name("n"));
  CHECK(r.open_count() == 1);
  CHECK(r.close("s1") == nullptr);  // twice: nothing more
  // A closed session's name never takes the name back from a new holder.
  r.add("s3", std::string("n"), std::make_unique<int>(3));
  CHECK(r.find_name("n") == "s3");
}

TEST_CASE("open sessions are visited in id order") {
  SessionRegistry<int> r;
  r.add("b", std::nullopt, std::make_unique<int>(2));
  r.add("a", std::nullopt, std::make_unique<int>(1));
  r.add("c", std::nullopt, std::make_unique<int>(3));
  r.close("c");
  std::string order;
  r.for_each_open([&](const std::string& id, const auto&, int&) { order += id; });
  CHECK(order == "ab");
}
