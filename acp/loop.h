// Loop: owns one uv_loop_t, runs it, and lets code post work to the next
// iteration. No global loop exists: pass Loop& explicitly.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <uv.h>

#include "acp/unique_function.h"
#include "acp/uv_handle.h"

namespace harnessd::acp {

class Loop {
 public:
  Loop();
  /// Closes every handle still open, runs the loop until their close
  /// callbacks have run, then closes the loop. Logs if libuv refuses.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }

  /// Runs until no active handle remains or stop() is called.
  void run();
  /// Runs one non-blocking iteration (for tests).
  void run_once_nowait();
  void stop();

  /// Runs `fn` on the loop thread once the current callback has returned:
  /// after this iteration's I/O callbacks (libuv's check phase), or at the
  /// start of the next iteration for work posted outside them. Used to
  /// defer work (destroying the object whose callback is running, handing
  /// off the next turn) out of libuv callbacks. Posted functions run in
  /// order; what they post in turn waits for the next iteration.
  void post(UniqueFunction<void()> fn);
  /// Like post(), but may be called from any thread (e.g. a writer
  /// thread handing back a result); `fn` runs on the loop thread soon
  /// after, in the order of these calls. Work waiting here does not keep
  /// the loop running; once the loop is closed, `fn` is dropped unrun.
  void post_from_any_thread(UniqueFunction<void()> fn);

  /// Closes the loop and reports whether every handle was released
  /// (uv_loop_close()==0). Tests assert this; the destructor does it too.
  bool close();

 private:
  static void on_idle(uv_idle_t* idle) noexcept;
  static void on_check(uv_check_t* check) noexcept;
  /// Runs what was posted before this call (not what it posts), and stops
  /// the idle handle once nothing is left.
  void run_posted_batch();
  static constexpr int kCheckRounds = 4;
  static void on_wake(uv_async_t* wake) noexcept;

  uv_loop_t loop_{};
  bool closed_ = false;
  // Work waiting keeps idle_ active, which makes the poll return at once;
  // check_ runs it right after the poll, so work posted by I/O callbacks
  // costs no extra poll.
  UvHandle<uv_idle_t> idle_;
  UvHandle<uv_check_t> check_;
  std::deque<UniqueFunction<void()>> posted_;
  std::mutex remote_mu_;  // guards remote_ and wake_ against other threads
  std::vector<UniqueFunction<void()>> remote_;
  UvHandle<uv_async_t> wake_;
};

/// A one-shot or repeating timer. Destroying it cancels it. The callback
/// runs on the loop thread; the timer may be destroyed from inside it.
class Timer {
 public:
  explicit Timer(Loop& loop);
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void start(std::chrono::milliseconds after, std::function<void()> fn);
  /// Runs `fn` every `period`, the first time one period from now.
  void start_every(std::chrono::milliseconds period, std::function<void()> fn);
  void stop();
  bool active() const;
  /// From now on the timer does not keep the loop running by itself.
  void unref();

 private:
  void arm(std::chrono::milliseconds after, std::chrono::milliseconds repeat, std::function<void()> fn);

  UvHandle<uv_timer_t> handle_;
  std::function<void()> fn_;
};

/// Watches one signal for as long as it lives.
class SignalWatch {
 public:
  SignalWatch(Loop& loop, int signum, std::function<void(int)> fn);
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

 private:
  UvHandle<uv_signal_t> handle_;
  std::function<void(int)> fn_;
};

}  // namespace harnessd::acp
