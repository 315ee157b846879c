// The guard: a tiny process that leads each adapter's process group and
// makes sure the whole adapter tree dies with harnessd, even on SIGKILL.
#pragma once

namespace harnessd::adapters {

/// The argument that selects guard mode: `harnessd __guard <ppid> -- argv...`.
inline constexpr const char* kGuardArg = "__guard";

/// Runs the guard. `argv` is the full command line starting with the
/// program name. It forks the adapter, waits for it, and on its exit (or on
/// harnessd's death) kills what is left of the tree, then exits with the
/// adapter's status. Never returns.
[[noreturn]] void guard_main(int argc, char** argv);

}  // namespace harnessd::adapters
