// Run recordings: ordered writes through the store, first error kept.
#include "worker/run_recorder.h"
#include "acp/json_write.h"
#include "schema/json_parse.h"
#include "worker/segment.h"

#include <chrono>

namespace harnessd::worker {

using nlohmann::json;

RunRecorder::RunRecorder(Store& store, LedgerEntry base, Policy policy, std::uint64_t tag)
    : store_(store), base_(std::move(base)), dir_(Store::run_dir(base_.runId)), policy_(policy), tag_(tag) {}

std::int64_t RunRecorder::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool RunRecorder::keep(std::size_t bytes) {
  if (cut_) return false;
  if (policy_.max_bytes == 0 || kept_ + bytes <= policy_.max_bytes) {
    kept_ += bytes;
    return true;
  }
  cut_ = true;
  append_event("{\"t\":" + std::to_string(now_ms()) + ",\"cut\":\"the recording reached its bound of " +
               std::to_string(policy_.max_bytes) +
               " bytes ([daemon] max_recording_bytes); later frames and stderr are counted in result.json, "
               "not kept\"}\n");
  return false;
}

Store::Done RunRecorder::track() {
  return [shared = shared_](Expected<void> r) mutable {
    if (r || shared->error) return;
    shared->error = r.error().message;
    if (shared->on_failure) {
      auto fn = std::move(shared->on_failure);
      shared->on_failure = nullptr;
      fn(*shared->error);
    }
  };
}

void RunRecorder::on_failure(acp::UniqueFunction<void(const std::string&)> fn) { shared_->on_failure = std::move(fn); }

void RunRecorder::add_file(const std::string& rel, std::string bytes) {
  if (policy_.metadata_only) return;
  // Files the harness reads are real files, in the run's own folder.
  if (!harness_reads_) store_.make_dir(dir_, track());
  harness_reads_ = true;
  // Folders of the run folder are made in the same writer lane, in order.
  for (std::size_t slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) {
    store_.make_dir(dir_ + "/" + rel.substr(0, slash), track());
  }
  store_.create_file(dir_ + "/" + rel, std::move(bytes), track());
}

void RunRecorder::record(std::string lines) {
  if (store_.extend_lines(shared_.get(), [&](std::string& data) { data += lines; })) return;
  store_.record_lines(base_.sessionId, base_.runId, std::move(lines), track(), shared_.get());
}

void RunRecorder::prepare(const json& request, std::string prompt_md) {
  if (prepared_) return;
  prepared_ = true;
  // One append to the session's segment: no file or folder is created.
  const std::string& run = base_.runId;
  if (policy_.metadata_only) {
    // What was asked, not what it said.
    const json* params = request.is_object() && request.contains("params") ? &request["params"] : nullptr;
    const json* blocks = params && params->is_object() && params->contains("prompt") ? &(*params)["prompt"] : nullptr;
    json shown = {{"jsonrpc", "2.0"},
                  {"id", request.value("id", json())},
                  {"method", request.value("method", "")},
                  {"recording", "metadata"},
                  {"promptBlocks", blocks && blocks->is_array() ? blocks->size() : 0},
                  {"promptBytes", prompt_md.size()}};
    request_written_ = true;
    record(segment::file_line(run, "request.json",
                              acp::json_text(shown, 2) + "\n", true) +
           segment::file_line(run, "prompt.md", "(not recorded: this harness records metadata only)\n", true));
    return;
  }
  // request.json is the run's first host>harnessd frame (segment.h), which
  // start_turn records; only a run that never gets that far writes it
  // (write_request()).
  record(segment::file_line(run, "prompt.md", prompt_md, true));
}

void RunRecorder::write_request(const json& request) {
  if (!prepared_ || request_written_) return;
  request_written_ = true;
  record(segment::file_line(base_.runId, "request.json", acp::json_text(request, 2) + "\n", true));
}

void RunRecorder::open(Done ready) {
  LedgerEntry started = base_;
  started.event = run_event::kStarted;
  started.time.clear();
  store_.record(std::move(started), track());
  // The turn does not wait for its folder, so a hand-off creates no file on
  // its path: what is still being written fails the run like any later
  // write would (on_failure). Only files the harness is given to read must
  // be there before it starts.
  if (shared_->error) return ready(Error{*shared_->error});
  if (!harness_reads_) return ready({});
  // The writer runs in order: once this barrier is through, so is all of
  // the above, and the first error (if any) is known.
  store_.barrier(base_.runId, base_.sessionId, [shared = shared_, ready = std::move(ready)](Expected<void>) mutable {
    if (shared->error) {
      ready(Error{*shared->error});
    } else {
      ready({});
    }
  });
}

std::string RunRecorder::tag_once() {
  if (tagged_) return {};
  tagged_ = true;
  return segment::tag_line(base_.runId, tag_);
}

void RunRecorder::append_event(std::string line) {
  // Offsets count bytes of the run's events.jsonl as it reads back.
  events_bytes_ += line.size();
  record(tag_once() + segment::event_line(tag_, line));
}

void RunRecorder::event(const char* direction, std::string_view line, bool is_json) {
  last_frame_at_.reset();
  if (policy_.metadata_only) {
    std::string out = frame_metadata(now_ms(), direction, line);
    if (!keep(out.size())) {
      ++frames_dropped_;
      frame_bytes_dropped_ += line.size();
      return;
    }
    append_event(std::move(out));
    return;
  }
  // The first host>harnessd frame of a run is its request: kept whole, it
  // is what request.json reads back as; otherwise request.json is written.
  const bool request = prepared_ && !request_written_ && std::string_view(direction) == "host>harnessd";
  // The frame plus its wrapping, near enough to decide without building it.
  if (!keep(line.size() + 48)) {
    ++frames_dropped_;
    frame_bytes_dropped_ += line.size();
    if (request) write_request(parsed_or_text(line));
    return;
  }
  if (is_json || schema::accept_json(line)) {
    if (request) request_written_ = true;
    // Written as a short tagged line (segment.h); events.jsonl reads back
    // the classic line.
    // Straight into the lines this recording already asked for in this
    // loop iteration (Store::extend_lines): a flood of frames costs one
    // store job per read, not one per frame.
    std::size_t added = 0;
    auto write = [&](std::string& out) {
      out += tag_once();
      added = segment::append_frame(out, tag_, now_ms(), direction, line);
    };
    last_frame_at_ = events_bytes_;
    if (!store_.extend_lines(shared_.get(), write)) {
      std::string out;
      write(out);
      store_.record_lines(base_.sessionId, base_.runId, std::move(out), track(), shared_.get());
    }
    events_bytes_ += added;
    return;
  }
  // Not JSON (a banner, a cut line): kept as text.
  if (request) write_request(json(std::string(line)));
  std::string out = "{\"t\":" + std::to_string(now_ms()) + ",\"dir\":\"" + direction + "\",\"raw\":" +
                    acp::json_text(json(std::string(line))) + "}\n";
  last_frame_at_ = events_bytes_;
  append_event(std::move(out));
}

void RunRecorder::stderr_data(std::string_view data) {
  if (policy_.metadata_only) {
    stderr_bytes_ += data.size();
    return;
  }
  if (!keep(data.size())) {
    stderr_bytes_dropped_ += data.size();
    return;
  }
  record(segment::file_line(base_.runId, "stderr.log", data, false));
}

void RunRecorder::finish(const std::string& event, json outcome, std::string result, Done done,
                         bool failure_fails) {
  // result.json, then the terminal line, in the lane of the session's
  // segment, so every ended run has a result.json, also one that never
  // started. A result.json cut by a crash is written again by the next
  // start's recovery.
  LedgerEntry end = base_;
  end.event = event;
  end.time.clear();
  end.extra = std::move(outcome);
  if (policy_.metadata_only || cut_) {
    // Rare: the recording's own facts join what the turn wrote.
    json recorded = json::parse(result, nullptr, false);
    if (recorded.is_object()) {
      if (policy_.metadata_only) recorded["recording"] = {{"mode", "metadata"}, {"stderrBytes", stderr_bytes_}};
      if (cut_) {
        recorded["recording"] = {{"cut", true},
                                 {"maxBytes", policy_.max_bytes},
                                 {"framesDropped", frames_dropped_},
                                 {"frameBytesDropped", frame_bytes_dropped_},
                                 {"stderrBytesDropped", stderr_bytes_dropped_}};
      }
      result = acp::json_text(recorded, 2) + "\n";
    }
  }
  store_.end_run(std::move(result), std::move(end), failure_fails, true, track());
  // Answered once the session's segment and transcript hold every frame of
  // the turn, and the files given to the harness are written (those are in
  // the run's own lane).
  const std::string other = harness_reads_ ? base_.runId : std::string();
  store_.barrier(
      base_.sessionId, other,
      [shared = shared_, done = std::move(done)](Expected<void>) mutable {
        if (shared->error) {
          done(Error{*shared->error});
        } else {
          done({});
        }
      },
      /*after_end=*/true);
}

std::string RunRecorder::frame_metadata(std::int64_t t, const char* direction, std::string_view line) {
  json out = {{"t", t}, {"dir", direction}, {"bytes", line.size()}};
  if (auto msg = schema::parse_json(line); msg && msg->is_object()) {
    if (auto m = msg->find("method"); m != msg->end() && m->is_string()) out["method"] = *m;
    if (auto id = msg->find("id"); id != msg->end() && (id->is_string() || id->is_number())) out["id"] = *id;
    if (auto params = msg->find("params"); params != msg->end() && params->is_object()) {
      auto update = params->find("update");
      if (update != params->end() && update->is_object()) {
        if (auto kind = update->find("sessionUpdate"); kind != update->end() && kind->is_string()) out["kind"] = *kind;
      }
    }
    if (auto result = msg->find("result"); result != msg->end() && result->is_object()) {
      if (auto stop = result->find("stopReason"); stop != result->end() && stop->is_string()) out["stopReason"] = *stop;
    }
    if (auto error = msg->find("error"); error != msg->end() && error->is_object()) {
      if (auto code = error->find("code"); code != error->end() && code->is_number_integer()) out["errorCode"] = *code;
    }
  }
  return acp::json_text(out) + "\n";
}

json RunRecorder::parsed_or_text(std::string_view line) {
  if (auto parsed = schema::parse_json(line)) return std::move(*parsed);
  return json(std::string(line));
}

std::string render_prompt_markdown(const json& blocks) {
  std::string out;
  for (const auto& b : blocks) {
    std::string type = b.value("type", "");
    if (!out.empty()) out += "\n";
    if (type == "text") {
      out += b.value("text", "") + "\n";
    } else if (type == "resource_link") {
      out += "- [" + b.value("name", "") + "](" + b.value("uri", "") + ")\n";
    } else if (type == "resource") {
      const json& r = b.contains("resource") ? b["resource"] : json::object();
      out += "Resource " + r.value("uri", "") + ":\n\n```\n" + r.value("text", "(binary)") + "\n```\n";
    } else {
      out += "[" + type + " " + b.value("mimeType", "") + "]\n";
    }
  }
  return out;
}

}  // namespace harnessd::worker
