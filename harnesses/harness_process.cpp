// Harness processes for bridges.
#include "harnesses/harness_process.h"

#include <unistd.h>

#include <map>

#include "harnesses/profile.h"

namespace harnessd::harnesses {

namespace {
constexpr std::size_t kStderrTail = 8192;
constexpr std::size_t kMaxLine = 64u << 20;
}  // namespace

Expected<std::unique_ptr<HarnessProcess>> HarnessProcess::start(Loop& loop, adapters::ProcessSpec spec,
                                                                Callbacks callbacks) {
  std::unique_ptr<HarnessProcess> self(new HarnessProcess());
  HarnessProcess* raw = self.get();
  raw->callbacks_ = std::move(callbacks);
  if (raw->callbacks_.on_line) {
    raw->splitter_ = std::make_unique<LineSplitter>(
        kMaxLine, [raw](std::string_view line) { raw->callbacks_.on_line(line); },
        [](std::string_view, std::size_t) {});
  }
  adapters::Process::Callbacks cb;
  cb.on_stdout = [raw](std::string_view data) {
    if (raw->splitter_) {
      raw->splitter_->feed(data);
    } else if (raw->callbacks_.on_data) {
      raw->callbacks_.on_data(data);
    }
  };
  cb.on_stderr = [raw](std::string_view data) {
    // Echoed to our stderr, which harnessd captures and logs per session.
    ssize_t n = ::write(2, data.data(), data.size());
    (void)n;
    raw->stderr_tail_.append(data);
    if (raw->stderr_tail_.size() > kStderrTail) raw->stderr_tail_.erase(0, raw->stderr_tail_.size() - kStderrTail);
  };
  cb.on_exit = [raw](const adapters::ExitStatus& status) {
    if (raw->splitter_) raw->splitter_->finish();
    auto on_exit = raw->callbacks_.on_exit;
    if (on_exit) on_exit(status);
  };
  auto process = adapters::Process::spawn(loop, spec, std::move(cb));
  if (!process) return process.error();
  raw->process_ = std::move(*process);
  return self;
}

std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  auto add = [&](const std::string& entry) {
    auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  };
  for (const auto& e : current_environment()) add(e);
  for (const auto& e : extra) add(e);
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

}  // namespace harnessd::harnesses
