// The exec bridge: any command as a single-shot harness. Each prompt runs
// the command once; the prompt goes to its stdin or to a file; its stdout
// is relayed as text, or parsed as JSON lines with a configured field.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "acp/loop.h"
#include "harnesses/bridge_runtime.h"

namespace harnessd::harnesses {

struct ExecOptions {
  std::vector<std::string> command;  // argv; "{prompt_file}" is replaced in file mode
  std::string input = "stdin";       // stdin or file
  std::string output = "text";       // text or jsonl
  std::string field = "text";        // jsonl: dotted path of the text in each line
  std::chrono::milliseconds kill_grace{2000};
};

Bridge make_exec_bridge(acp::Loop& loop, ExecOptions options);

}  // namespace harnessd::harnesses
