// Harness processes for bridges.
#include "harnesses/harness_process.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>


namespace harnessd::harnesses {

namespace {
constexpr std::size_t kStderrTail = 8192;
constexpr std::size_t kMaxLine = 64u << 20;
}  // namespace

Expected<std::unique_ptr<HarnessProcess>> HarnessProcess::start(acp::Loop& loop, adapters::ProcessSpec spec,
                                                                Callbacks callbacks) {
  std::unique_ptr<HarnessProcess> self(new HarnessProcess());
  HarnessProcess* raw = self.get();
  raw->callbacks_ = std::move(callbacks);
  if (raw->callbacks_.on_line) {
    raw->splitter_ = std::make_unique<acp::LineSplitter>(
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

void ProcessSlot::close(std::chrono::milliseconds grace, std::function<void()> done) {
  if (!running()) return done();
  on_gone_ = std::move(done);
  process_->terminate(grace);
}

void ProcessSlot::release() {
  loop_.post([this, p = std::move(process_)]() mutable {
    p.reset();
    if (on_gone_) {
      auto done = std::move(on_gone_);
      on_gone_ = nullptr;
      done();
    }
  });
}

nlohmann::json exit_error_data(const adapters::ExitStatus& status, const std::string& stderr_tail) {
  nlohmann::json data = {{"stderrTail", stderr_tail}};
  if (status.signal) {
    data["signal"] = status.signal;
  } else {
    data["exitCode"] = status.code;
  }
  return data;
}

Expected<std::string> write_temp_file(const std::string& prefix, const std::string& text) {
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  int fd = ::mkstemp(path.data());
  if (fd < 0) return Error{std::strerror(errno)};
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n <= 0) {
      int saved = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlink(path.c_str());
      return Error{std::strerror(saved)};
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::close(fd);
  return path;
}

std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  auto add = [&](const std::string& entry) {
    auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  };
  for (const auto& e : adapters::current_environment()) add(e);
  for (const auto& e : extra) add(e);
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

}  // namespace harnessd::harnesses
