// FlowGate: a count of closed holders and the listeners told of changes.
#include "acp/flow_gate.h"

#include <vector>

#include "acp/log.h"

namespace harnessd::acp {

FlowGate::FlowGate() : state_(std::make_shared<State>()) {}

bool FlowGate::closed() const { return state_->closers > 0; }

void FlowGate::State::change(int delta) {
  bool was = closers > 0;
  closers = static_cast<std::size_t>(static_cast<long>(closers) + delta);
  bool now = closers > 0;
  if (was == now) return;
  // A copy: a listener may subscribe or unsubscribe while being told.
  std::vector<Listener> fns;
  fns.reserve(listeners.size());
  for (auto& [id, fn] : listeners) fns.push_back(fn);
  for (auto& fn : fns) {
    try {
      fn(now);
    } catch (const std::exception& e) {
      log::error(std::string("flow listener failed: ") + e.what());
    }
  }
}

FlowGate::Hold::Hold(FlowGate& gate)
    : state_(gate.state_) {}

FlowGate::Hold::~Hold() { set(false); }

void FlowGate::Hold::set(bool closing) {
  if (closing == closing_) return;
  closing_ = closing;
  if (auto s = state_.lock()) s->change(closing ? 1 : -1);
}

FlowGate::Subscription FlowGate::subscribe(Listener fn) {
  Subscription sub;
  sub.id_ = state_->next_id++;
  sub.state_ = state_;
  state_->listeners.emplace(sub.id_, fn);
  if (state_->closers > 0) fn(true);
  return sub;
}

FlowGate::Subscription::~Subscription() { reset(); }

FlowGate::Subscription::Subscription(Subscription&& other) noexcept
    : state_(std::move(other.state_)), id_(other.id_) {
  other.id_ = 0;
}

FlowGate::Subscription& FlowGate::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    reset();
    state_ = std::move(other.state_);
    id_ = other.id_;
    other.id_ = 0;
  }
  return *this;
}

void FlowGate::Subscription::reset() {
  if (auto s = state_.lock()) s->listeners.erase(id_);
  state_.reset();
  id_ = 0;
}

}  // namespace harnessd::acp
