// The loop owner, the post queue and the small handle wrappers.
#include "acp/loop.h"

#include <cstdlib>

#include "acp/log.h"

namespace harnessd::acp {

namespace {

// A posted task's exception is logged; the loop goes on.
void run_posted(UniqueFunction<void()>& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    log::error(std::string("posted task failed: ") + e.what());
  } catch (...) {
    log::error("posted task failed");
  }
}

}  // namespace

std::string uv_error_text(int code) { return std::string(uv_err_name(code)) + ": " + uv_strerror(code); }

Loop::Loop() {
  if (int rc = uv_loop_init(&loop_); rc != 0) {
    log::error("cannot initialise the event loop: " + uv_error_text(rc));
    std::abort();
  }
  auto* idle = new uv_idle_t;
  uv_idle_init(&loop_, idle);
  idle->data = this;
  idle_.reset(idle);
  auto* check = new uv_check_t;
  uv_check_init(&loop_, check);
  check->data = this;
  check_.reset(check);
  uv_check_start(check, &Loop::on_check);
  uv_unref(reinterpret_cast<uv_handle_t*>(check));  // only idle_ says work waits
  auto* wake = new uv_async_t;
  uv_async_init(&loop_, wake, &Loop::on_wake);
  wake->data = this;
  wake_.reset(wake);
  uv_unref(reinterpret_cast<uv_handle_t*>(wake));
}

Loop::~Loop() { close(); }

bool Loop::close() {
  if (closed_) return true;
  idle_.reset();
  check_.reset();
  posted_.clear();
  {
    std::lock_guard<std::mutex> lock(remote_mu_);
    wake_.reset();
    remote_.clear();
  }
  uv_run(&loop_, UV_RUN_NOWAIT);  // let pending close callbacks run
  if (uv_loop_close(&loop_) == 0) {
    closed_ = true;
    return true;
  }
  // Something still holds a handle: close whatever is left so memory is not
  // leaked, and report it; tests treat this as a failure.
  log::warn("event loop closed with handles still open");
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  closed_ = uv_loop_close(&loop_) == 0;
  return false;
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }
void Loop::run_once_nowait() { uv_run(&loop_, UV_RUN_NOWAIT); }
void Loop::stop() { uv_stop(&loop_); }

void Loop::post(UniqueFunction<void()> fn) {
  if (!idle_) return;
  posted_.push_back(std::move(fn));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_.get()))) uv_idle_start(idle_.get(), &Loop::on_idle);
}

void Loop::post_from_any_thread(UniqueFunction<void()> fn) {
  std::lock_guard<std::mutex> lock(remote_mu_);
  if (!wake_) return;
  remote_.push_back(std::move(fn));
  uv_async_send(wake_.get());
}

void Loop::on_wake(uv_async_t* wake) noexcept {
  auto* self = static_cast<Loop*>(wake->data);
  if (!self) return;
  std::vector<UniqueFunction<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(self->remote_mu_);
    batch.swap(self->remote_);
  }
  for (auto& fn : batch) run_posted(fn);
}

void Loop::on_idle(uv_idle_t* idle) noexcept {
  if (auto* self = static_cast<Loop*>(idle->data)) self->run_posted_batch();
}

void Loop::on_check(uv_check_t* check) noexcept {
  auto* self = static_cast<Loop*>(check->data);
  if (!self) return;
  // A few rounds: work that posts the next step of a hand-off (an answer,
  // then the next prompt, then its store jobs) is done before the next
  // poll, which can then wait; a chain that goes on waits for that poll.
  for (int round = 0; round < kCheckRounds && !self->posted_.empty(); ++round) self->run_posted_batch();
}

void Loop::run_posted_batch() {
  // Run only what was posted before this call; work posted by these
  // functions runs in the next iteration, so a loop of posts cannot starve I/O.
  std::size_t n = posted_.size();
  for (std::size_t i = 0; i < n && !posted_.empty(); ++i) {
    auto fn = std::move(posted_.front());
    posted_.pop_front();
    run_posted(fn);
  }
  if (posted_.empty() && idle_) uv_idle_stop(idle_.get());
}

Timer::Timer(Loop& loop) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop.get(), t);
  t->data = this;
  handle_.reset(t);
}

void Timer::start(std::chrono::milliseconds after, std::function<void()> fn) { arm(after, {}, std::move(fn)); }

void Timer::start_every(std::chrono::milliseconds period, std::function<void()> fn) {
  arm(period, period, std::move(fn));
}

void Timer::unref() { uv_unref(reinterpret_cast<uv_handle_t*>(handle_.get())); }

void Timer::arm(std::chrono::milliseconds after, std::chrono::milliseconds repeat, std::function<void()> fn) {
  fn_ = std::move(fn);
  uv_timer_start(
      handle_.get(),
      [](uv_timer_t* t) noexcept {
        auto* self = static_cast<Timer*>(t->data);
        if (!self) return;
        // Copy: the callback may destroy or restart this timer.
        auto callback = self->fn_;
        try {
          if (callback) callback();
        } catch (const std::exception& e) {
          log::error(std::string("timer callback failed: ") + e.what());
        } catch (...) {
          log::error("timer callback failed");
        }
      },
      static_cast<uint64_t>(after.count()), static_cast<uint64_t>(repeat.count()));
}

void Timer::stop() { uv_timer_stop(handle_.get()); }
bool Timer::active() const { return uv_is_active(reinterpret_cast<const uv_handle_t*>(handle_.get())) != 0; }

SignalWatch::SignalWatch(Loop& loop, int signum, std::function<void(int)> fn) : fn_(std::move(fn)) {
  auto* s = new uv_signal_t;
  uv_signal_init(loop.get(), s);
  s->data = this;
  handle_.reset(s);
  uv_signal_start(
      s,
      [](uv_signal_t* h, int sig) noexcept {
        auto* self = static_cast<SignalWatch*>(h->data);
        if (!self || !self->fn_) return;
        try {
          self->fn_(sig);
        } catch (...) {
          log::error("signal handler failed");
        }
      },
      signum);
}

}  // namespace harnessd::acp
