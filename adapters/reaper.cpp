// Adapters on their way out.
#include "adapters/reaper.h"

#include <algorithm>

namespace harnessd::adapters {

void Reaper::adopt(std::unique_ptr<AdapterLink> link, std::chrono::milliseconds kill_grace,
                   std::chrono::milliseconds eof_grace) {
  if (!link) return;
  AdapterLink* raw = link.get();
  raw->rpc().close();
  raw->rpc().clear_handlers();
  raw->set_taps(nullptr, nullptr);
  raw->set_on_output_closed(nullptr);
  if (raw->exited()) {
    // Already gone: destroy it outside the caller's stack.
    loop_.post([l = std::move(link)]() mutable { l.reset(); });
    return;
  }
  raw->set_on_exit([this, raw](const ExitStatus&) {
    // Destroy outside the exit callback that is running on the link.
    loop_.post([this, raw] { release(raw); });
  });
  links_.push_back(std::move(link));
  if (eof_grace.count() > 0) {
    raw->close_stdin();
    auto timer = std::make_unique<acp::Timer>(loop_);
    timer->start(eof_grace, [raw, kill_grace] { raw->terminate(kill_grace); });
    gentle_[raw] = std::move(timer);
    return;
  }
  raw->terminate(kill_grace);
}

void Reaper::release(AdapterLink* link) {
  gentle_.erase(link);
  links_.erase(std::remove_if(links_.begin(), links_.end(), [link](const auto& l) { return l.get() == link; }),
               links_.end());
  if (links_.empty()) {
    auto waiters = std::move(waiters_);
    waiters_.clear();
    for (auto& w : waiters) w();
  }
}

void Reaper::when_empty(std::function<void()> fn) {
  if (links_.empty()) {
    fn();
    return;
  }
  waiters_.push_back(std::move(fn));
}

}  // namespace harnessd::adapters
