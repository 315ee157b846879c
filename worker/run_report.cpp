// The run's state comes from its result.json, read back once the engine
// has flushed the store; the rest from what the engine answered.
#include "worker/run_report.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "acp/files.h"
#include "schema/json_parse.h"
#include "worker/run_recording.h"
#include "worker/state_dir.h"
#include "worker/store.h"

namespace harnessd::worker {

using nlohmann::json;

namespace {

// The protocol's words for a refused parameter, in the command line's:
// "session/new: _meta.harnessd.template: no template named 'x'" becomes
// "--template: no template named 'x'".
std::string in_cli_words(std::string message) {
  static const std::pair<const char*, const char*> kOptions[] = {
      {"_meta.harnessd.harness", "--harness"},  {"_meta.harnessd.template", "--template"},
      {"_meta.harnessd.mode", "--mode"},        {"_meta.harnessd.name", "--session"},
      {"_meta.harnessd.context", "--context"},  {"_meta.harnessd.timeoutMs", "--timeout"},
      {"_meta.harnessd.summary", "--summary"}};
  for (const char* method : {"session/new: ", "session/prompt: ", "_harnessd/sessions/set_summary: "}) {
    if (message.rfind(method, 0) == 0) message.erase(0, std::strlen(method));
  }
  for (const auto& [field, option] : kOptions) {
    if (message.rfind(field, 0) == 0) return option + message.substr(std::strlen(field));
  }
  return message;
}

// The last `n` non-empty lines of `text`.
std::vector<std::string> last_lines(const std::string& text, std::size_t n) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  }
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(n));
  return lines;
}

// How the run ended, for a person: the harness's last stderr lines on
// a failure, then one line with the state, the stop reason, the time,
// refused permissions, the error and its install hint, the recording.
std::string end_summary(const RunOutcome& run, const json& result, const std::string& recording) {
  std::string out;
  std::string state = result.is_object() && result.contains("state") && result["state"].is_string()
                          ? result["state"].get<std::string>()
                          : (run.error ? "failed" : run.stop_reason.empty() ? "not run" : run.stop_reason);
  if (run.error && run.error->data.is_object() && run.error->data.contains("stderrTail") &&
      run.error->data["stderrTail"].is_string()) {
    for (const auto& line : last_lines(run.error->data["stderrTail"].get<std::string>(), 5)) {
      out += "harnessd run: harness stderr: " + line + "\n";
    }
  }
  auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - run.started).count();
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.1f s", took);
  std::string line =
      "harnessd run: " + (run.exit_code == run_exit::kUsage && !result.contains("state") ? "refused" : state);
  if (!run.stop_reason.empty() && run.stop_reason != state) line += " (" + run.stop_reason + ")";
  if (run.interrupted) line += ", interrupted";
  line += " after " + std::string(seconds);
  if (!run.refused.empty()) {
    line += "; " + std::to_string(run.refused.size()) + " permission request" +
            (run.refused.size() == 1 ? "" : "s") + " refused (" + run.refused.front() +
            (run.refused.size() > 1 ? ", ..." : "") + "; --approve all allows them)";
  }
  if (run.error) {
    line += ": " + in_cli_words(run.error->message);
    if (run.error->data.is_object() && run.error->data.contains("hint") && run.error->data["hint"].is_string()) {
      line += "; install: " + run.error->data["hint"].get<std::string>();
    }
  }
  // OpenSpace's own record and warning (from its answer, or its failure).
  const json* os = run.adapter_meta.contains("openspace") ? &run.adapter_meta["openspace"] : nullptr;
  if (!os && run.error && run.error->data.is_object() && run.error->data.contains("taskId")) os = &run.error->data;
  if (os && os->is_object()) {
    if (os->contains("warning") && (*os)["warning"].is_string()) {
      out += "harnessd run: openspace warning: " + (*os)["warning"].get<std::string>() + "\n";
    }
    if (os->contains("recordingDir") && (*os)["recordingDir"].is_string()) {
      line += "; OpenSpace recording " + (*os)["recordingDir"].get<std::string>();
    }
  }
  if (!recording.empty()) line += "; recording " + recording + " (harnessd show " + run.run_id + ")";
  return out + line + "\n";
}

}  // namespace

void report_run(const RunOutcome& run, const std::string& format, const std::string& state_dir, bool& stdout_open) {
  // Everything is on disk now: the run's own result.json is the truth.
  json result;
  std::string recording;
  if (!run.run_id.empty()) {
    auto root = open_state_dir(state_dir, StateAccess::kReadOnly);
    const int fd = root ? root->get() : -1;
    recording = state_dir + "/" + recording_of(fd, run.run_id, run.session_id);
    if (root) {
      const segment::Run files = read_run_files(fd, run.run_id, run.session_id);
      if (auto it = files.files.find("result.json"); it != files.files.end()) {
        result = schema::parse_or_discard(it->second);
      }
    }
    if (result.is_discarded()) result = json();
  }
  if (format == "text") {
    if (!run.text.empty() && run.text.back() != '\n' && stdout_open) stdout_open = acp::write_all(1, "\n") == 0;
    acp::write_all(2, end_summary(run, result, recording));
    return;
  }
  if (format != "json") return;
  json out = {{"version", 1},
              {"exitCode", run.exit_code},
              {"state", result.is_object() ? result.value("state", json()) : json()},
              {"stopReason", run.stop_reason.empty() ? json() : json(run.stop_reason)},
              {"text", run.text},
              {"runId", run.run_id.empty() ? json() : json(run.run_id)},
              {"sessionId", run.session_id.empty() ? json() : json(run.session_id)},
              {"recording", recording.empty() ? json() : json(recording)},
              {"usage", run.usage},
              {"adapterMeta", run.adapter_meta.empty() ? json() : run.adapter_meta},
              {"error", run.error ? json(*run.error) : json()}};
  if (stdout_open) {
    stdout_open = acp::write_all(1, out.dump(-1, ' ', false, json::error_handler_t::replace) + "\n") == 0;
  }
}

}  // namespace harnessd::worker
