// Session and run ids: unique, fixed length, sortable by creation time.
#include <catch2/catch.hpp>

#include <set>

#include "queue/ids.h"

using harnessd::queue::make_id;

TEST_CASE("ids are unique and carry their prefix") {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = make_id("sess_");
    REQUIRE(id.size() == 5 + 26);
    REQUIRE(id.rfind("sess_", 0) == 0);
    REQUIRE(id.find_first_not_of("0123456789abcdefghjkmnpqrstvwxyz", 5) == std::string::npos);
    REQUIRE(seen.insert(id).second);
  }
}

TEST_CASE("ids sort by creation time") {
  // The first 9 characters hold the top 45 of the 48 bits of the time in
  // milliseconds (the 10th mixes time and random bits): make ids until one
  // falls in a later 8 ms step.
  std::string a = make_id("");
  std::string b = make_id("");
  while (b.compare(0, 9, a, 0, 9) == 0) b = make_id("");
  CHECK(a < b);
}
