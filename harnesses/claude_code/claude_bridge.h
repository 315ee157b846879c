// The claude-code bridge: one `claude -p` process per session, kept across
// turns, speaking stream-json both ways; its events become ACP updates.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/loop.h"
#include "harnesses/bridge_runtime.h"

namespace harnessd::harnesses {

struct ClaudeOptions {
  std::vector<std::string> command = {"claude"};
  std::string model;
  std::string permission_mode;
  /// After an interrupt, how long claude has to end the turn before the
  /// process is stopped (the next prompt resumes the session).
  std::chrono::milliseconds interrupt_grace{5000};
};

Bridge make_claude_bridge(acp::Loop& loop, ClaudeOptions options);

/// The config options of a claude-code session (ACP SessionConfigOption
/// objects): `model` and `mode` with these current values ("default" when
/// empty). harnessd lists them before the bridge runs.
nlohmann::json claude_config_options(const std::string& model, const std::string& mode);

}  // namespace harnessd::harnesses
