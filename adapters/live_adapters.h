// LiveAdapters: the cap on adapter processes alive at once, and the idle
// adapters that give way when it is reached or when they have been idle too
// long ([daemon] max_live_adapters and adapter_idle_ttl).
//
// Every adapter start takes a Slot first; the Slot travels with the
// adapter's link and is given back when the link is destroyed, that is once
// the process tree has exited, so an adapter on its way out still counts.
// Owners tell which of their adapters are idle; when a start finds every
// slot taken, the least recently used idle adapter is evicted and the start
// goes on as soon as that adapter has exited. A start never waits for a slot
// while an idle adapter holds one.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>

#include "acp/loop.h"
#include "acp/unique_function.h"

namespace harnessd::adapters {

class LiveAdapters {
 public:
  /// An owner of an adapter that may be evicted.
  class Member {
   public:
    /// Stop the idle adapter (it has already left the idle list).
    virtual void evict(const char* why) = 0;

   protected:
    ~Member() = default;
  };

  /// One adapter's place under the cap; given back when destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : pool_(std::exchange(other.pool_, {})) {}
    Slot& operator=(Slot&& other) noexcept;
    ~Slot() { reset(); }
    void reset();
    explicit operator bool() const { return !pool_.expired(); }

   private:
    friend class LiveAdapters;
    explicit Slot(std::weak_ptr<LiveAdapters*> pool) : pool_(std::move(pool)) {}
    std::weak_ptr<LiveAdapters*> pool_;
  };

  /// A start waiting for a slot; destroying it withdraws the wait.
  class Wait {
   public:
    Wait() = default;
    Wait(Wait&& other) noexcept : pool_(std::exchange(other.pool_, {})), id_(other.id_) {}
    Wait& operator=(Wait&& other) noexcept;
    ~Wait() { reset(); }
    void reset();
    explicit operator bool() const { return !pool_.expired(); }

   private:
    friend class LiveAdapters;
    Wait(std::weak_ptr<LiveAdapters*> pool, std::uint64_t id) : pool_(std::move(pool)), id_(id) {}
    std::weak_ptr<LiveAdapters*> pool_;
    std::uint64_t id_ = 0;
  };

  /// `cap`: slots in all (at least 1). `idle_ttl`: an adapter idle that
  /// long is evicted (0: never).
  LiveAdapters(acp::Loop& loop, std::size_t cap, std::chrono::milliseconds idle_ttl);
  ~LiveAdapters();
  LiveAdapters(const LiveAdapters&) = delete;
  LiveAdapters& operator=(const LiveAdapters&) = delete;

  using Granted = acp::UniqueFunction<void(Slot)>;
  /// Calls `granted` with a slot: at once when one is free, else once an
  /// evicted adapter has exited. The returned Wait withdraws the request
  /// when destroyed before that (it is empty when granted at once).
  Wait acquire(Granted granted);

  /// A slot now if one is free and no start waits, else an empty one;
  /// never evicts (for adapters started ahead of need).
  Slot try_acquire();
  /// Runs (posted) when a slot comes back and no start waits for it.
  void on_room(acp::UniqueFunction<void()> fn) { on_room_ = std::move(fn); }

  /// `member`'s adapter is idle from now on (again: it moves to the back).
  void idle(Member& member);
  /// `member`'s adapter was started ahead of need: evicted before any idle
  /// one, and never for the TTL. busy() takes it out again.
  void spare(Member& member);
  /// `member`'s adapter is in use, or gone: it is not evicted.
  void busy(Member& member);

  std::size_t cap() const { return cap_; }
  /// Slots held: adapters alive or on their way out.
  std::size_t held() const { return held_; }
  std::size_t idle_count() const { return idle_.size(); }
  std::size_t spare_count() const { return spares_.size(); }
  std::size_t waiting() const { return waits_.size(); }
  /// When `member` became idle, if it is.
  std::optional<std::chrono::steady_clock::time_point> idle_since(const Member& member) const;

 private:
  struct Idle {
    Member* member;
    std::chrono::steady_clock::time_point since;
  };
  struct Pending {
    std::uint64_t id;
    Granted granted;
  };
  void release();
  void withdraw(std::uint64_t id);
  /// Puts `member` at the back of `list` (idle_ or spares_).
  void enter(std::list<Idle>& list, Member& member);
  /// Evicts idle adapters until those on their way out cover the waiting starts.
  void make_room();
  void grant();
  void arm_ttl();
  void expire();

  acp::Loop& loop_;
  const std::size_t cap_;
  const std::chrono::milliseconds ttl_;
  std::size_t held_ = 0;
  std::size_t leaving_ = 0;  // evicted for a waiting start, slot not yet back
  std::list<Idle> idle_;     // least recently used first
  std::list<Idle> spares_;   // started ahead of need: evicted first
  struct Place {
    std::list<Idle>* list;
    std::list<Idle>::iterator it;
  };
  std::unordered_map<const Member*, Place> where_;
  acp::UniqueFunction<void()> on_room_;
  bool room_posted_ = false;
  std::deque<Pending> waits_;
  std::uint64_t next_wait_ = 1;
  bool granting_ = false;
  std::unique_ptr<acp::Timer> ttl_timer_;
  std::chrono::steady_clock::time_point ttl_due_{};
  // Slots and waits find the pool through this; it expires with the pool.
  std::shared_ptr<LiveAdapters*> self_;
};

}  // namespace harnessd::adapters
