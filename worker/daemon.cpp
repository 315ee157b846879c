// The serve loop: stdio transport, the host connection, the agent, and an
// orderly shutdown that answers every open prompt and stops every adapter.
#include "worker/daemon.h"

#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>
#include <memory>
#include <vector>

#include "acp/flow_gate.h"
#include "acp/log.h"
#include "acp/loop.h"
#include "acp/stdio_serve.h"
#include "acp/unix_socket.h"
#include "adapters/tree_sweep.h"
#include "worker/engine.h"
#include "worker/hub.h"

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
    engine_.set_end_input([this](const std::string& why) {
      if (end_input) end_input(why);
    });
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

EngineOptions engine_options_for(ServeOptions& options) {
  EngineOptions engine_options;
  engine_options.config = std::move(options.config);
  engine_options.guard_exe = options.guard_exe;
  engine_options.self_exe = options.self_exe;
  engine_options.state_dir = options.state_dir;
  // Orphans of an adapter tree whose guard was killed come to us, where
  // the guard's exit can find and stop them (issue 11).
  engine_options.sweep_orphans = adapters::become_child_subreaper();
  engine_options.store = options.store;
  return engine_options;
}

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
  // A worker's input ends when its front (or the link to it) is gone:
  // nobody reads what is left to say.
  if (options.config.daemon.worker) serve_options.flush_bound = std::chrono::milliseconds(200);
  serve_options.what = "host connection";

  EngineOptions engine_options = engine_options_for(options);
  return acp::serve_stdio(loop, serve_options, [&](acp::StdioPeer& peer) {
    return std::make_unique<EngineService>(loop, peer, std::move(engine_options));
  });
}

std::string server_socket_path(const std::string& state_dir) { return state_dir + "/harnessd.sock"; }

int serve_socket(SocketServeOptions options) {
  // A client that closes its end must not kill us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  acp::Loop loop;
  // Watched before the socket exists, so that a client that can connect
  // can also stop the server in order. Handled once the loop runs.
  std::function<void(const std::string&)> stop_fn;
  std::vector<std::unique_ptr<acp::SignalWatch>> signals;
  if (options.serve.handle_signals) {
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
      signals.push_back(std::make_unique<acp::SignalWatch>(loop, sig, [&](int s) {
        loop.post([&, s] {
          if (stop_fn) stop_fn(std::string("signal ") + strsignal(s));
        });
      }));
    }
  }
  int listen_fd = options.listen_fd;
  int lock_fd = -1;
  const bool own_path = listen_fd < 0;
  if (own_path) {
    auto opened = acp::listen_unix(options.path);
    if (!opened) {
      acp::log::error(opened.error().message);
      return 1;
    }
    listen_fd = opened->fd;
    lock_fd = opened->lock_fd;
  }
  const uid_t self = ::geteuid();
  const auto idle_exit = options.serve.config.daemon.idle_exit;
  HubOptions hub_options;
  hub_options.max_line_bytes = options.serve.config.daemon.max_line_bytes;
  hub_options.max_client_queued = 4 * options.serve.config.daemon.queue_high_water;
  hub_options.on_disconnect = options.serve.config.daemon.on_disconnect;
  {
    Hub hub(loop, engine_options_for(options.serve), hub_options);
    acp::UvHandle<uv_poll_t> listener(new uv_poll_t);
    if (int rc = uv_poll_init(loop.get(), listener.get(), listen_fd); rc != 0) {
      listener.release();  // never initialised: nothing to close
      acp::log::error("cannot watch the socket: " + acp::uv_error_text(rc));
      return 1;
    }
    acp::Timer idle(loop);
    bool stopping = false;
    auto finish = [&] {
      idle.stop();
      loop.post([&] {
        hub.close_clients();
        listener.reset();
        signals.clear();
      });
    };
    auto stop = [&](const std::string& why) {
      if (stopping) return;
      stopping = true;
      acp::log::info("server: stopping (" + why + ")");
      uv_poll_stop(listener.get());
      // The engine bounds its own shutdown, the hub the clients' last output.
      hub.shutdown(why, finish);
    };
    struct Accepting {
      std::function<void()> fn;
    } accepting{[&] {
      while (auto accepted = acp::accept_unix(listen_fd)) {
        if (!*accepted) {
          acp::log::warn("server: " + accepted->error().message);
          return;
        }
        const acp::Accepted a = **accepted;
        if (a.uid != self) {
          // Another user: refused before a byte is read.
          acp::log::warn("server: refused a connection from uid " + std::to_string(a.uid) + " (pid " +
                         std::to_string(a.pid) + "); only uid " + std::to_string(self) + " may connect");
          ::close(a.fd);
          continue;
        }
        idle.stop();
        hub.add_client(a.fd, a.pid);
      }
    }};
    listener->data = &accepting;
    uv_poll_start(listener.get(), UV_READABLE, [](uv_poll_t* h, int status, int) {
      if (status < 0 || !h->data) return;
      static_cast<Accepting*>(h->data)->fn();
    });
    if (idle_exit.count() > 0) {
      hub.on_idle([&] {
        if (stopping || hub.clients() > 0 || hub.prompts_open() > 0) return;
        idle.start(idle_exit, [&] {
          if (hub.clients() == 0 && hub.prompts_open() == 0) stop("idle for " + std::to_string(idle_exit.count()) + " ms");
        });
      });
      idle.start(idle_exit, [&] {
        if (hub.clients() == 0 && hub.prompts_open() == 0) stop("idle for " + std::to_string(idle_exit.count()) + " ms");
      });
    }
    stop_fn = stop;
    acp::log::info("server: listening on " + (own_path ? options.path : std::string("the socket systemd passed")));
    loop.run();
    stop_fn = nullptr;
  }
  signals.clear();
  ::close(listen_fd);
  // Unlinked while the lock is held, so that no new server's socket goes.
  if (own_path) ::unlink(options.path.c_str());
  if (lock_fd >= 0) ::close(lock_fd);
  return loop.close() ? 0 : 1;
}

}  // namespace harnessd::worker
