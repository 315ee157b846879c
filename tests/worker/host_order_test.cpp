// HostOrder: answers of ended turns go out in turn order, what is sent
// meanwhile waits behind them, and what waits counts against the host's
// backpressure like the host writer's own queue.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "worker/host_order.h"

using harnessd::worker::HostOrder;

TEST_CASE("HostOrder sends answers in turn order and holds later lines behind them") {
  HostOrder order;
  std::vector<std::string> sent;
  order.then([&] { sent.push_back("before"); });
  CHECK(sent == std::vector<std::string>{"before"});  // nothing waits: at once

  auto first = order.reserve();
  auto second = order.reserve();
  CHECK(order.waiting());
  order.then([&] { sent.push_back("update of turn 3"); });
  order.ready(second, [&] { sent.push_back("answer 2"); });
  CHECK(sent.size() == 1);  // answer 1 is not ready
  order.ready(first, [&] { sent.push_back("answer 1"); });
  CHECK(sent == std::vector<std::string>{"before", "answer 1", "answer 2", "update of turn 3"});
  CHECK_FALSE(order.waiting());
}

TEST_CASE("lines held behind a pending answer close the flow gate past the high-water mark") {
  harnessd::acp::FlowGate gate;
  std::vector<bool> changes;
  auto subscription = gate.subscribe([&](bool closed) { changes.push_back(closed); });
  HostOrder order;
  order.limit(gate, 1000, 400);

  auto answer = order.reserve();
  std::size_t sent = 0;
  for (int i = 0; i < 5; ++i) order.then([&] { sent += 300; }, 300);
  CHECK(order.held_bytes() == 1500);
  CHECK(gate.closed());  // 1,200 bytes were over the mark
  CHECK(changes == std::vector<bool>{true});

  order.ready(answer, [] {});
  CHECK(sent == 1500);
  CHECK(order.held_bytes() == 0);
  CHECK_FALSE(gate.closed());
  CHECK(changes == std::vector<bool>{true, false});

  // Nothing waits: lines go out at once and are never counted.
  order.then([&] { sent += 5000; }, 5000);
  CHECK(order.held_bytes() == 0);
  CHECK_FALSE(gate.closed());
}
