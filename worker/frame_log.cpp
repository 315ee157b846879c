#include "worker/frame_log.h"

#include <algorithm>
#include <memory>

namespace harnessd::worker {

FrameLog::FrameLog(Emit emit, ReadStored read, std::size_t max_kept_bytes)
    : emit_(std::move(emit)), read_(std::move(read)), max_kept_bytes_(max_kept_bytes) {}

void FrameLog::set_base(std::uint64_t frames) {
  if (base_known_) return;
  base_ = frames;
  base_known_ = true;
  // Watches that came before the count start now (each from its own place).
  for (std::size_t i = 0; i < watches_.size(); ++i) {
    if (!watches_[i].live) begin(watches_[i]);
  }
}

void FrameLog::add(std::string_view frame) {
  ++added_;
  kept_.emplace_back(frame);
  kept_bytes_ += frame.size();
  // The oldest frames of a long turn give way; a watch that asks for them
  // reads them from the store, where they are by then.
  while (kept_bytes_ > max_kept_bytes_ && kept_.size() > 1) {
    kept_bytes_ -= kept_.front().size();
    kept_.pop_front();
    ++first_rel_;
  }
  if (!base_known_) return;
  const std::uint64_t seq = base_ + added_;
  for (std::size_t i = 0; i < watches_.size(); ++i) {
    if (watches_[i].live && seq >= watches_[i].from) emit_(watches_[i].id, seq, kept_.back());
  }
}

void FrameLog::forget_through(std::uint64_t seq) {
  if (!base_known_) return;
  while (!kept_.empty() && first_kept() <= seq) {
    kept_bytes_ -= kept_.front().size();
    kept_.pop_front();
    ++first_rel_;
  }
}

void FrameLog::watch(nlohmann::json watch_id, std::uint64_t from_seq, StartedFn started) {
  watches_.push_back(
      Watch{std::move(watch_id), next_serial_++, std::max<std::uint64_t>(from_seq, 1), false, std::move(started)});
  if (base_known_) begin(watches_.back());
}

void FrameLog::begin(Watch& w) {
  if (w.from >= first_kept()) {
    Started s;
    replay_kept(w, w.from, s);
    return;
  }
  // Older frames are on disk: read them, then what is kept here. Frames
  // recorded meanwhile are kept here too, so nothing falls between.
  const std::uint64_t serial = w.serial;
  std::weak_ptr<bool> alive = alive_;
  read_([this, alive, serial](Expected<std::string> text) mutable {
    if (alive.expired()) return;
    auto it = std::find_if(watches_.begin(), watches_.end(), [&](const Watch& x) { return x.serial == serial; });
    if (it == watches_.end()) return;  // ended meanwhile
    if (!text) {
      StartedFn started = std::move(it->started);
      watches_.erase(it);
      if (started) started(text.error());
      return;
    }
    const nlohmann::json id = it->id;
    Started s;
    const std::uint64_t from = it->from;
    const std::uint64_t kept_from = first_kept();
    std::uint64_t seq = 1;
    for (std::size_t at = 0; at < text->size() && seq < kept_from;) {
      std::size_t end = text->find('\n', at);
      if (end == std::string::npos) end = text->size();
      if (end > at) {
        if (seq >= from) {
          emit_(id, seq, std::string_view(*text).substr(at, end + 1 - at));
          ++s.replayed;
        }
        ++seq;
      }
      at = end + 1;
    }
    // What the store no longer has (retention, a crash's cut lines).
    if (seq < kept_from) s.missing = kept_from - std::max(seq, from);
    replay_kept(*it, std::max(from, kept_from), s);
  });
}

void FrameLog::replay_kept(Watch& w, std::uint64_t from, Started& s) {
  std::uint64_t seq = first_kept();
  for (const std::string& frame : kept_) {
    if (seq >= from) {
      emit_(w.id, seq, frame);
      ++s.replayed;
    }
    ++seq;
  }
  s.next_seq = next_seq();
  w.live = true;
  if (StartedFn started = std::move(w.started)) started(s);
}

bool FrameLog::unwatch(const nlohmann::json& watch_id) {
  auto it = std::find_if(watches_.begin(), watches_.end(), [&](const Watch& w) { return w.id == watch_id; });
  if (it == watches_.end()) return false;
  StartedFn started = std::move(it->started);
  watches_.erase(it);
  if (started) started(Error{"the watch was ended before its replay was out"});
  return true;
}

void FrameLog::end_all(const std::function<void(const nlohmann::json& watch_id)>& each) {
  std::vector<Watch> ending = std::move(watches_);
  watches_.clear();
  for (Watch& w : ending) {
    if (w.started) {
      w.started(Error{"the session closed"});
    } else {
      each(w.id);
    }
  }
}

}  // namespace harnessd::worker
