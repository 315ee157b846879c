// OpenSpace through the worker shim. The task text goes to a file; the shim
// runs in the session's cwd, so OpenSpace's recording lands in
// <cwd>/logs/recordings/<taskId>_<time>/. While it runs, the bridge reads
// new lines of that recording's conversations.jsonl and relays each
// iteration as progress. The result line decides the stop reason:
// success -> end_turn, incomplete -> max_turn_requests, cancelled ->
// cancelled, error -> a JSON-RPC error with OpenSpace's message.
#include "harnesses/openspace/openspace_bridge.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "acp/log.h"
#include "harnesses/harness_process.h"
#include "schema/json_parse.h"

namespace harnessd::harnesses {

using nlohmann::json;

namespace {

std::string task_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "task_%012llx", static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return buf;
}

// The text of an OpenAI-style message's content.
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const auto& c : content) {
      if (c.is_object() && c.contains("text") && c["text"].is_string()) out += c["text"].get<std::string>();
    }
  }
  return out;
}

class OpenspaceSession final : public BridgeSession {
 public:
  OpenspaceSession(acp::Loop& loop, const OpenspaceOptions& options, std::string cwd)
      : loop_(loop), options_(options), cwd_(std::move(cwd)), poll_(loop) {}

  ~OpenspaceSession() override { remove_task_file(); }

  void prompt(const json& blocks, std::shared_ptr<BridgeTurn> turn) override {
    turn_ = std::move(turn);
    task_ = task_id();
    offset_ = 0;
    recording_.clear();
    stdout_.clear();
    if (auto file = write_task_file(prompt_text(blocks)); !file) {
      turn_->fail(RpcError::internal("cannot write the task file: " + file.error().message));
      turn_.reset();
      return;
    }
    std::vector<std::string> argv = options_.command;
    argv.insert(argv.end(), {"--task-file", task_file_, "--workspace", cwd_, "--task-id", task_});
    if (!options_.skill_dir.empty()) argv.insert(argv.end(), {"--skill-dir", options_.skill_dir});
    if (options_.max_iterations > 0) argv.insert(argv.end(), {"--max-iterations", std::to_string(options_.max_iterations)});
    adapters::ProcessSpec spec;
    spec.argv = argv;
    spec.cwd = cwd_;
    spec.env = environment_with({"MCP_USE_ANONYMIZED_TELEMETRY=false"});
    spec.guard_exe = adapters::default_guard_exe();
    HarnessProcess::Callbacks cb;
    cb.on_line = [this](std::string_view line) { stdout_.emplace_back(line); };
    cb.on_exit = [this](const adapters::ExitStatus& status) { on_exit(status); };
    auto process = HarnessProcess::start(loop_, spec, std::move(cb));
    if (!process) {
      turn_->fail(RpcError{rpc_code::kHarnessUnavailable, "cannot start openspace-worker: " + process.error().message,
                           {{"command", options_.command}}});
      turn_.reset();
      return;
    }
    process_.hold(std::move(*process));
    schedule_poll();
  }

  void cancel() override {
    // The shim turns SIGTERM into a cooperative cancel of the task.
    process_.terminate(options_.kill_grace);
  }

  void close(std::function<void()> done) override { process_.close(options_.kill_grace, std::move(done)); }

 private:
  void schedule_poll() {
    poll_.start(options_.poll_interval, [this] {
      relay_progress();
      if (process_.running()) schedule_poll();
    });
  }

  // Finds this task's recording folder, then relays the iterations written
  // to its conversations.jsonl since the last look.
  void relay_progress() {
    if (!turn_) return;
    if (recording_.empty()) {
      std::string dir = cwd_ + "/logs/recordings";
      if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d)) {
          if (std::strncmp(e->d_name, (task_ + "_").c_str(), task_.size() + 1) == 0) recording_ = dir + "/" + e->d_name;
        }
        ::closedir(d);
      }
      if (recording_.empty()) return;
    }
    int fd = ::open((recording_ + "/conversations.jsonl").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    std::string data;
    char buf[65536];
    ssize_t n;
    while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(offset_ + data.size()))) > 0) {
      data.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    // Only whole lines; a line being written waits for the next look.
    std::size_t end = data.rfind('\n');
    if (end == std::string::npos) return;
    offset_ += end + 1;
    std::size_t start = 0;
    while (start <= end) {
      std::size_t nl = data.find('\n', start);
      relay_line(data.substr(start, nl - start));
      start = nl + 1;
    }
  }

  void relay_line(const std::string& line) {
    json e = schema::parse_or_discard(line);
    if (e.is_discarded() || e.value("type", "") != "iteration") return;
    int iteration = e.value("iteration", 0);
    const json messages = e.value("delta_messages", json::array());
    std::string thought = "OpenSpace iteration " + std::to_string(iteration);
    std::map<std::string, std::string> tool_titles;
    for (const auto& m : messages) {
      if (!m.is_object()) continue;
      std::string role = m.value("role", "");
      if (role == "assistant") {
        std::string text = content_text(m.value("content", json()));
        if (!text.empty()) thought += ": " + text;
        const json calls = m.value("tool_calls", json::array());
        for (const auto& c : calls) {
          std::string id = task_ + "-" + c.value("id", std::to_string(iteration));
          const json fn = c.value("function", json::object());
          std::string name = fn.value("name", "tool");
          json input = schema::parse_or_discard(fn.value("arguments", "{}"));
          tool_titles[c.value("id", "")] = id;
          turn_->update({{"sessionUpdate", "tool_call"},
                         {"toolCallId", id},
                         {"title", name},
                         {"kind", name.find("shell") != std::string::npos ? "execute" : "other"},
                         {"status", "in_progress"},
                         {"rawInput", input.is_discarded() ? json(fn.value("arguments", "")) : input}});
        }
      } else if (role == "tool") {
        std::string id = tool_titles.count(m.value("tool_call_id", "")) ? tool_titles[m.value("tool_call_id", "")]
                                                                           : task_ + "-" + m.value("tool_call_id", "");
        std::string output = content_text(m.value("content", json()));
        turn_->update({{"sessionUpdate", "tool_call_update"},
                       {"toolCallId", id},
                       {"status", "completed"},
                       {"content", json::array({{{"type", "content"}, {"content", {{"type", "text"}, {"text", output}}}}})}});
      }
    }
    // Which iteration this is, of how many when the limit is ours to know.
    json progress = {{"iteration", iteration}};
    if (options_.max_iterations > 0) progress["maxIterations"] = options_.max_iterations;
    turn_->update({{"sessionUpdate", "agent_thought_chunk"},
                   {"content", {{"type", "text"}, {"text", thought + "\n"}}},
                   {"_meta", {{"openspace", progress}}}});
  }

  void on_exit(const adapters::ExitStatus& status) {
    poll_.stop();
    relay_progress();  // the last iterations written before the exit
    remove_task_file();
    if (turn_) {
      auto turn = std::move(turn_);
      json result;
      for (auto it = stdout_.rbegin(); it != stdout_.rend() && result.is_null(); ++it) {
        json j = schema::parse_or_discard(*it);
        if (!j.is_discarded() && j.is_object() && j.contains("status")) result = j;
      }
      if (result.is_null()) {
        turn->fail(RpcError{rpc_code::kAdapterFailed,
                            "openspace-worker ended without a result (" + status.describe() + ")",
                            {{"stderrTail", process_->stderr_tail()}}});
      } else {
        finish(*turn, result);
      }
    }
    process_.release();
  }

  void finish(BridgeTurn& turn, const json& result) {
    std::string state = result.value("status", "");
    std::string response = result.contains("response") && result["response"].is_string()
                               ? result["response"].get<std::string>()
                               : "";
    json meta = {{"openspace",
                  {{"taskId", result.value("task_id", task_)},
                   {"status", state},
                   {"iterations", result.value("iterations", json())},
                   {"skillsUsed", result.value("skills_used", json::array())},
                   {"recordingDir", result.value("recording_dir", recording_.empty() ? json() : json(recording_))},
                   {"warning", result.value("warning", json())}}}};
    if (state == "success" || state == "incomplete") {
      if (!response.empty()) {
        turn.update({{"sessionUpdate", "agent_message_chunk"}, {"content", {{"type", "text"}, {"text", response}}}});
      }
      turn.finish(state == "success" ? "end_turn" : "max_turn_requests", meta);
    } else if (state == "cancelled") {
      turn.finish("cancelled", meta);
    } else {
      std::string message = result.contains("error") && result["error"].is_string() ? result["error"].get<std::string>()
                                                                                     : "the task failed";
      turn.fail(RpcError{rpc_code::kAdapterFailed, "openspace: " + message, meta["openspace"]});
    }
  }

  Expected<void> write_task_file(const std::string& text) {
    remove_task_file();
    auto path = write_temp_file("harnessd-task", text);
    if (!path) return path.error();
    task_file_ = *path;
    return {};
  }

  void remove_task_file() {
    if (!task_file_.empty()) ::unlink(task_file_.c_str());
    task_file_.clear();
  }

  acp::Loop& loop_;
  const OpenspaceOptions& options_;
  std::string cwd_;
  acp::Timer poll_;
  std::shared_ptr<BridgeTurn> turn_;
  ProcessSlot process_{loop_};
  std::vector<std::string> stdout_;
  std::string task_;
  std::string task_file_;
  std::string recording_;
  std::size_t offset_ = 0;
};

}  // namespace

Bridge make_openspace_bridge(acp::Loop& loop, OpenspaceOptions given) {
  return make_bridge("openspace", false, std::move(given),
                     [&loop](const OpenspaceOptions& options, const BridgeSessionSpec& spec)
                         -> Expected<std::unique_ptr<BridgeSession>, RpcError> {
                       return std::unique_ptr<BridgeSession>(new OpenspaceSession(loop, options, spec.cwd));
                     });
}

}  // namespace harnessd::harnesses
