// FrameLog: one session's transcript frames, numbered, for its watchers.
// A frame's number (seq) is its 1-based place in the session's transcript,
// the frames a session/load replays: what the host got, and the user's
// prompts. The frames of this lifetime that may not be on disk yet are kept
// in memory; older ones are read from the stored transcript. A watch gets
// the frames from the number it asks for, then every new one as it is
// recorded: no gap, no duplicate.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/unique_function.h"
#include "schema/expected.h"

namespace harnessd::worker {

class FrameLog {
 public:
  /// Sends one frame to the watch `watch_id` (a line of its own).
  using Emit = std::function<void(const nlohmann::json& watch_id, std::uint64_t seq, std::string_view frame)>;
  /// Reads the stored transcript (every frame written so far and possibly
  /// some after), one frame per line.
  using ReadStored = std::function<void(acp::UniqueFunction<void(Expected<std::string>)> done)>;
  /// What a watch was given before it went live.
  struct Started {
    std::uint64_t next_seq = 0;  // the number of the next frame
    std::uint64_t replayed = 0;  // frames sent before the answer
    std::uint64_t missing = 0;   // asked for but no longer kept anywhere
  };
  using StartedFn = acp::UniqueFunction<void(Expected<Started>)>;

  FrameLog(Emit emit, ReadStored read, std::size_t max_kept_bytes = 4u << 20);

  /// The stored transcript held `frames` frames when the session opened in
  /// this process; watches wait for this.
  void set_base(std::uint64_t frames);
  bool base_known() const { return base_known_; }
  /// Records the next frame (a line, LF included or not) and sends it to
  /// every live watch.
  void add(std::string_view frame);
  /// The number the next frame gets; only once the base is known.
  std::uint64_t next_seq() const { return base_ + added_ + 1; }
  /// Frames up to `seq` are on disk: they need not be kept here.
  void forget_through(std::uint64_t seq);

  /// Starts a watch: the frames from `from_seq` on, then live. `started`
  /// runs once the replay is out and the watch is live.
  void watch(nlohmann::json watch_id, std::uint64_t from_seq, StartedFn started);
  /// Ends a watch; false if there is none by that id.
  bool unwatch(const nlohmann::json& watch_id);
  /// Ends every watch, calling `each` for each id (the session closes).
  void end_all(const std::function<void(const nlohmann::json& watch_id)>& each);
  std::size_t watches() const { return watches_.size(); }

 private:
  struct Watch {
    nlohmann::json id;
    std::uint64_t serial = 0;  // this watch alone, for a read in flight
    std::uint64_t from = 1;
    bool live = false;
    StartedFn started;
  };
  void begin(Watch& w);
  void replay_kept(Watch& w, std::uint64_t from, Started& s);
  std::uint64_t first_kept() const { return base_ + first_rel_; }

  Emit emit_;
  ReadStored read_;
  std::size_t max_kept_bytes_;
  bool base_known_ = false;
  std::uint64_t base_ = 0;
  std::uint64_t added_ = 0;      // frames added in this process
  std::uint64_t first_rel_ = 1;  // kept_.front()'s place among them
  std::size_t kept_bytes_ = 0;
  std::deque<std::string> kept_;
  std::vector<Watch> watches_;
  std::uint64_t next_serial_ = 1;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace harnessd::worker
