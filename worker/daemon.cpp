// The serve loop: stdio transport, the host connection, the agent, and an
// orderly shutdown that answers every open prompt and stops every adapter.
#include "worker/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "acp/connection.h"
#include "acp/stdio_peer.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stream.h"
#include "adapters/reaper.h"
#include "harnesses/profile.h"
#include "worker/agent.h"
#include "adapters/process.h"
#include "worker/runtime.h"

namespace harnessd::worker {


int serve(ServeOptions options) {
  // A host that closes its end must not kill us with SIGPIPE: writes fail
  // with EPIPE instead and the daemon shuts down in order.
  signal(SIGPIPE, SIG_IGN);

  Loop loop;
  const int exit_code = 0;
  {
    StdioPeerOptions peer_options;
    peer_options.in_fd = options.in_fd;
    peer_options.out_fd = options.out_fd;
    peer_options.connection.peer = "host";
    peer_options.connection.require_initialize = true;
    peer_options.connection.max_pending_calls = options.config.daemon.max_pending_calls;
    peer_options.max_line_bytes = options.config.daemon.max_line_bytes;
    auto opened = StdioPeer::open(loop, peer_options);
    if (!opened) {
      log::error(opened.error().message);
      return 1;
    }
    std::unique_ptr<StdioPeer> peer = std::move(*opened);
    Connection& host = peer->rpc();

    adapters::Reaper reaper(loop);
    std::unique_ptr<Store> store =
        Store::open(loop, options.state_dir.empty() ? default_state_dir() : options.state_dir, options.store);
    Runtime rt{loop,
               options.config,
               host,
               reaper,
               *store,
               options.guard_exe,
               options.self_exe.empty() ? adapters::self_executable() : options.self_exe,
               harnesses::current_environment()};
    auto agent = std::make_unique<Agent>(rt);

    std::vector<std::unique_ptr<SignalWatch>> signals;
    Timer deadline(loop);
    bool stopping = false;
    bool draining = false;
    bool flushing = false;
    bool exiting = false;
    int closing_steps = 2;  // every prompt answered, every adapter gone

    // The last step: drop the host's streams and signal watches so the
    // loop runs dry. Whatever the host did not read by now is dropped.
    auto exit_loop = [&] {
      if (exiting) return;
      exiting = true;
      deadline.stop();
      loop.post([&] {
        peer->close();
        signals.clear();
      });
    };

    // Shutdown: answer every open prompt "cancelled", stop every adapter
    // tree, flush what we wrote, then exit. The deadline bounds it all: the
    // kill ladder ends with SIGKILL after kill_grace, and a host that stops
    // reading its stdout must not keep us alive.
    auto shutdown = [&](const std::string& why) {
      if (stopping) return;
      stopping = true;
      log::info("shutting down: " + why);
      // Three steps, each with its own bound: the adapters (the kill ladder
      // ends with SIGKILL after kill_grace), the store (every answer waits
      // for its ledger line), then our output (a host that no longer reads
      // must not keep us alive).
      auto flush_output = [&] {
        if (exiting || flushing) return;
        flushing = true;
        deadline.start(std::chrono::seconds(3), [&] {
          log::warn("the host does not read our output; exiting without it");
          exit_loop();
        });
        peer->flush(exit_loop);
      };
      auto drain_store = [&, flush_output] {
        if (exiting || draining) return;
        draining = true;
        deadline.start(std::chrono::seconds(30), [&, flush_output] {
          log::error("the state directory did not take the last writes in 30 s; exiting anyway");
          flush_output();
        });
        store->barrier_all([&, flush_output](Expected<void>) {
          if (!exiting) flush_output();
        });
      };
      deadline.start(options.config.daemon.kill_grace + std::chrono::seconds(3), [&, drain_store] {
        log::warn("adapters did not exit in time; going on without them");
        drain_store();
      });
      auto step = [&, drain_store] {
        if (--closing_steps == 0) drain_store();
      };
      agent->close_all(step);
      reaper.when_empty(step);
    };

    peer->on_write_error([&](int status) {
      log::warn("the host stopped reading our output (" + uv_error_text(status) + ")");
      shutdown("host output closed");
    });
    peer->start([&](int status) {
      if (status < 0) log::warn("reading the host's input failed: " + uv_error_text(status));
      shutdown("end of input");
    });
    if (options.handle_signals) {
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
        signals.push_back(std::make_unique<SignalWatch>(loop, sig, [&](int s) {
          loop.post([&, s] { shutdown(std::string("signal ") + strsignal(s)); });
        }));
      }
    }

    loop.run();
    agent.reset();
    deadline.stop();
    store.reset();  // finishes queued writes
  }
  loop.close();  // logs if a handle was left open
  return exit_code;
}

}  // namespace harnessd::worker
