// Process: one adapter process tree, spawned through the guard in its own
// process group, with its stdio on pipes and a kill ladder.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "acp/loop.h"
#include "acp/stream.h"
#include "acp/uv_handle.h"
#include "schema/expected.h"

namespace harnessd::adapters {

struct ProcessSpec {
  /// The command; argv[0] is looked up on the PATH of `env` unless it
  /// contains a slash. Never run through a shell.
  std::vector<std::string> argv;
  /// Absolute working directory; must exist.
  std::string cwd;
  /// The complete environment, as NAME=value strings.
  std::vector<std::string> env;
  /// The harnessd executable that runs the guard (`harnessd __guard`). Empty
  /// means no guard: the adapter itself leads its process group and dies
  /// with harnessd, but its own children may not.
  std::string guard_exe;
  /// When the guard dies without cleaning up, also kill and reap every
  /// child of this process that no process handle of the loop owns: the
  /// tree's orphans, handed to us because harnessd is a child subreaper.
  /// Only for a process whose children all come from its loop.
  bool sweep_orphans = false;
  /// cgroup.procs files the guard writes its pid to before it starts the
  /// adapter (the tree's limits); only with a guard.
  std::vector<std::string> join_cgroups;

  bool operator==(const ProcessSpec&) const = default;
};

struct ExitStatus {
  std::int64_t code = 0;  // exit code when signal == 0
  int signal = 0;         // terminating signal, or 0
  /// "exit code 3" or "signal 9 (Killed)".
  std::string describe() const;
};

/// The guard program next to the running executable (harnessd-guard), or
/// the running executable itself (which has a guard mode) when it is
/// missing.
std::string default_guard_exe();

/// The path of the running executable, or empty if it cannot be found.
std::string self_executable();

/// The environment of this process as NAME=value strings.
std::vector<std::string> current_environment();

/// Looks `name` up on `path` (colon-separated) as execvp would. Returns the
/// absolute path of an executable file, or an error naming what is missing.
Expected<std::string> find_executable(const std::string& name, const std::string& path);

/// Ownership: the owner keeps the Process until on_exit has fired. Its
/// callbacks run on the loop thread and must not destroy the Process
/// synchronously (post the destruction). Destroying a Process whose child
/// still runs kills the group with SIGKILL and reaps it in the background.
class Process {
 public:
  struct Callbacks {
    std::function<void(std::string_view)> on_stdout;
    std::function<void(std::string_view)> on_stderr;
    /// Fires once, after the child has exited and its stdout and stderr
    /// have been drained to EOF (or a short drain limit passed).
    std::function<void(const ExitStatus&)> on_exit;
    /// Fires at most once, when stdout reached EOF and the child had still
    /// not exited after the drain limit: it closed its output but keeps
    /// running, so nothing more can come from it. The owner decides (an
    /// adapter is stopped with terminate()); on_exit still follows. A child
    /// that exits within the limit after its EOF is reported by on_exit only.
    std::function<void()> on_stdout_closed;
  };

  static Expected<std::unique_ptr<Process>> spawn(acp::Loop& loop, const ProcessSpec& spec, Callbacks callbacks);

  /// A start in two halves, for a caller that must not wait for the exec.
  /// posix_spawn returns only once the child has exec'd (the parent sleeps
  /// meanwhile), and the scheduler then tends to leave the parent waiting
  /// behind its new child on the same CPU: on the machines harnessd runs
  /// on, a millisecond or more of the loop's time. launch() checks the
  /// command and makes the pipes (errors are returned at once), then execs
  /// on a thread of its own; `on_launched`, if given, runs on that thread
  /// once the exec is done. finish() (loop thread) waits for the exec if it
  /// still runs and returns the Process, or why it could not start.
  class Launch;
  struct LaunchDeleter {
    void operator()(Launch* launch) const;  // waits for the exec
  };
  using PendingStart = std::unique_ptr<Launch, LaunchDeleter>;
  static Expected<PendingStart> launch(const ProcessSpec& spec, std::function<void()> on_launched);
  static Expected<std::unique_ptr<Process>> finish(acp::Loop& loop, PendingStart launch, Callbacks callbacks);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  /// The pid of the group leader (the guard, or the adapter without one).
  int pid() const { return pid_; }
  bool exited() const { return exited_; }

  /// Writes to the child's stdin; dropped after close_stdin().
  void write(std::string data);
  /// Closes the child's stdin (it reads EOF).
  void close_stdin();
  /// Backpressure: stops reading the child's stdout (it blocks on its own
  /// write once the pipe is full) until called with false. Once the child
  /// has exited, its stdout is read to the end regardless: the pipe holds at
  /// most its capacity, and the last words must not be lost.
  void hold_stdout(bool hold);
  /// Backpressure the other way: see Writer::set_watermarks, for stdin.
  void set_stdin_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn);
  /// Reads at once what the child has already written to stderr.
  void drain_stderr();
  /// Sends `signum` to the whole process group: through the guard when
  /// there is one, so that an adapter it has not forked yet still gets it.
  void signal_group(int signum);
  /// The kill ladder's last steps: close stdin, SIGTERM the group, and
  /// SIGKILL it if it has not exited after `kill_grace`.
  ///
  /// A guard that dies of a signal harnessd did not send to end it (the
  /// adapter, same uid, may SIGKILL it) cleaned up nothing; its exit then
  /// sweeps what is left of the tree (see tree_sweep.h) before on_exit.
  void terminate(std::chrono::milliseconds kill_grace);

 private:
  struct Child;

  Process(acp::Loop& loop, Callbacks callbacks);
  static void on_child_exit(Process* self, const ExitStatus& status);
  void maybe_finish();

  acp::Loop& loop_;
  Callbacks callbacks_;
  // Watches the child until it is reaped, and outlives a Process destroyed
  // before that; null once the child is reaped.
  Child* child_ = nullptr;
  std::unique_ptr<acp::Writer> stdin_;
  std::unique_ptr<acp::Reader> stdout_;
  std::unique_ptr<acp::Reader> stderr_;
  acp::Timer kill_timer_;
  acp::Timer drain_timer_;
  acp::Timer eof_timer_;
  int pid_ = 0;
  bool stdout_held_ = false;
  bool guarded_ = false;  // pid_ is the guard, which can kill the tree itself
  bool sweep_orphans_ = false;
  bool exited_ = false;
  bool stdout_done_ = false;
  bool stderr_done_ = false;
  bool finished_ = false;
  // Signals whose death of the guard means that the guard cleaned up: the
  // SIGTERM harnessd sent the group (the guard re-raises the adapter's
  // death) and the SIGKILL the guard gives itself after kill-tree.
  bool sent_term_ = false;
  bool sent_kill_tree_ = false;
  ExitStatus status_;
};

}  // namespace harnessd::adapters
