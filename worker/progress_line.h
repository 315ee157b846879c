// The status line of `harnessd run`: on a terminal (or with --progress
// always), one line on stderr redrawn in place with the elapsed time, the
// harness and what it is doing.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "acp/loop.h"

namespace harnessd::worker {

/// Lives on the loop thread. It is cleared before anything else is written
/// to the terminal and at the end, and never drawn in the middle of an
/// answer line on the same terminal.
class ProgressLine {
 public:
  /// `harness` is named on the line, the time counts from `started`.
  /// `answer_mid_line()` tells whether the answer written to stdout so far
  /// ends inside a line.
  ProgressLine(acp::Loop& loop, std::string harness, std::chrono::steady_clock::time_point started,
               std::function<bool()> answer_mid_line);
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  /// What the harness is doing ("thinking", "running <tool>"), shown from
  /// the next redraw on.
  void set_activity(std::string what) { activity_ = std::move(what); }
  /// Starts drawing when `mode` asks for it: "always", or "auto" while
  /// stderr is a terminal ("never": nothing is ever drawn).
  void start(const std::string& mode);
  /// Clears the line if it is drawn; it comes back at the next redraw.
  void clear();
  /// Stops drawing and clears the line.
  void stop();

 private:
  void draw();

  std::string harness_;
  std::chrono::steady_clock::time_point started_;
  std::function<bool()> answer_mid_line_;
  std::string activity_;
  acp::Timer timer_;
  bool on_ = false;
  bool drawn_ = false;
  bool answer_on_terminal_ = false;
};

}  // namespace harnessd::worker
