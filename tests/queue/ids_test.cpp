// Session and run ids: unique, fixed length, sortable by creation time.
#include <catch2/catch.hpp>

#include <set>
#include <thread>

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
  std::string a = make_id("");
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  std::string b = make_id("");
  CHECK(a < b);
}
