// The turn state machine.
#include "queue/turn.h"

namespace harnessd::queue {

const char* turn_state_name(TurnState state) {
  switch (state) {
    case TurnState::kQueued: return "queued";
    case TurnState::kStarting: return "starting";
    case TurnState::kActive: return "active";
    case TurnState::kFinishing: return "finishing";
    case TurnState::kDone: return "done";
  }
  return "done";
}

bool TurnControl::start() {
  if (state_ != TurnState::kQueued) return false;
  state_ = TurnState::kStarting;
  return true;
}

bool TurnControl::activate() {
  if (state_ != TurnState::kStarting) return false;
  state_ = TurnState::kActive;
  return stopping();
}

bool TurnControl::finish() {
  if (state_ == TurnState::kFinishing || state_ == TurnState::kDone) return false;
  state_ = TurnState::kFinishing;
  return true;
}

bool TurnControl::done() {
  if (state_ != TurnState::kFinishing) return false;
  state_ = TurnState::kDone;
  return true;
}

StopAction TurnControl::request_stop(StopReason why) {
  if (why == StopReason::kNone) return StopAction::kNone;
  switch (state_) {
    case TurnState::kQueued:
      if (stopping()) return StopAction::kNone;
      stop_ = why;
      return StopAction::kDrop;
    case TurnState::kStarting:
      if (stopping()) return StopAction::kNone;
      stop_ = why;
      return StopAction::kLatched;
    case TurnState::kActive:
      if (stopping()) return StopAction::kNone;
      stop_ = why;
      return StopAction::kForward;
    case TurnState::kFinishing:
    case TurnState::kDone:
      return StopAction::kNone;
  }
  return StopAction::kNone;
}

}  // namespace harnessd::queue
