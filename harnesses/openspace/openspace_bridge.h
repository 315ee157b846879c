// The openspace bridge: one task per prompt through the openspace-worker
// shim (one JSON result line, exit 0/1/2/130), with the task's recording
// tailed for progress while it runs.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "acp/loop.h"
#include "harnesses/bridge_runtime.h"

namespace harnessd::harnesses {

struct OpenspaceOptions {
  std::vector<std::string> command = {"openspace-worker"};
  std::string skill_dir;
  int max_iterations = 0;  // 0: OpenSpace's own default
  /// OpenSpace cancels cooperatively on SIGTERM and then writes its
  /// recording; SIGKILL only after this.
  std::chrono::milliseconds kill_grace{10000};
  std::chrono::milliseconds poll_interval{200};
};

Bridge make_openspace_bridge(acp::Loop& loop, OpenspaceOptions options);

}  // namespace harnessd::harnesses
