// The cap on live adapters and the eviction of idle ones.
#include "adapters/live_adapters.h"

#include <algorithm>

namespace harnessd::adapters {

using Clock = std::chrono::steady_clock;

LiveAdapters::Slot& LiveAdapters::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, {});
  }
  return *this;
}

void LiveAdapters::Slot::reset() {
  if (auto pool = pool_.lock()) (*pool)->release();
  pool_.reset();
}

LiveAdapters::Wait& LiveAdapters::Wait::operator=(Wait&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, {});
    id_ = other.id_;
  }
  return *this;
}

void LiveAdapters::Wait::reset() {
  if (auto pool = pool_.lock()) (*pool)->withdraw(id_);
  pool_.reset();
}

LiveAdapters::LiveAdapters(acp::Loop& loop, std::size_t cap, std::chrono::milliseconds idle_ttl)
    : loop_(loop), cap_(std::max<std::size_t>(cap, 1)), ttl_(idle_ttl), self_(std::make_shared<LiveAdapters*>(this)) {}

LiveAdapters::~LiveAdapters() = default;

LiveAdapters::Wait LiveAdapters::acquire(Granted granted) {
  if (held_ < cap_ && waits_.empty()) {
    ++held_;
    granted(Slot(self_));
    return {};
  }
  const std::uint64_t id = next_wait_++;
  waits_.push_back({id, std::move(granted)});
  make_room();
  return Wait(self_, id);
}

LiveAdapters::Slot LiveAdapters::try_acquire() {
  if (held_ >= cap_ || !waits_.empty()) return {};
  ++held_;
  return Slot(self_);
}

void LiveAdapters::release() {
  --held_;
  if (leaving_ > 0) --leaving_;
  if (waits_.empty()) {
    if (on_room_ && !room_posted_) {
      room_posted_ = true;
      loop_.post([pool = std::weak_ptr<LiveAdapters*>(self_)] {
        if (auto p = pool.lock()) {
          (*p)->room_posted_ = false;
          if ((*p)->on_room_ && (*p)->held_ < (*p)->cap_) (*p)->on_room_();
        }
      });
    }
    return;
  }
  if (granting_) return;
  // Slots come back from a link's destructor: the next start runs from a
  // fresh stack.
  granting_ = true;
  loop_.post([pool = std::weak_ptr<LiveAdapters*>(self_)] {
    if (auto p = pool.lock()) (*p)->grant();
  });
}

void LiveAdapters::grant() {
  granting_ = false;
  while (!waits_.empty() && held_ < cap_) {
    Granted granted = std::move(waits_.front().granted);
    waits_.pop_front();
    ++held_;
    granted(Slot(self_));
  }
  make_room();
}

void LiveAdapters::withdraw(std::uint64_t id) {
  auto it = std::find_if(waits_.begin(), waits_.end(), [id](const Pending& p) { return p.id == id; });
  if (it != waits_.end()) waits_.erase(it);
}

void LiveAdapters::make_room() {
  const std::size_t free = cap_ > held_ ? cap_ - held_ : 0;
  while ((!spares_.empty() || !idle_.empty()) && waits_.size() > free + leaving_) {
    std::list<Idle>& from = spares_.empty() ? idle_ : spares_;
    Member* member = from.front().member;
    where_.erase(member);
    from.pop_front();
    ++leaving_;
    member->evict("its slot is needed by another adapter");
  }
  arm_ttl();
}

void LiveAdapters::spare(Member& member) { enter(spares_, member); }

void LiveAdapters::idle(Member& member) { enter(idle_, member); }

void LiveAdapters::enter(std::list<Idle>& list, Member& member) {
  busy(member);  // out of whichever list it was in; arms the TTL for the rest
  list.push_back({&member, Clock::now()});
  where_[&member] = {&list, std::prev(list.end())};
  if (!waits_.empty()) {
    // A start waits: this adapter makes room for it, from a fresh stack
    // (the owner is in the middle of something).
    loop_.post([pool = std::weak_ptr<LiveAdapters*>(self_)] {
      if (auto p = pool.lock()) (*p)->make_room();
    });
    return;
  }
  arm_ttl();
}

void LiveAdapters::busy(Member& member) {
  auto it = where_.find(&member);
  if (it == where_.end()) return;
  it->second.list->erase(it->second.it);
  where_.erase(it);
  arm_ttl();
}

std::optional<Clock::time_point> LiveAdapters::idle_since(const Member& member) const {
  auto it = where_.find(&member);
  if (it == where_.end() || it->second.list != &idle_) return std::nullopt;
  return it->second.it->since;
}

void LiveAdapters::arm_ttl() {
  if (ttl_.count() <= 0 || idle_.empty()) {
    if (ttl_timer_) ttl_timer_->stop();
    return;
  }
  const Clock::time_point due = idle_.front().since + ttl_;
  if (ttl_timer_ && ttl_timer_->active() && ttl_due_ == due) return;
  if (!ttl_timer_) {
    ttl_timer_ = std::make_unique<acp::Timer>(loop_);
  }
  ttl_due_ = due;
  auto after = std::chrono::ceil<std::chrono::milliseconds>(due - Clock::now());
  ttl_timer_->start(std::max(after, std::chrono::milliseconds(0)), [this] { expire(); });
  // An idle adapter alone does not keep harnessd running.
  ttl_timer_->unref();
}

void LiveAdapters::expire() {
  const Clock::time_point now = Clock::now();
  while (!idle_.empty() && idle_.front().since + ttl_ <= now) {
    Member* member = idle_.front().member;
    where_.erase(member);
    idle_.pop_front();
    member->evict("it was idle for adapter_idle_ttl");
  }
  arm_ttl();
}

}  // namespace harnessd::adapters
