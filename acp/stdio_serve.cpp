#include "acp/stdio_serve.h"

#include <signal.h>

#include <cstring>
#include <vector>

#include "acp/log.h"

namespace harnessd::acp {

int serve_stdio(Loop& loop, const StdioServeOptions& options,
                const std::function<std::unique_ptr<StdioService>(StdioPeer&)>& make) {
  // A peer that closes its end must not kill us with SIGPIPE: writes fail
  // with EPIPE instead and the service stops in order.
  signal(SIGPIPE, SIG_IGN);
  {
    auto opened = StdioPeer::open(loop, options.peer);
    if (!opened) {
      log::error(opened.error().message);
      return 1;
    }
    std::unique_ptr<StdioPeer> peer = std::move(*opened);
    std::unique_ptr<StdioService> service = make(*peer);

    std::vector<std::unique_ptr<SignalWatch>> signals;
    Timer deadline(loop);
    bool stopping = false;
    bool flushing = false;
    bool exiting = false;

    // The last step: drop the peer's streams and the signal watches so the
    // loop runs dry. Whatever the peer did not read by now is dropped.
    auto exit_loop = [&] {
      if (exiting) return;
      exiting = true;
      deadline.stop();
      loop.post([&] {
        peer->close();
        signals.clear();
      });
    };
    // After the service: our output, bounded, since a peer that no longer
    // reads must not keep us alive.
    auto flush_output = [&] {
      if (exiting || flushing) return;
      flushing = true;
      if (options.flush_bound.count() > 0) {
        deadline.start(options.flush_bound, [&] {
          log::warn(options.what + ": the peer does not read our output; exiting without it");
          exit_loop();
        });
      }
      peer->flush(exit_loop);
    };
    auto stop = [&](const std::string& why) {
      if (stopping) return;
      stopping = true;
      log::info(options.what + ": stopping (" + why + ")");
      if (options.stop_bound.count() > 0) {
        deadline.start(options.stop_bound, [&] {
          log::warn(options.what + ": did not stop in time; exiting anyway");
          exit_loop();
        });
      }
      service->stop(why, flush_output);
    };

    peer->on_write_error([&](int status) {
      log::warn(options.what + ": the peer stopped reading our output (" + uv_error_text(status) + ")");
      stop("output closed");
    });
    auto input_ended = [&](const std::string& why) {
      // Nothing the peer was asked can be answered now: a permission
      // request open at this moment reaches its adapter as "cancelled"
      // before the adapter is stopped.
      if (options.fail_pending_at_end) peer->rpc().fail_pending("stopped sending");
      stop(why);
    };
    peer->start([&](int status) {
      if (status < 0) log::warn(options.what + ": reading the input failed: " + uv_error_text(status));
      input_ended("end of input");
    });
    service->end_input = [&](const std::string& why) {
      loop.post([&, why] {
        peer->pause_input();
        input_ended(why);
      });
    };
    if (options.handle_signals) {
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
        signals.push_back(std::make_unique<SignalWatch>(loop, sig, [&](int s) {
          loop.post([&, s] { stop(std::string("signal ") + strsignal(s)); });
        }));
      }
    }

    loop.run();
    deadline.stop();
    service.reset();
  }
  // A handle left open is a bug of ours: logged, and the exit says so.
  return loop.close() ? 0 : 1;
}

}  // namespace harnessd::acp
