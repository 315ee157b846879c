// Preparing a prompt's run folder, and ending a prompt that never ran.
#include "worker/queued_prompt.h"

#include "acp/files.h"
#include "acp/log.h"
#include "worker/turn_outcome.h"

namespace harnessd::worker {

using nlohmann::json;

void answer_cancelled(QueuedPrompt prompt, acp::UniqueFunction<void()> then) {
  TurnFacts facts;
  facts.run_id = prompt.run_id;
  facts.session_id = prompt.ledger.sessionId;
  facts.ended_at = acp::iso_time();
  TurnOutcome o = cancelled_outcome("removed before it started", facts);
  prompt.recorder->write_request(prompt.request);
  // The terminal line is written before the host hears of it.
  prompt.recorder->finish(
      o.event, std::move(o.fields), std::move(o.result_file),
      [reply = std::move(prompt.reply), run_id = prompt.run_id, answer = std::move(*o.answer),
       then = std::move(then)](Expected<void> r) mutable {
        if (!r) acp::log::error("run " + run_id + ": " + r.error().message);
        reply.result(std::move(answer));
        if (then) then();
      },
      /*failure_fails=*/false);
}

void prepare_run(QueuedPrompt& prompt) {
  RunRecorder& recorder = *prompt.recorder;
  if (!recorder.prepared()) recorder.prepare(prompt.request, render_prompt_markdown(prompt.blocks));
}

json prepare_packaged_run(QueuedPrompt& prompt, harnesses::Packaged& packaged) {
  RunRecorder& recorder = *prompt.recorder;
  // The adapter gets one text block; the files it lists (large resources,
  // images) are in the run folder before it starts.
  recorder.prepare(prompt.request, packaged.text);
  for (auto& file : packaged.files) recorder.add_file(file.rel, std::move(file.bytes));
  return json::array({{{"type", "text"}, {"text", std::move(packaged.text)}}});
}

}  // namespace harnessd::worker
