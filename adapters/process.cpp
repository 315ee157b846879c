// Spawning adapter trees through the guard, draining their output before
// reporting the exit (neovim's rule: read everything, then close), and the
// SIGTERM-then-SIGKILL ladder on the whole process group.
//
// The guard is started with posix_spawn, not uv_spawn: glibc's posix_spawn
// shares the parent's memory until the exec (clone with CLONE_VM and
// CLONE_VFORK), where libuv forks. A fork copies the page tables of a
// daemon with a dozen threads and a grown heap, and leaves every page of it
// copy-on-write: each first write afterwards, on any thread, faults and
// flushes the TLB of every CPU the process runs on. The exit is watched on
// a pidfd, so no SIGCHLD handler is needed.
#include "adapters/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>

#include "acp/log.h"
#include "adapters/guard.h"
#include "adapters/tree_sweep.h"

namespace harnessd::adapters {

namespace {
// How long to wait for stdout/stderr EOF after the exit before giving up
// (a descendant outside the group might hold the pipe open).
constexpr std::chrono::milliseconds kDrainLimit{500};

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string current_dir() {
  char buf[4096];
  return ::getcwd(buf, sizeof buf) ? std::string(buf) : std::string("/");
}

std::string errno_text(int err) { return std::strerror(err); }

// Through syscall(2): glibc 2.36's <sys/pidfd.h> declares pidfd_open
// without C linkage.
int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// A connected pair for one of the child's standard streams, as libuv makes
// them (a socket pair), both ends close-on-exec. The child's end is kept
// above 2, so that no dup2 onto 0, 1 or 2 overwrites another stream's end
// (the parent may have been started with those closed).
struct StdioPair {
  int ours = -1;
  int theirs = -1;
  ~StdioPair() {
    if (ours >= 0) ::close(ours);
    if (theirs >= 0) ::close(theirs);
  }
  int open() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno;
    ours = sv[0];
    theirs = sv[1];
    for (int* fd : {&ours, &theirs}) {
      if (*fd > 2) continue;
      int high = ::fcntl(*fd, F_DUPFD_CLOEXEC, 3);
      if (high < 0) return errno;
      ::close(*fd);
      *fd = high;
    }
    return 0;
  }
  int release_ours() { return std::exchange(ours, -1); }
};

ExitStatus exit_status_of(const siginfo_t& info) {
  ExitStatus status;
  if (info.si_code == CLD_EXITED) {
    status.code = info.si_status;
  } else {
    status.signal = info.si_status;
  }
  return status;
}
}  // namespace

/// The child of a Process until it is reaped: a pidfd watched on the loop.
/// Deleted when the child is reaped; a Process destroyed before that leaves
/// it behind with no owner.
struct Process::Child {
  uv_poll_t poll{};
  int pidfd = -1;
  pid_t pid = 0;
  Process* owner = nullptr;
  bool sweep_orphans = false;  // for an ownerless child: sweep on its exit

  static void on_readable(uv_poll_t* handle, int, int) noexcept {
    auto* self = static_cast<Child*>(handle->data);
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(self->pidfd), &info, WEXITED | WNOHANG) != 0) {
      if (errno == EINTR) return;
      // ECHILD: reaped elsewhere (nothing of ours waits for any child);
      // its status is lost. Reported as a kill, which it most likely was.
      acp::log::warn("adapter " + std::to_string(self->pid) + ": cannot read its exit: " + errno_text(errno));
      info.si_code = CLD_KILLED;
      info.si_status = SIGKILL;
    } else if (info.si_pid == 0) {
      return;  // not yet exited
    }
    self->reaped(exit_status_of(info));
  }

  static void on_closed(uv_handle_t* handle) noexcept {
    auto* self = static_cast<Child*>(handle->data);
    ::close(self->pidfd);
    delete self;
  }

  void reaped(const ExitStatus& status) {
    disown_child(pid);
    uv_poll_stop(&poll);
    Process* was_owner = owner;
    const pid_t leader = pid;
    const bool sweep = sweep_orphans;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), &Child::on_closed);
    if (was_owner) {
      was_owner->child_ = nullptr;
      on_child_exit(was_owner, status);
      return;
    }
    // The owner is gone and killed the group with SIGKILL, guard included;
    // sweep what the guard could not.
    if (int n = sweep_tree(leader, sweep); n > 0) {
      acp::log::info("adapter group " + std::to_string(leader) + ": killed " + std::to_string(n) +
                     " processes its guard left");
    }
  }
};

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
  if (child_ && pid_ > 0) {
    // Still running: kill the tree, and let the watch reap the child later
    // instead of leaving a zombie. The SIGKILL reaches the guard before it
    // can clean up, so the watch sweeps what is left.
    ::kill(-pid_, SIGKILL);
    child_->owner = nullptr;
    child_->sweep_orphans = sweep_orphans_;
    child_ = nullptr;
  }
}

/// A start between its checks and its exec, and the exec's result.
class Process::Launch {
 public:
  ~Launch() { wait(); }
  /// Waits for the exec when it runs on its own thread.
  void wait() {
    if (thread.joinable()) thread.join();
  }
  void exec();

  std::string name;  // as the profile gives it, for messages
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd;
  StdioPair stdio[3];
  bool guarded = false;
  bool sweep_orphans = false;
  pid_t pid = 0;
  int err = 0;  // posix_spawn's
  std::thread thread;
};

namespace {

Expected<Process::PendingStart> prepare(const ProcessSpec& spec) {
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
  Process::PendingStart launch(new Process::Launch());
  for (auto& pair : launch->stdio) {
    if (int err = pair.open(); err != 0) return Error{"cannot create a pipe: " + errno_text(err)};
  }
  launch->name = spec.argv[0];
  if (!spec.guard_exe.empty()) {
    launch->args = {spec.guard_exe, kGuardArg, std::to_string(::getpid())};
    for (const auto& file : spec.join_cgroups) {
      launch->args.push_back("--join");
      launch->args.push_back(file);
    }
    launch->args.push_back("--");
  }
  launch->args.push_back(*program);
  launch->args.insert(launch->args.end(), spec.argv.begin() + 1, spec.argv.end());
  launch->env = spec.env;
  launch->cwd = spec.cwd;
  launch->guarded = !spec.guard_exe.empty();
  launch->sweep_orphans = spec.sweep_orphans;
  return launch;
}

}  // namespace

void Process::Launch::exec() {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  // The child gets its ends as 0, 1 and 2 (dup2 clears close-on-exec) and
  // no other descriptor,
  // starts in cwd, leads a new session and process group (setsid), so that
  // the group can be signalled as a whole, and starts with no signal
  // blocked and every signal at its default: harnessd ignores SIGPIPE.
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  for (int i = 0; i < 3; ++i) posix_spawn_file_actions_adddup2(&actions, stdio[i].theirs, i);
  // Nothing else: a descriptor a host left open across exec (a pipe it
  // waits to see closed) must not live on in the adapter tree.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  err = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (auto& pair : stdio) {
    ::close(pair.theirs);
    pair.theirs = -1;
  }
}

Expected<std::unique_ptr<Process>> Process::spawn(acp::Loop& loop, const ProcessSpec& spec, Callbacks callbacks) {
  auto launch = prepare(spec);
  if (!launch) return std::move(launch).error();
  (*launch)->exec();
  return finish(loop, std::move(*launch), std::move(callbacks));
}

void Process::LaunchDeleter::operator()(Launch* launch) const { delete launch; }

Expected<Process::PendingStart> Process::launch(const ProcessSpec& spec, std::function<void()> on_launched) {
  auto launch = prepare(spec);
  if (!launch) return launch;
  Launch* raw = launch->get();
  auto exec_and_tell = [raw, on_launched = std::move(on_launched)] {
    raw->exec();
    if (on_launched) on_launched();
  };
  try {
    raw->thread = std::thread([exec_and_tell] {
      // Signals are the loop's to take, never this thread's.
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      exec_and_tell();
    });
  } catch (const std::system_error&) {
    exec_and_tell();  // no thread to be had: the exec is waited for here
  }
  return launch;
}

Expected<std::unique_ptr<Process>> Process::finish(acp::Loop& loop, PendingStart launch, Callbacks callbacks) {
  launch->wait();
  if (launch->err != 0) return Error{"cannot start '" + launch->name + "': " + errno_text(launch->err)};
  std::unique_ptr<Process> self(new Process(loop, std::move(callbacks)));
  const pid_t pid = launch->pid;
  auto& stdio = launch->stdio;
  const std::string& name = launch->name;

  // A pidfd can be opened while the child is a zombie: only we reap it.
  auto* child = new Child;
  child->pid = pid;
  child->owner = self.get();
  child->pidfd = open_pidfd(pid);
  int rc = child->pidfd < 0 ? -errno : uv_poll_init(loop.get(), &child->poll, child->pidfd);
  if (rc != 0) {
    // Without a watch there would be no exit to report: stop it now.
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    if (child->pidfd >= 0) ::close(child->pidfd);
    delete child;
    return Error{"cannot watch '" + name + "': " + acp::uv_error_text(rc)};
  }
  child->poll.data = child;
  if (rc = uv_poll_start(&child->poll, UV_READABLE, &Child::on_readable); rc != 0) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    uv_close(reinterpret_cast<uv_handle_t*>(&child->poll), &Child::on_closed);
    return Error{"cannot watch '" + name + "': " + acp::uv_error_text(rc)};
  }
  own_child(pid);
  self->child_ = child;
  self->pid_ = pid;
  self->guarded_ = launch->guarded;
  self->sweep_orphans_ = launch->sweep_orphans;

  acp::UvHandle<uv_pipe_t> pipes[3];
  for (int i = 0; i < 3; ++i) {
    auto* raw = new uv_pipe_t;
    if (int prc = uv_pipe_init(loop.get(), raw, 0); prc != 0) {
      delete raw;
      return Error{"cannot create a pipe: " + acp::uv_error_text(prc)};
    }
    pipes[i].reset(raw);
    if (int prc = uv_pipe_open(raw, stdio[i].ours); prc != 0) {
      return Error{"cannot open a pipe: " + acp::uv_error_text(prc)};
    }
    stdio[i].release_ours();
  }

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

void Process::on_child_exit(Process* self, const ExitStatus& status) {
  self->exited_ = true;
  self->status_ = status;
  self->kill_timer_.stop();
  self->eof_timer_.stop();
  const int term_signal = status.signal;
  const bool guard_cleaned_up = (term_signal == SIGTERM && self->sent_term_) ||
                                (term_signal == SIGKILL && self->sent_kill_tree_);
  if (term_signal != 0 && !guard_cleaned_up) {
    // Killed by someone else (the adapter may SIGKILL its own guard), or
    // the guard re-raised the adapter's own signal after cleaning up: in
    // the first case only harnessd can still stop the tree's escapees; in
    // the second the sweep finds nothing and costs one /proc scan.
    if (int n = sweep_tree(self->pid_, self->sweep_orphans_); n > 0) {
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
  // A guard takes the signal once its adapter exists and passes it to the
  // group (see guard.cpp); SIGKILL cannot wait, and the guard dies of it.
  ::kill(guarded_ && signum != SIGKILL ? pid_ : -pid_, signum);
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
