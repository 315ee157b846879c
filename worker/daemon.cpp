// The serve loop: stdio transport, the host connection, the agent, and an
// orderly shutdown that answers every open prompt and stops every adapter.
#include "worker/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "acp/connection.h"
#include "acp/flow_gate.h"
#include "acp/stdio_peer.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stream.h"
#include "adapters/reaper.h"
#include "harnesses/profile.h"
#include "worker/engine.h"
#include "adapters/process.h"
#include "adapters/tree_sweep.h"
#include "worker/runtime.h"

namespace harnessd::worker {


int serve(ServeOptions options) {
  // A host that closes its end must not kill us with SIGPIPE: writes fail
  // with EPIPE instead and the daemon shuts down in order.
  signal(SIGPIPE, SIG_IGN);

  Loop loop;
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

    EngineOptions engine_options;
    engine_options.config = std::move(options.config);
    engine_options.guard_exe = options.guard_exe;
    engine_options.self_exe = options.self_exe;
    engine_options.state_dir = options.state_dir;
    // Orphans of an adapter tree whose guard was killed come to us, where
    // the guard's exit can find and stop them (issue 11).
    engine_options.sweep_orphans = adapters::become_child_subreaper();
    engine_options.store = options.store;
    const std::size_t high_water = engine_options.config.daemon.queue_high_water;
    const std::size_t low_water = engine_options.config.daemon.queue_low_water;
    auto engine = std::make_unique<Engine>(loop, peer->rpc(), std::move(engine_options));
    // Backpressure (docs/architecture.md): while the host does not read
    // and our output to it passes the high-water mark, no adapter's stdout
    // is read, so each adapter blocks on its own write; while an adapter's
    // stdin queue is over the mark, the host's input is not read.
    FlowGate::Hold host_output_hold(engine->adapter_output_gate());
    peer->set_output_watermarks(high_water, low_water, [&host_output_hold](bool over) {
      log::debug(over ? "the host is behind on our output; holding the adapters' output back"
                      : "the host caught up; reading the adapters again");
      host_output_hold.set(over);
    });

    std::vector<std::unique_ptr<SignalWatch>> signals;
    Timer deadline(loop);
    bool flushing = false;
    bool exiting = false;

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
    // After the engine: our output, bounded, since a host that no longer
    // reads must not keep us alive.
    auto flush_output = [&] {
      if (exiting || flushing) return;
      flushing = true;
      deadline.start(std::chrono::seconds(3), [&] {
        log::warn("the host does not read our output; exiting without it");
        exit_loop();
      });
      peer->flush(exit_loop);
    };
    auto shutdown = [&](const std::string& why) { engine->shutdown(why, flush_output); };

    peer->on_write_error([&](int status) {
      log::warn("the host stopped reading our output (" + uv_error_text(status) + ")");
      shutdown("host output closed");
    });
    peer->start([&](int status) {
      if (status < 0) log::warn("reading the host's input failed: " + uv_error_text(status));
      // Nothing the host was asked can be answered now: a permission
      // request open at this moment reaches its adapter as "cancelled"
      // before the adapter is stopped.
      peer->rpc().fail_pending("stopped sending");
      shutdown("end of input");
    });
    FlowGate::Subscription host_input = engine->host_input_gate().subscribe([&](bool closed) {
      if (closed) {
        peer->pause_input();
      } else {
        peer->resume_input();
      }
    });
    if (options.handle_signals) {
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
        signals.push_back(std::make_unique<SignalWatch>(loop, sig, [&](int s) {
          loop.post([&, s] { shutdown(std::string("signal ") + strsignal(s)); });
        }));
      }
    }

    loop.run();
    deadline.stop();
    engine.reset();
  }
  // A handle left open is a bug of ours: logged, and the exit says so.
  return loop.close() ? 0 : 1;
}

}  // namespace harnessd::worker
