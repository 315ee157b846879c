// The serve loop: stdio transport, the host connection, the agent, and an
// orderly shutdown that answers every open prompt and stops every adapter.
#include "worker/daemon.h"

#include <memory>

#include "acp/flow_gate.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stdio_serve.h"
#include "adapters/tree_sweep.h"
#include "worker/engine.h"

namespace harnessd::worker {

namespace {

// The engine on the host's stdio, with backpressure both ways
// (docs/architecture.md): while the host does not read and our output to it
// passes the high-water mark, no adapter's stdout is read, so each adapter
// blocks on its own write; while an adapter's stdin queue is over the mark,
// the host's input is not read.
class EngineService final : public acp::StdioService {
 public:
  EngineService(acp::Loop& loop, acp::StdioPeer& peer, EngineOptions options)
      : high_water_(options.config.daemon.queue_high_water),
        low_water_(options.config.daemon.queue_low_water),
        engine_(loop, peer.rpc(), std::move(options)),
        host_output_hold_(engine_.adapter_output_gate()) {
    peer.set_output_watermarks(high_water_, low_water_, [this](bool over) {
      acp::log::debug(over ? "the host is behind on our output; holding the adapters' output back"
                           : "the host caught up; reading the adapters again");
      host_output_hold_.set(over);
    });
    host_input_ = engine_.host_input_gate().subscribe([&peer](bool closed) {
      if (closed) {
        peer.pause_input();
      } else {
        peer.resume_input();
      }
    });
  }

  // The engine's shutdown is bounded on its own (adapters, answers, store).
  void stop(const std::string& why, acp::UniqueFunction<void()> done) override {
    engine_.shutdown(why, std::move(done));
  }

 private:
  std::size_t high_water_, low_water_;
  Engine engine_;
  acp::FlowGate::Hold host_output_hold_;
  acp::FlowGate::Subscription host_input_;
};

}  // namespace

int serve(ServeOptions options) {
  acp::Loop loop;
  acp::StdioServeOptions serve_options;
  serve_options.peer.in_fd = options.in_fd;
  serve_options.peer.out_fd = options.out_fd;
  serve_options.peer.connection.peer = "host";
  serve_options.peer.connection.require_initialize = true;
  serve_options.peer.connection.max_pending_calls = options.config.daemon.max_pending_calls;
  serve_options.peer.max_line_bytes = options.config.daemon.max_line_bytes;
  serve_options.handle_signals = options.handle_signals;
  serve_options.fail_pending_at_end = true;
  // After the engine: our output, bounded, since a host that no longer
  // reads must not keep us alive.
  serve_options.flush_bound = std::chrono::seconds(3);
  serve_options.what = "host connection";

  EngineOptions engine_options;
  engine_options.config = std::move(options.config);
  engine_options.guard_exe = options.guard_exe;
  engine_options.self_exe = options.self_exe;
  engine_options.state_dir = options.state_dir;
  // Orphans of an adapter tree whose guard was killed come to us, where
  // the guard's exit can find and stop them (issue 11).
  engine_options.sweep_orphans = adapters::become_child_subreaper();
  engine_options.store = options.store;
  return acp::serve_stdio(loop, serve_options, [&](acp::StdioPeer& peer) {
    return std::make_unique<EngineService>(loop, peer, std::move(engine_options));
  });
}

}  // namespace harnessd::worker
