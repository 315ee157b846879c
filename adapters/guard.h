// The guard: a tiny process that leads each adapter's process group and
// makes sure the whole adapter tree dies with harnessd, even on SIGKILL.
#pragma once

#include <signal.h>

namespace harnessd::adapters {

/// The argument that selects guard mode: `harnessd __guard <ppid> -- argv...`.
inline constexpr const char* kGuardArg = "__guard";

/// Sent by the parent to the guard alone: kill the whole tree now (the
/// adapter, its group and every process the guard adopted), then die of
/// SIGKILL. The parent's last step of the kill ladder, so that nothing of
/// the tree is orphaned by a SIGKILL that reaches the guard first.
inline constexpr int kKillTreeSignal = SIGUSR1;

/// Runs the guard. `argv` is the full command line starting with the
/// program name. It forks the adapter, waits for it, and on its exit (or on
/// harnessd's death) kills what is left of the tree, then exits with the
/// adapter's status. Never returns.
[[noreturn]] void guard_main(int argc, char** argv);

}  // namespace harnessd::adapters
