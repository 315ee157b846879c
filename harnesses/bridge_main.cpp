// The command line of the bridges. Each bridge takes its own options, then
// `--` and the harness command when it has one.
#include "harnesses/bridge_main.h"

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

// CLI11's inlined string code trips g++ 12's -Wnull-dereference here (a
// false positive inside the library), so it is silenced for this file only.
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>

#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stdio_peer.h"
#include "harnesses/claude_code/claude_bridge.h"
#include "harnesses/exec/exec_bridge.h"
#include "harnesses/opencode/opencode_bridge.h"
#include "harnesses/openspace/openspace_bridge.h"

namespace harnessd::harnesses {

int bridge_main(int argc, char** argv) {
  CLI::App app{"Runs a built-in bridge: an ACP agent on stdio that drives one harness CLI.", "harnessd adapter"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug, info, warn, error or off");
  app.require_subcommand(1, 1);

  ExecOptions exec;
  double exec_grace = 2.0;
  auto* exec_cmd = app.add_subcommand("exec", "Any command as a single-shot harness: adapter exec [options] -- argv...");
  exec_cmd->add_option("--input", exec.input, "stdin, or file (the path replaces {prompt_file} in argv, else is appended)")
      ->check(CLI::IsMember({"stdin", "file"}));
  exec_cmd->add_option("--output", exec.output, "text, or jsonl (one JSON object per line)")
      ->check(CLI::IsMember({"text", "jsonl"}));
  exec_cmd->add_option("--field", exec.field, "jsonl: dotted path of the text in each line (default: text)");
  exec_cmd->add_option("--kill-grace", exec_grace, "Seconds between SIGTERM and SIGKILL on cancel");
  exec_cmd->add_option("command", exec.command, "The command and its arguments (after --)")->required();

  ClaudeOptions claude;
  auto* claude_cmd = app.add_subcommand("claude-code", "Claude Code headless: adapter claude-code [options] [-- claude...]");
  claude_cmd->add_option("--model", claude.model, "Model for claude --model");
  claude_cmd->add_option("--permission-mode", claude.permission_mode, "claude --permission-mode (default: ask the host)");
  std::vector<std::string> claude_command;
  claude_cmd->add_option("command", claude_command, "The claude command (default: claude)");

  OpencodeOptions opencode;
  auto* opencode_cmd = app.add_subcommand("opencode", "OpenCode run mode: adapter opencode [options] [-- opencode...]");
  opencode_cmd->add_option("--model", opencode.model, "provider/model for opencode run -m");
  opencode_cmd->add_option("--agent", opencode.agent, "OpenCode agent for --agent");
  std::vector<std::string> opencode_command;
  opencode_cmd->add_option("command", opencode_command, "The opencode command (default: opencode)");

  OpenspaceOptions openspace;
  auto* openspace_cmd = app.add_subcommand("openspace", "OpenSpace tasks: adapter openspace [options] [-- openspace-worker...]");
  openspace_cmd->add_option("--skill-dir", openspace.skill_dir, "Where OpenSpace puts skills it captures");
  openspace_cmd->add_option("--max-iterations", openspace.max_iterations, "Iteration budget per task");
  std::vector<std::string> openspace_command;
  openspace_cmd->add_option("command", openspace_command, "The worker command (default: openspace-worker)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, std::cerr, std::cerr) == 0 ? 0 : 2;
  }
  acp::log::Level level = acp::log::Level::kInfo;
  acp::log::parse_level(log_level, level);
  acp::log::set_level(level);
  acp::log::make_stderr_nonblocking();

  BridgeRunOptions run;
  run.out_fd = acp::protect_stdout();
  if (run.out_fd < 0) {
    acp::log::error("cannot set up stdout for the protocol");
    return 1;
  }
  acp::Loop loop;
  Bridge bridge;
  if (claude_cmd->parsed()) {
    if (!claude_command.empty()) claude.command = claude_command;
    bridge = make_claude_bridge(loop, claude);
  } else if (opencode_cmd->parsed()) {
    if (!opencode_command.empty()) opencode.command = opencode_command;
    bridge = make_opencode_bridge(loop, opencode);
  } else if (openspace_cmd->parsed()) {
    if (!openspace_command.empty()) openspace.command = openspace_command;
    bridge = make_openspace_bridge(loop, openspace);
  } else if (exec_cmd->parsed()) {
    exec.kill_grace = std::chrono::milliseconds(static_cast<long long>(std::llround(exec_grace * 1000)));
    bridge = make_exec_bridge(loop, exec);
  }
  int code = run_bridge(loop, bridge, run);
  bridge = {};
  return code;
}

}  // namespace harnessd::harnesses
