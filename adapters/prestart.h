// Prestart: an adapter started before anything asks for it, so that its
// start overlaps harnessd's own (`harnessd run` starts its harness while it
// opens the state directory). The first adapter start of the engine takes
// it over when it would have started the very same process, and discards
// it otherwise. Its exec runs on a thread of its own (Process::launch): the
// loop goes on at once.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "acp/loop.h"
#include "adapters/process.h"

namespace harnessd::adapters {

class Prestart {
 public:
  /// Output kept for the session that takes the adapter over. An adapter
  /// that writes more before anything was asked of it is stopped when a
  /// session comes, which then starts its own.
  static constexpr std::size_t kMaxKept = 1u << 20;

  /// Starts `spec` now. A start that fails is only logged: the start that
  /// needs the adapter tries again and reports why it cannot. The process
  /// is watched from the loop's next turn after its exec.
  Prestart(acp::Loop& loop, ProcessSpec spec);
  /// Kills an adapter nobody took.
  ~Prestart();
  Prestart(const Prestart&) = delete;
  Prestart& operator=(const Prestart&) = delete;

  /// The adapter, when it was started from a spec equal to `spec`: its
  /// events go to `callbacks` (moved from) from now on, and what it wrote,
  /// and whether it ended, before now reaches them first, on the loop's
  /// next iteration and in order. Null otherwise, `callbacks` untouched.
  /// Either way the prestart is used up: an adapter started from another
  /// spec is killed.
  std::unique_ptr<Process> take(const ProcessSpec& spec, Process::Callbacks& callbacks);
  /// Kills the adapter if nobody took it.
  void discard();
  /// The pid of the group leader started, until it is taken or stopped (0
  /// then, or when the start failed). Waits for the exec if need be.
  int pid();

 private:
  struct Events;

  /// Takes the launched process, waiting for its exec if need be.
  void adopt();

  acp::Loop& loop_;
  ProcessSpec spec_;
  std::shared_ptr<Events> events_;
  Process::PendingStart launch_;
  std::unique_ptr<Process> process_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for what the exec's thread posts
};

}  // namespace harnessd::adapters
