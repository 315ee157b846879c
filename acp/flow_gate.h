// FlowGate: end-to-end backpressure between a queue and the readers that
// fill it. Outbound queues (a writer, the store's lanes) hold the gate
// closed while they are over their high-water mark; readers that feed them
// subscribe and pause until every holder has drained to its low-water mark.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>

namespace harnessd::acp {

/// Loop thread only. Holds and subscriptions may outlive the gate (they
/// then do nothing), so owners need not order their destruction.
class FlowGate {
  struct State;

 public:
  /// `closed` is true when the first holder closes the gate, false when
  /// the last one opens it.
  using Listener = std::function<void(bool closed)>;

  FlowGate();
  FlowGate(const FlowGate&) = delete;
  FlowGate& operator=(const FlowGate&) = delete;

  bool closed() const;

  /// One queue's vote. Destroying a Hold releases it.
  class Hold {
   public:
    explicit Hold(FlowGate& gate);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    void set(bool closing);

   private:
    std::weak_ptr<State> state_;
    bool closing_ = false;
  };

  /// Calls `fn` on every change, until the Subscription is destroyed. A
  /// subscriber that arrives while the gate is closed is called at once.
  class Subscription {
   public:
    Subscription() = default;
    ~Subscription();
    Subscription(Subscription&& other) noexcept;
    Subscription& operator=(Subscription&& other) noexcept;

   private:
    friend class FlowGate;
    std::weak_ptr<State> state_;
    std::size_t id_ = 0;
    void reset();
  };
  [[nodiscard]] Subscription subscribe(Listener fn);

 private:
  struct State {
    std::size_t closers = 0;
    std::size_t next_id = 1;
    std::map<std::size_t, Listener> listeners;
    void change(int delta);
  };
  std::shared_ptr<State> state_;
};

}  // namespace harnessd::acp
