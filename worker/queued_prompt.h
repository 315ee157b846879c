// QueuedPrompt: a host's prompt from the moment it is queued until its turn
// is answered, with the two things done to a prompt outside a session's
// turn: preparing its run folder, and ending one that never ran.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "acp/connection.h"
#include "acp/unique_function.h"
#include "harnesses/packaging.h"
#include "harnesses/template.h"
#include "worker/ledger.h"
#include "worker/run_recorder.h"

namespace harnessd::worker {

/// A prompt waiting for, or running as, a turn.
struct QueuedPrompt {
  std::string run_id;
  nlohmann::json blocks;   // ContentBlock array, already checked
  nlohmann::json request;  // the host's request, for request.json
  acp::Reply reply;
  std::chrono::milliseconds timeout{0};  // 0: none
  LedgerEntry ledger;                    // the run's identity for ledger lines
  std::unique_ptr<RunRecorder> recorder;  // prepared when queued
  /// Set when the prompt is packaged into one text at the turn's start.
  std::optional<harnesses::Template> packaging;
  nlohmann::json context;  // _meta.harnessd.context, or null
};

/// The one place a run folder is prepared: writes prompt.md, unless
/// already written (request.json is the host's frame, recorded when the
/// turn starts). A plain prompt is prepared while the turn before it runs,
/// and its adapter is given prompt.blocks as sent.
void prepare_run(QueuedPrompt& prompt);
/// A packaged prompt is prepared when its own turn starts, once its history
/// is known: prompt.md and the files `packaged` lists; returns
/// the blocks its adapter is given (one text block).
nlohmann::json prepare_packaged_run(QueuedPrompt& prompt, harnesses::Packaged& packaged);

/// Ends a prompt that never ran (removed from the queue, session closed):
/// records "cancelled", then answers stopReason "cancelled".
/// `then` runs once the answer is sent.
void answer_cancelled(QueuedPrompt prompt, acp::UniqueFunction<void()> then = nullptr);

}  // namespace harnessd::worker
