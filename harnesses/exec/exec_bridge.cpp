// The exec bridge. One process per prompt: the exit code decides success,
// a cancel is the signal ladder on the command's process group.
#include "harnesses/exec/exec_bridge.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acp/log.h"
#include "acp/utf8.h"
#include "harnesses/harness_process.h"
#include "schema/json_parse.h"

namespace harnessd::harnesses {

using nlohmann::json;

namespace {

json chunk(const std::string& text) {
  return {{"sessionUpdate", "agent_message_chunk"}, {"content", {{"type", "text"}, {"text", text}}}};
}

// The value at a dotted path ("a.b.c") of a JSON object, if it is a string.
std::optional<std::string> field_at(const json& j, const std::string& path) {
  const json* cur = &j;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t dot = path.find('.', start);
    std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object() || !cur->contains(key)) return std::nullopt;
    cur = &(*cur)[key];
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (!cur->is_string()) return std::nullopt;
  return cur->get<std::string>();
}

class ExecSession final : public BridgeSession {
 public:
  ExecSession(acp::Loop& loop, const ExecOptions& options, std::string cwd)
      : loop_(loop), options_(options), cwd_(std::move(cwd)) {}

  ~ExecSession() override { remove_prompt_file(); }

  void prompt(const json& blocks, std::shared_ptr<BridgeTurn> turn) override {
    turn_ = std::move(turn);
    std::string text = prompt_text(blocks);
    std::vector<std::string> argv = options_.command;
    if (options_.input == "file") {
      auto path = write_prompt_file(text);
      if (!path) return turn_->fail(RpcError::internal("cannot write the prompt file: " + path.error().message));
      bool substituted = false;
      for (auto& a : argv) {
        for (auto pos = a.find("{prompt_file}"); pos != std::string::npos; pos = a.find("{prompt_file}")) {
          a.replace(pos, 13, *path);
          substituted = true;
        }
      }
      if (!substituted) argv.push_back(*path);
    }
    adapters::ProcessSpec spec;
    spec.argv = argv;
    spec.cwd = cwd_;
    spec.env = environment_with({});
    spec.guard_exe = adapters::default_guard_exe();
    HarnessProcess::Callbacks cb;
    if (options_.output == "jsonl") {
      cb.on_line = [this](std::string_view line) { on_json_line(line); };
    } else {
      cb.on_data = [this](std::string_view data) { on_text(data); };
    }
    cb.on_exit = [this](const adapters::ExitStatus& status) { on_exit(status); };
    auto process = HarnessProcess::start(loop_, spec, std::move(cb));
    if (!process) {
      return turn_->fail(RpcError{rpc_code::kHarnessUnavailable, "cannot run the command: " + process.error().message,
                                  {{"command", options_.command}}});
    }
    process_.hold(std::move(*process));
    if (options_.input == "stdin") process_->write(text);
    process_->close_stdin();
  }

  void cancel() override { process_.terminate(options_.kill_grace); }

  void close(std::function<void()> done) override { process_.close(options_.kill_grace, std::move(done)); }

 private:
  void on_text(std::string_view data) {
    // Relay whole characters only; a multi-byte character split across two
    // reads waits for its end.
    pending_.append(data);
    std::size_t n = acp::utf8::safe_cut(pending_, pending_.size());
    if (n < pending_.size() && pending_.size() - n > 3) n = pending_.size();  // not UTF-8 at all: let it go
    if (n == 0) return;
    if (turn_) turn_->update(chunk(pending_.substr(0, n)));
    pending_.erase(0, n);
  }

  void on_json_line(std::string_view line) {
    json j = schema::parse_or_discard(line);
    if (j.is_discarded()) {
      acp::log::debug("exec bridge: a stdout line is not JSON; skipped");
      return;
    }
    if (auto text = field_at(j, options_.field); text && turn_) turn_->update(chunk(*text));
  }

  void on_exit(const adapters::ExitStatus& status) {
    if (!pending_.empty() && turn_) turn_->update(chunk(pending_));
    pending_.clear();
    remove_prompt_file();
    if (turn_) {
      if (status.signal == 0 && status.code == 0) {
        turn_->finish("end_turn");
      } else {
        turn_->fail(RpcError{rpc_code::kAdapterFailed, "the command failed (" + status.describe() + ")",
                             exit_error_data(status, process_->stderr_tail())});
      }
      turn_.reset();
    }
    process_.release();
  }

  Expected<std::string> write_prompt_file(const std::string& text) {
    remove_prompt_file();
    auto path = write_temp_file("harnessd-prompt", text);
    if (path) prompt_file_ = *path;
    return path;
  }

  void remove_prompt_file() {
    if (!prompt_file_.empty()) ::unlink(prompt_file_.c_str());
    prompt_file_.clear();
  }

  acp::Loop& loop_;
  const ExecOptions& options_;
  std::string cwd_;
  std::shared_ptr<BridgeTurn> turn_;
  ProcessSlot process_{loop_};
  std::string pending_;
  std::string prompt_file_;
};

}  // namespace

Bridge make_exec_bridge(acp::Loop& loop, ExecOptions given) {
  return make_bridge("exec", false, std::move(given),
                     [&loop](const ExecOptions& options, const BridgeSessionSpec& spec)
                         -> Expected<std::unique_ptr<BridgeSession>, RpcError> {
                       return std::unique_ptr<BridgeSession>(new ExecSession(loop, options, spec.cwd));
                     });
}

}  // namespace harnessd::harnesses
