// The link to one adapter: process, NDJSON framing, JSON-RPC, stderr.
#include "adapters/adapter_link.h"

#include <utility>

#include "acp/log.h"

namespace harnessd::adapters {

namespace {
constexpr std::size_t kMaxLoggedLine = 2000;
}

AdapterLink::AdapterLink(AdapterOptions options, std::function<void(const ExitStatus&)> on_exit)
    : options_(std::move(options)),
      on_exit_(std::move(on_exit)),
      splitter_(
          options_.max_line_bytes,
          [this](std::string_view line) { rpc_->receive_line(line); },
          [this](std::string_view prefix, std::size_t size) {
            rpc_->receive_overlong(prefix, size, options_.max_line_bytes);
          }) {}

AdapterLink::~AdapterLink() {
  if (rpc_) rpc_->close();
}

Expected<void> apply_limits(AdapterOptions& link, const ResourceLimits& limits, const std::string& name) {
  if (!limits.any()) return {};
  if (link.process.guard_exe.empty()) return Error{"limits need the guard, and harnessd runs with --no-guard"};
  auto cgroup = CgroupSupport::here().create(limits, name);
  if (!cgroup) return cgroup.error();
  link.process.join_cgroups = (*cgroup)->procs_files();
  link.cgroup = std::move(*cgroup);
  return {};
}

Expected<std::unique_ptr<AdapterLink>> AdapterLink::start(acp::Loop& loop, AdapterOptions options,
                                                          std::function<void(const ExitStatus&)> on_exit) {
  std::unique_ptr<AdapterLink> self(new AdapterLink(std::move(options), std::move(on_exit)));
  AdapterLink* raw = self.get();
  acp::ConnectionOptions copts;
  copts.peer = "adapter (" + raw->options_.label + ")";
  copts.repair_utf8 = true;
  copts.answer_malformed = false;
  raw->rpc_ = std::make_unique<acp::Connection>(copts, [raw](std::string line) {
    if (raw->line_tap_) raw->line_tap_(true, std::string_view(line).substr(0, line.size() - 1), true);
    if (raw->process_) raw->process_->write(std::move(line));
  });
  raw->rpc_->set_inbound_tap([raw](std::string_view line, bool is_json) {
    if (raw->line_tap_) raw->line_tap_(false, line, is_json);
  });

  Process::Callbacks callbacks;
  callbacks.on_stdout = [raw](std::string_view data) { raw->splitter_.feed(data); };
  callbacks.on_stderr = [raw](std::string_view data) { raw->on_stderr(data); };
  callbacks.on_exit = [raw](const ExitStatus& status) {
    raw->splitter_.finish();
    if (!raw->stderr_line_.empty()) raw->on_stderr("\n");
    raw->exit_ = status;
    acp::log::info(raw->options_.label + ": adapter exited with " + status.describe());
    raw->rpc_->close();  // pending calls fail now, with exit_status() set
    auto exit_handler = raw->on_exit_;  // a copy: the callback may replace it
    if (exit_handler) exit_handler(status);
  };
  callbacks.on_stdout_closed = [raw] {
    // Nothing more can come from it: no answer, no update. Fail what is
    // pending now, with the cause and the stderr it wrote so far.
    raw->process_->drain_stderr();
    raw->splitter_.finish();
    raw->output_closed_ = true;
    acp::log::warn(raw->options_.label + ": adapter closed its output but kept running");
    raw->rpc_->close();
    auto handler = raw->on_output_closed_;  // a copy: the callback may replace it
    if (handler) handler();
  };
  std::unique_ptr<Process> taken;
  if (Prestart* prestart = std::exchange(raw->options_.prestart, nullptr)) {
    taken = prestart->take(raw->options_.process, callbacks);
  }
  if (taken) {
    raw->process_ = std::move(taken);
  } else {
    auto process = Process::spawn(loop, raw->options_.process, std::move(callbacks));
    if (!process) return process.error();
    raw->process_ = std::move(*process);
  }
  if (raw->options_.output_gate) {
    raw->output_flow_ = raw->options_.output_gate->subscribe([raw](bool closed) { raw->process_->hold_stdout(closed); });
  }
  if (raw->options_.input_gate) {
    // The hold lives in the writer's callback: when stdin is closed (the
    // writer destroyed with its queue), the gate opens again.
    auto hold = std::make_shared<acp::FlowGate::Hold>(*raw->options_.input_gate);
    raw->process_->set_stdin_watermarks(
        raw->options_.input_high_water, raw->options_.input_low_water, [hold, label = raw->options_.label](bool over) {
          acp::log::debug(label + (over ? ": the adapter is behind on its input; holding the host's back"
                                        : ": the adapter caught up on its input"));
          hold->set(over);
        });
  }
  acp::log::info(raw->options_.label + ": started adapter " + raw->options_.process.argv[0] + " (pid " +
                 std::to_string(raw->process_->pid()) + ")");
  return self;
}

std::string AdapterLink::stderr_tail() const { return stderr_tail_; }

void AdapterLink::on_stderr(std::string_view data) {
  if (stderr_tap_) stderr_tap_(data);
  stderr_tail_.append(data);
  if (stderr_tail_.size() > options_.stderr_tail_bytes) {
    stderr_tail_.erase(0, stderr_tail_.size() - options_.stderr_tail_bytes);
  }
  // Each run's stderr.log keeps what the adapter said; harnessd's own log
  // repeats it only at debug level: a chatty adapter would drown the log,
  // and what a harness recording metadata only says stays out of it unless
  // asked for. Whole lines; a partial line waits for its end (bounded).
  // Nothing is built when debug lines are not logged.
  const bool logged = acp::log::level() <= acp::log::Level::kDebug;
  const auto log_line = [&](std::string_view line, bool cut) {
    if (!logged || line.empty()) return;
    std::string text = options_.label;
    text += ": adapter stderr: ";
    text += line.substr(0, kMaxLoggedLine);
    if (cut || line.size() > kMaxLoggedLine) text += "...";
    acp::log::debug(text);
  };
  stderr_line_.append(data);
  std::size_t start = 0, pos;
  while ((pos = stderr_line_.find('\n', start)) != std::string::npos) {
    log_line(std::string_view(stderr_line_).substr(start, pos - start), false);
    start = pos + 1;
  }
  stderr_line_.erase(0, start);
  if (stderr_line_.size() > kMaxLoggedLine) {
    log_line(stderr_line_, true);
    stderr_line_.clear();
  }
}

}  // namespace harnessd::adapters
