// TurnControl: the state of one prompt turn and its cancellation, as a
// small state machine with no I/O. The worker drives it; tests check every
// transition and every cancel path without a loop.
#pragma once

#include <cstdint>

namespace harnessd::queue {

/// queued -> starting -> active -> finishing -> done. A turn may also go
/// from queued or starting straight to finishing (removed from the queue,
/// adapter failed to start, timed out while starting).
enum class TurnState { kQueued, kStarting, kActive, kFinishing, kDone };

/// Why a turn is being stopped.
/// kError: harnessd itself cannot go on with the run (its recording failed).
enum class StopReason { kNone, kCancelled, kTimeout, kError };

/// What the caller must do after request_stop().
enum class StopAction {
  kNone,     // nothing: already stopping, finishing or done
  kLatched,  // remembered; applied when the prompt reaches the adapter
  kForward,  // forward session/cancel to the adapter now
  kDrop,     // still queued: take it out of the queue and answer it
};

const char* turn_state_name(TurnState state);

class TurnControl {
 public:
  /// `generation` identifies this turn within its session; stale timers and
  /// callbacks compare it before acting.
  explicit TurnControl(std::uint64_t generation = 0) : generation_(generation) {}

  std::uint64_t generation() const { return generation_; }
  TurnState state() const { return state_; }
  StopReason stop_reason() const { return stop_; }
  bool stopping() const { return stop_ != StopReason::kNone; }

  /// queued -> starting. False from any other state.
  bool start();
  /// starting -> active (the prompt was sent to the adapter). Returns true
  /// when a stop was latched while starting and must be forwarded now.
  bool activate();
  /// starting or active (or queued) -> finishing. False when already
  /// finishing or done, so a turn ends only once.
  bool finish();
  /// finishing -> done.
  bool done();

  /// Asks the turn to stop. The first reason wins (a cancel after a
  /// timeout stays a timeout and vice versa).
  StopAction request_stop(StopReason why);

 private:
  std::uint64_t generation_;
  TurnState state_ = TurnState::kQueued;
  StopReason stop_ = StopReason::kNone;
};

}  // namespace harnessd::queue
