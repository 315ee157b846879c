// Spawning adapter trees through the guard, draining their output before
// reporting the exit (neovim's rule: read everything, then close), and the
// SIGTERM-then-SIGKILL ladder on the whole process group.
#include "adapters/process.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "acp/log.h"
#include "adapters/guard.h"
#include "adapters/tree_sweep.h"

namespace harnessd::adapters {

namespace {
// How long to wait for stdout/stderr EOF after the exit before giving up
// (a descendant outside the group might hold the pipe open).
constexpr std::chrono::milliseconds kDrainLimit{500};

// The data of a process handle whose owner is gone: a null pointer, or the
// address of this tag when the exit must also sweep the tree's orphans.
const char kOwnerlessSweepOrphans = 0;

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string current_dir() {
  char buf[4096];
  return ::getcwd(buf, sizeof buf) ? std::string(buf) : std::string("/");
}
}  // namespace

std::vector<std::string> current_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

std::string self_executable() {
  char buf[4096];
  size_t size = sizeof buf;
  if (uv_exepath(buf, &size) != 0) return {};
  return std::string(buf, size);
}

std::string default_guard_exe() {
  std::string self = self_executable();
  if (self.empty()) return {};
  std::string sibling = self.substr(0, self.rfind('/') + 1) + "harnessd-guard";
  return ::access(sibling.c_str(), X_OK) == 0 ? sibling : self;
}

std::string ExitStatus::describe() const {
  if (signal != 0) {
    const char* name = ::strsignal(signal);
    return "signal " + std::to_string(signal) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "exit code " + std::to_string(code);
}

Expected<std::string> find_executable(const std::string& name, const std::string& path) {
  if (name.empty()) return Error{"the command is empty"};
  if (name.find('/') != std::string::npos) {
    std::string full = name.front() == '/' ? name : current_dir() + "/" + name;
    if (is_executable_file(full)) return full;
    return Error{"'" + name + "' is not an executable file"};
  }
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    if (dir.front() != '/') dir = current_dir() + "/" + dir;
    std::string full = dir + "/" + name;
    if (is_executable_file(full)) return full;
    start = end + 1;
  }
  return Error{"'" + name + "' was not found on PATH"};
}

Process::Process(acp::Loop& loop, Callbacks callbacks)
    : loop_(loop), callbacks_(std::move(callbacks)), kill_timer_(loop), drain_timer_(loop), eof_timer_(loop) {}

Process::~Process() {
  if (handle_ && !exited_ && pid_ > 0) {
    // Still running: kill the tree, and let the exit callback close the
    // handle later so the child is reaped instead of left a zombie. The
    // SIGKILL reaches the guard before it can clean up, so that callback
    // sweeps what is left (data == nullptr says so).
    ::kill(-pid_, SIGKILL);
    uv_process_t* h = handle_.release();
    h->data = sweep_orphans_ ? const_cast<char*>(&kOwnerlessSweepOrphans) : nullptr;
  }
}

Expected<std::unique_ptr<Process>> Process::spawn(acp::Loop& loop, const ProcessSpec& spec, Callbacks callbacks) {
  if (spec.argv.empty()) return Error{"the command is empty"};
  std::string path_var;
  for (const auto& e : spec.env) {
    if (e.rfind("PATH=", 0) == 0) path_var = e.substr(5);
  }
  auto program = find_executable(spec.argv[0], path_var);
  if (!program) return program.error();
  struct stat st {};
  if (::stat(spec.cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Error{"the working directory '" + spec.cwd + "' does not exist"};
  }

  std::unique_ptr<Process> self(new Process(loop, std::move(callbacks)));

  acp::UvHandle<uv_pipe_t> pipes[3];
  for (auto& p : pipes) {
    auto* raw = new uv_pipe_t;
    if (int rc = uv_pipe_init(loop.get(), raw, 0); rc != 0) {
      delete raw;
      return Error{"cannot create a pipe: " + acp::uv_error_text(rc)};
    }
    p.reset(raw);
  }

  std::vector<std::string> args;
  std::string parent_pid = std::to_string(::getpid());
  if (!spec.guard_exe.empty()) args = {spec.guard_exe, kGuardArg, parent_pid, "--"};
  args.push_back(*program);
  args.insert(args.end(), spec.argv.begin() + 1, spec.argv.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = spec.env;
  std::vector<char*> envp;
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);

  uv_stdio_container_t stdio[3];
  stdio[0].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE);
  stdio[0].data.stream = reinterpret_cast<uv_stream_t*>(pipes[0].get());
  for (int i = 1; i < 3; ++i) {
    stdio[i].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[i].data.stream = reinterpret_cast<uv_stream_t*>(pipes[i].get());
  }

  uv_process_options_t options{};
  options.exit_cb = &Process::on_process_exit;
  options.file = argv[0];
  options.args = argv.data();
  options.env = envp.data();
  options.cwd = spec.cwd.c_str();
  // DETACHED: the child calls setsid(), so the guard leads a new process
  // group that can be signalled as a whole.
  options.flags = UV_PROCESS_DETACHED;
  options.stdio_count = 3;
  options.stdio = stdio;

  auto* handle = new uv_process_t;
  handle->data = self.get();
  int rc = uv_spawn(loop.get(), handle, &options);
  self->handle_.reset(handle);  // closed through the deleter even when spawn failed
  if (rc != 0) {
    self->exited_ = true;
    return Error{"cannot start '" + spec.argv[0] + "': " + acp::uv_error_text(rc)};
  }
  self->pid_ = handle->pid;
  self->guarded_ = !spec.guard_exe.empty();
  self->sweep_orphans_ = spec.sweep_orphans;

  Process* raw = self.get();
  self->stdin_ = acp::make_pipe_writer(std::move(pipes[0]));
  self->stdin_->on_error([raw](int status) {
    acp::log::debug("adapter " + std::to_string(raw->pid_) + " stdin: " + acp::uv_error_text(status));
  });
  self->stdout_ = acp::make_pipe_reader(std::move(pipes[1]));
  self->stderr_ = acp::make_pipe_reader(std::move(pipes[2]));
  self->stdout_->start(
      [raw](std::string_view data) {
        if (raw->callbacks_.on_stdout) raw->callbacks_.on_stdout(data);
      },
      [raw](int) {
        raw->stdout_done_ = true;
        if (!raw->exited_) {
          // EOF with the child still running. A child that closes its
          // output on the way out exits within the drain limit and is
          // reported by its exit; one that keeps running never will be.
          raw->eof_timer_.start(kDrainLimit, [raw] {
            if (raw->exited_ || !raw->callbacks_.on_stdout_closed) return;
            raw->callbacks_.on_stdout_closed();
          });
        }
        raw->maybe_finish();
      });
  self->stderr_->start(
      [raw](std::string_view data) {
        if (raw->callbacks_.on_stderr) raw->callbacks_.on_stderr(data);
      },
      [raw](int) {
        raw->stderr_done_ = true;
        raw->maybe_finish();
      });
  return self;
}

void Process::on_process_exit(uv_process_t* handle, int64_t exit_status, int term_signal) noexcept {
  if (!handle->data || handle->data == &kOwnerlessSweepOrphans) {
    // The owner is gone and killed the group with SIGKILL, guard included;
    // sweep what the guard could not. The child is reaped, so the handle can go.
    if (int n = sweep_tree(handle->loop, handle->pid, handle->data != nullptr); n > 0) {
      acp::log::info("adapter group " + std::to_string(handle->pid) + ": killed " + std::to_string(n) +
                     " processes its guard left");
    }
    uv_close(reinterpret_cast<uv_handle_t*>(handle),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    return;
  }
  auto* self = static_cast<Process*>(handle->data);
  self->exited_ = true;
  self->status_.code = exit_status;
  self->status_.signal = term_signal;
  self->kill_timer_.stop();
  self->eof_timer_.stop();
  const bool guard_cleaned_up = (term_signal == SIGTERM && self->sent_term_) ||
                                (term_signal == SIGKILL && self->sent_kill_tree_);
  if (term_signal != 0 && !guard_cleaned_up) {
    // Killed by someone else (the adapter may SIGKILL its own guard), or
    // the guard re-raised the adapter's own signal after cleaning up: in
    // the first case only harnessd can still stop the tree's escapees; in
    // the second the sweep finds nothing and costs one /proc scan.
    if (int n = sweep_tree(handle->loop, self->pid_, self->sweep_orphans_); n > 0) {
      acp::log::warn("adapter group " + std::to_string(self->pid_) + " ended by " + self->status_.describe() +
                     "; killed " + std::to_string(n) + " processes left of its tree");
    }
  }
  if (self->stdout_held_ && self->stdout_) self->stdout_->resume();
  self->drain_timer_.start(kDrainLimit, [self] {
    self->stdout_done_ = true;
    self->stderr_done_ = true;
    self->maybe_finish();
  });
  self->maybe_finish();
}

void Process::maybe_finish() {
  if (finished_ || !exited_ || !stdout_done_ || !stderr_done_) return;
  finished_ = true;
  drain_timer_.stop();
  if (stdout_) stdout_->pause();
  if (stderr_) stderr_->pause();
  if (callbacks_.on_exit) callbacks_.on_exit(status_);
}

void Process::write(std::string data) {
  if (stdin_) stdin_->write(std::move(data));
}

void Process::hold_stdout(bool hold) {
  stdout_held_ = hold;
  if (!stdout_ || finished_) return;
  if (hold && !exited_) {
    stdout_->pause();
  } else if (!hold) {
    stdout_->resume();
  }
}

void Process::set_stdin_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn) {
  if (stdin_) stdin_->set_watermarks(high, low, std::move(fn));
}

void Process::drain_stderr() {
  if (stderr_) stderr_->drain();
}

void Process::close_stdin() {
  // Posted: close_stdin may be called from inside a write-error callback of
  // this very writer.
  if (!stdin_) return;
  loop_.post([w = std::move(stdin_)]() mutable { w.reset(); });
}

void Process::signal_group(int signum) {
  if (pid_ <= 0 || exited_) return;
  if (signum == SIGTERM) sent_term_ = true;
  ::kill(-pid_, signum);
}

void Process::terminate(std::chrono::milliseconds kill_grace) {
  if (exited_) return;
  close_stdin();
  signal_group(SIGTERM);
  if (!kill_timer_.active()) {
    kill_timer_.start(kill_grace, [this] {
      if (exited_) return;
      if (!guarded_) {
        acp::log::info("adapter group " + std::to_string(pid_) + " still running after SIGTERM; sending SIGKILL");
        signal_group(SIGKILL);
        return;
      }
      // The guard kills the tree and dies last, so its exit means all is
      // gone, processes outside the group included. SIGKILL to the group
      // only if the guard itself does not answer.
      acp::log::info("adapter group " + std::to_string(pid_) +
                     " still running after SIGTERM; sending SIGKILL through its guard");
      sent_kill_tree_ = true;
      ::kill(pid_, kKillTreeSignal);
      kill_timer_.start(std::chrono::seconds(3), [this] {
        acp::log::warn("adapter group " + std::to_string(pid_) + ": the guard did not end its tree; sending SIGKILL");
        signal_group(SIGKILL);
      });
    });
  }
}

}  // namespace harnessd::adapters
