// The turn state machine and every way a turn can be stopped.
#include <catch2/catch.hpp>

#include "queue/turn.h"

using namespace harnessd::queue;

TEST_CASE("a turn goes queued, starting, active, finishing, done, once") {
  TurnControl t(7);
  CHECK(t.generation() == 7);
  CHECK(t.state() == TurnState::kQueued);
  CHECK(t.start());
  CHECK_FALSE(t.start());
  CHECK(t.state() == TurnState::kStarting);
  CHECK_FALSE(t.activate());  // no stop latched
  CHECK(t.state() == TurnState::kActive);
  CHECK(t.finish());
  CHECK_FALSE(t.finish());  // a turn ends only once
  CHECK(t.done());
  CHECK(t.state() == TurnState::kDone);
  CHECK_FALSE(t.activate());
}

TEST_CASE("a cancel while queued drops the prompt") {
  TurnControl t;
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kDrop);
  CHECK(t.stop_reason() == StopReason::kCancelled);
  CHECK(t.finish());
}

TEST_CASE("a cancel while starting is latched and applied on activation") {
  TurnControl t;
  t.start();
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kLatched);
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kNone);  // twice: still one
  CHECK(t.activate());  // the caller must forward the cancel now
  CHECK(t.stop_reason() == StopReason::kCancelled);
}

TEST_CASE("a cancel while active is forwarded once") {
  TurnControl t;
  t.start();
  t.activate();
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kForward);
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kNone);
}

TEST_CASE("the first stop reason wins") {
  TurnControl t;
  t.start();
  t.activate();
  CHECK(t.request_stop(StopReason::kTimeout) == StopAction::kForward);
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kNone);
  CHECK(t.stop_reason() == StopReason::kTimeout);
}

TEST_CASE("a cancel after the turn finished does nothing") {
  TurnControl t;
  t.start();
  t.activate();
  t.finish();
  CHECK(t.request_stop(StopReason::kCancelled) == StopAction::kNone);
  CHECK(t.stop_reason() == StopReason::kNone);
  t.done();
  CHECK(t.request_stop(StopReason::kTimeout) == StopAction::kNone);
}

TEST_CASE("a new generation is untouched by the previous turn's cancel") {
  TurnControl first(1);
  first.start();
  first.activate();
  first.request_stop(StopReason::kCancelled);
  first.finish();
  first.done();
  TurnControl second(2);
  second.start();
  CHECK_FALSE(second.activate());
  CHECK_FALSE(second.stopping());
}
