// RunRecorder: the recording of one run, as lines of its session's segment
// (segments/<sessionId>.jsonl, see segment.h), and its ledger lines. The
// prompt is written while the previous turn runs, the request is the run's
// first frame; result.json and the terminal ledger line are written before
// the host is answered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "acp/unique_function.h"
#include "schema/expected.h"
#include "worker/ledger.h"
#include "worker/store.h"

namespace harnessd::worker {

class RunRecorder {
 public:
  using Done = acp::UniqueFunction<void(Expected<void>)>;

  struct Policy {
    /// What the run's frames and stderr may keep together (0: no bound).
    std::size_t max_bytes = 0;
    /// Sizes, times and message kinds only: no prompt, frame content or
    /// stderr is written.
    bool metadata_only = false;
  };

  /// `base` carries the run's identity (runId, sessionId, name, harness,
  /// requestId) for the ledger lines this recorder writes; `tag` stands for
  /// the run in its session's segment (segment.h), new in this process.
  RunRecorder(Store& store, LedgerEntry base, Policy policy, std::uint64_t tag);

  /// Records prompt.md in the session's segment (the turn does not wait for
  /// it). Called while the previous turn of the session runs. request.json
  /// is the run's first host>harnessd frame (event()), written once; a
  /// metadata-only run writes its own now.
  void prepare(const nlohmann::json& request, std::string prompt_md);
  bool prepared() const { return prepared_; }
  /// Writes request.json of a prepared run whose request never became a
  /// frame (it ends before it starts); nothing if it did.
  void write_request(const nlohmann::json& request);
  /// Adds a file the prompt gives the harness to read, in the run's own
  /// folder runs/<runId>/ (after prepare()), e.g. references/1-notes.md;
  /// its folders are created first.
  void add_file(const std::string& rel, std::string bytes);
  /// The turn starts: appends "started". `ready` runs at once, with an
  /// error already known if any: what prepare() asked for is still being
  /// written, and its errors go to on_failure like any later one.
  /// Files made by add_file() (which the harness is told to read) are
  /// waited for.
  void open(Done ready);

  /// Appends one frame to the run's events.jsonl. `direction` is "host>harnessd",
  /// "harnessd>adapter", "adapter>harnessd" or "harnessd>host". Past the
  /// run's bound, the frame is counted instead (once, events.jsonl gets a
  /// line saying so). `is_json`: the caller knows the line is JSON (it
  /// parsed or made it); otherwise it is checked, and kept as text if not.
  void event(const char* direction, std::string_view line, bool is_json = false);
  /// Where in events.jsonl the line of the last event() starts, when it
  /// holds that frame whole (not past the bound, not metadata only).
  std::optional<std::uint64_t> last_frame_at() const { return last_frame_at_; }
  /// The size of events.jsonl so far (what this recorder appended).
  std::uint64_t events_bytes() const { return events_bytes_; }
  /// Appends to the run's stderr.log; past the bound, counted instead.
  void stderr_data(std::string_view data);

  /// Called once with the first write error during the turn (after open).
  void on_failure(acp::UniqueFunction<void(const std::string&)> fn);

  /// Records result.json (`result`, its whole text), then the terminal
  /// `event` with `outcome` fields; `done` gets the first error of the
  /// whole run. With
  /// `failure_fails` (the host is then answered -32016 on an error), a
  /// write error turns the terminal line into `failed` with that error, so
  /// the ledger says what the host heard; without it (the host hears
  /// "cancelled" either way), the line stays as asked. A recording that
  /// reached its bound says so in result.json's "recording".
  void finish(const std::string& event, nlohmann::json outcome, std::string result, Done done,
              bool failure_fails = true);

  const std::string& run_id() const { return base_.runId; }
  const std::string& dir() const { return dir_; }

 private:
  struct Shared {
    std::optional<std::string> error;
    acp::UniqueFunction<void(const std::string&)> on_failure;
  };
  Store::Done track();
  /// Appends segment lines of this run.
  void record(std::string lines);
  void append_event(std::string line);
  /// The line that declares this run's tag, the first time; else nothing.
  std::string tag_once();
  /// True when `bytes` more fit the run's bound; the first time they do
  /// not, events.jsonl is told.
  bool keep(std::size_t bytes);
  /// The events.jsonl line of a frame in metadata-only mode.
  static std::string frame_metadata(std::int64_t t, const char* direction, std::string_view line);
  static nlohmann::json parsed_or_text(std::string_view line);
  static std::int64_t now_ms();

  Store& store_;
  LedgerEntry base_;
  std::string dir_;
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  bool prepared_ = false;
  bool request_written_ = false;  // request.json written, or the request kept as a frame
  bool harness_reads_ = false;  // add_file() was used
  Policy policy_;
  std::uint64_t tag_;
  bool tagged_ = false;  // the segment knows tag_ stands for this run
  std::size_t kept_ = 0;
  std::uint64_t events_bytes_ = 0;
  std::optional<std::uint64_t> last_frame_at_;
  std::size_t stderr_bytes_ = 0;  // metadata only: what stderr said, counted
  bool cut_ = false;
  std::size_t frames_dropped_ = 0;
  std::size_t frame_bytes_dropped_ = 0;
  std::size_t stderr_bytes_dropped_ = 0;
};

/// Renders prompt blocks as the Markdown the harness was given.
std::string render_prompt_markdown(const nlohmann::json& blocks);

}  // namespace harnessd::worker
