// Scheduler: per-session FIFO queues of prompts, one active turn per
// session, a global limit on running turns, and lanes that take turns by
// weight so that no lane starves. Pure C++: no I/O, no clock, no threads;
// the caller pumps it, so tests are deterministic.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "queue/lane.h"

namespace harnessd::queue {

struct SchedulerOptions {
  /// Turns that may run at once across all sessions.
  std::size_t max_concurrent_runs = 8;
  /// Prompts that may wait per session (the active one not counted).
  std::size_t max_queue_depth = 16;
  /// Share of starts each lane gets when all lanes have work waiting
  /// (interactive, scheduled, background).
  std::array<unsigned, kLaneCount> lane_weights{4, 2, 1};
};

/// T is the queued prompt (it may be move-only). Sessions are keyed by id
/// and exist in the scheduler while they have queued or active work.
///
/// The caller enqueues, then calls next() until it returns nothing and
/// starts each turn it gets; when a turn ends it calls finished() and pumps
/// next() again, so the hand-off to the next prompt happens at once.
template <class T>
class Scheduler {
 public:
  struct Started {
    std::string session;
    Lane lane;
    T item;
  };

  explicit Scheduler(SchedulerOptions options = {}) : options_(options) {}

  const SchedulerOptions& options() const { return options_; }

  /// False when the session's queue is full (the caller answers a
  /// retryable error and keeps the item).
  bool can_enqueue(const std::string& session) const {
    auto it = sessions_.find(session);
    return it == sessions_.end() || it->second.items.size() < options_.max_queue_depth;
  }

  /// Appends to the session's FIFO. Check can_enqueue() first. A session
  /// in a `group` (its harness) with a `group_limit` runs only while fewer
  /// than that many turns of the group run; it waits in its queue
  /// meanwhile (0: only the global limit).
  void enqueue(const std::string& session, Lane lane, T item, const std::string& group = {},
               std::size_t group_limit = 0) {
    auto& s = sessions_[session];
    if (!s.active) s.group = group;  // an active turn keeps counting where it started
    if (!group.empty()) group_limits_[group] = group_limit;
    bool was_empty = s.items.empty();
    s.items.push_back(Item{next_ticket_++, lane, std::move(item)});
    if (was_empty && !s.active) mark_ready(session, s);
  }

  /// The next turn to start, or nothing when no slot is free or nothing is
  /// ready. The session becomes active until finished().
  std::optional<Started> next() {
    if (running_ >= options_.max_concurrent_runs) return std::nullopt;
    // Per lane, the first ready session whose group has room.
    std::array<ReadySet::iterator, kLaneCount> first;
    for (int l = 0; l < kLaneCount; ++l) {
      first[l] = std::find_if(ready_[l].begin(), ready_[l].end(),
                              [this](const auto& entry) { return has_room(sessions_.at(entry.second).group); });
    }
    int lane = pick_lane(first);
    if (lane < 0) return std::nullopt;
    std::string key = first[lane]->second;
    ready_[lane].erase(first[lane]);
    auto& s = sessions_.at(key);
    s.ready_lane = -1;
    Item item = std::move(s.items.front());
    s.items.pop_front();
    s.active = true;
    ++running_;
    if (!s.group.empty()) ++group_running_[s.group];
    return Started{std::move(key), item.lane, std::move(item.value)};
  }

  /// The session's active turn ended; its next prompt becomes ready.
  /// Unknown sessions (dropped meanwhile) are ignored.
  void finished(const std::string& session) {
    auto it = sessions_.find(session);
    if (it == sessions_.end() || !it->second.active) return;
    it->second.active = false;
    --running_;
    release_group(it->second.group);
    if (it->second.items.empty()) {
      sessions_.erase(it);
    } else {
      mark_ready(session, it->second);
    }
  }

  /// Forgets the session: returns its queued items (oldest first) and frees
  /// its slot if it was active.
  std::vector<T> drop(const std::string& session) {
    std::vector<T> out;
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return out;
    unmark_ready(it->second);
    if (it->second.active) {
      --running_;
      release_group(it->second.group);
    }
    for (auto& item : it->second.items) out.push_back(std::move(item.value));
    sessions_.erase(it);
    return out;
  }

  /// Removes the first queued item (of any session) for which `pred` holds.
  std::optional<std::pair<std::string, T>> remove_if(const std::function<bool(const T&)>& pred) {
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      auto& items = it->second.items;
      for (auto item = items.begin(); item != items.end(); ++item) {
        if (!pred(item->value)) continue;
        bool head = item == items.begin();
        if (head) unmark_ready(it->second);
        std::pair<std::string, T> out{it->first, std::move(item->value)};
        items.erase(item);
        if (items.empty() && !it->second.active) {
          sessions_.erase(it);
        } else if (head && !it->second.active) {
          mark_ready(out.first, it->second);
        }
        return out;
      }
    }
    return std::nullopt;
  }

  /// The session's next queued item, or null.
  T* front(const std::string& session) {
    auto it = sessions_.find(session);
    return it == sessions_.end() || it->second.items.empty() ? nullptr : &it->second.items.front().value;
  }

  /// Visits the queued items of a session, oldest first.
  void for_each_queued(const std::string& session, const std::function<void(const T&, Lane)>& fn) const {
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    for (const auto& item : it->second.items) fn(item.value, item.lane);
  }

  std::size_t queued(const std::string& session) const {
    auto it = sessions_.find(session);
    return it == sessions_.end() ? 0 : it->second.items.size();
  }
  bool active(const std::string& session) const {
    auto it = sessions_.find(session);
    return it != sessions_.end() && it->second.active;
  }
  std::size_t running() const { return running_; }
  /// Turns of `group` running now.
  std::size_t running(const std::string& group) const {
    auto it = group_running_.find(group);
    return it == group_running_.end() ? 0 : it->second;
  }
  std::size_t total_queued() const {
    std::size_t n = 0;
    for (const auto& [key, s] : sessions_) n += s.items.size();
    return n;
  }

 private:
  struct Item {
    std::uint64_t ticket;
    Lane lane;
    T value;
  };
  struct SessionQueue {
    std::deque<Item> items;
    bool active = false;
    // Where the session sits among the ready ones: its head's lane and ticket.
    int ready_lane = -1;
    std::uint64_t ready_ticket = 0;
    std::string group;  // empty: none
  };
  using ReadySet = std::set<std::pair<std::uint64_t, std::string>>;

  bool has_room(const std::string& group) const {
    if (group.empty()) return true;
    auto limit = group_limits_.find(group);
    return limit == group_limits_.end() || limit->second == 0 || running(group) < limit->second;
  }
  void release_group(const std::string& group) {
    auto it = group_running_.find(group);
    if (it == group_running_.end()) return;
    if (--it->second == 0) group_running_.erase(it);
  }

  // A session is ready when it has a queued head and no active turn. Ready
  // sessions wait per lane in the order their head prompt arrived.
  void mark_ready(const std::string& key, SessionQueue& s) {
    const Item& head = s.items.front();
    s.ready_lane = static_cast<int>(head.lane);
    s.ready_ticket = head.ticket;
    ready_[s.ready_lane].emplace(head.ticket, key);
  }

  void unmark_ready(SessionQueue& s) {
    if (s.ready_lane < 0) return;
    auto& set = ready_[s.ready_lane];
    for (auto it = set.lower_bound({s.ready_ticket, std::string()}); it != set.end() && it->first == s.ready_ticket;) {
      it = set.erase(it);
    }
    s.ready_lane = -1;
  }

  // Smooth weighted round-robin over the lanes that have ready sessions:
  // each gets its weight in credit, the richest goes, and pays the total.
  // With weights 4:2:1 and all lanes busy the order is I S I B I S I ...,
  // and every lane with work gets a start within one cycle.
  // Lanes whose ready sessions all wait for their group take no part.
  int pick_lane(const std::array<ReadySet::iterator, kLaneCount>& first) {
    int best = -1;
    long total = 0;
    for (int l = 0; l < kLaneCount; ++l) {
      if (first[l] == ready_[l].end()) continue;
      credit_[l] += options_.lane_weights[l];
      total += options_.lane_weights[l];
      if (best < 0 || credit_[l] > credit_[best]) best = l;
    }
    if (best >= 0) credit_[best] -= total;
    // A lane with nothing waiting keeps no credit, so it cannot hoard
    // priority for later.
    for (int l = 0; l < kLaneCount; ++l) {
      if (first[l] == ready_[l].end() && l != best) credit_[l] = 0;
    }
    return best;
  }

  SchedulerOptions options_;
  std::unordered_map<std::string, SessionQueue> sessions_;
  std::array<ReadySet, kLaneCount> ready_;
  std::unordered_map<std::string, std::size_t> group_limits_;
  std::unordered_map<std::string, std::size_t> group_running_;
  std::array<long, kLaneCount> credit_{};
  std::size_t running_ = 0;
  std::uint64_t next_ticket_ = 0;
};

}  // namespace harnessd::queue
