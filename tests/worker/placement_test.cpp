// Where a pool puts a new session: the host with the most free places.
#include <catch2/catch.hpp>

#include "worker/placement.h"

using harnessd::harnesses::RemoteSpec;
using harnessd::worker::placement_order;
using Hosts = std::vector<std::string>;

TEST_CASE("a new session goes to the host with the most free places, ties in the order of hosts") {
  RemoteSpec pool;
  pool.hosts = {"ssh://w1", "ssh://w2", "ssh://w3"};
  pool.capacity = 3;
  CHECK(placement_order(pool, {}) == Hosts{"ssh://w1", "ssh://w2", "ssh://w3"});
  CHECK(placement_order(pool, {{"ssh://w1", 1}}) == Hosts{"ssh://w2", "ssh://w3", "ssh://w1"});
  CHECK(placement_order(pool, {{"ssh://w1", 2}, {"ssh://w2", 1}, {"ssh://w3", 3}}) == Hosts{"ssh://w2", "ssh://w1"});
  // Sessions of hosts outside the pool do not count.
  CHECK(placement_order(pool, {{"ssh://other", 9}}).size() == 3);
}

TEST_CASE("a pool whose hosts are all full places nothing, and one without a capacity is never full") {
  RemoteSpec pool;
  pool.hosts = {"ssh://w1", "ssh://w2"};
  pool.capacity = 3;
  CHECK(placement_order(pool, {{"ssh://w1", 3}, {"ssh://w2", 3}}).empty());
  pool.capacity = 0;
  CHECK(placement_order(pool, {{"ssh://w1", 300}, {"ssh://w2", 2}}) == Hosts{"ssh://w2", "ssh://w1"});
}
