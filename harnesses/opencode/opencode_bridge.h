// The opencode bridge: `opencode run --format json` once per prompt, the
// prompt on stdin, continuing OpenCode's session with -s. For streaming
// token by token, the ACP-native `opencode acp` profile is the better pick.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "acp/loop.h"
#include "harnesses/bridge_runtime.h"

namespace harnessd::harnesses {

struct OpencodeOptions {
  std::vector<std::string> command = {"opencode"};
  std::string model;  // provider/model, for -m
  std::string agent;  // for --agent
  std::chrono::milliseconds kill_grace{2000};
};

Bridge make_opencode_bridge(acp::Loop& loop, OpencodeOptions options);

}  // namespace harnessd::harnesses
