// Changing the state directory from the command line, without a daemon:
// closing sessions (`close`, `prune`) and removing what a session recorded
// (`forget`). A session a running daemon serves is left to that daemon.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "schema/expected.h"
#include "worker/config.h"

namespace harnessd::worker {

class StateDb;

struct Collected {
  std::size_t runs = 0;
  std::size_t sessions = 0;
  std::uint64_t bytes = 0;
  std::size_t problems = 0;  // files that could not be removed (said through `said`)
};

/// Rewrites session `session_id`'s segment without the lines of the runs
/// `gone` (renamed over it; appends waiting meanwhile go to the new file).
/// Returns the bytes dropped.
Expected<std::uint64_t> compact_segment(int root, const std::string& session_id, const std::set<std::string>& gone);

/// Removes what `retention` lets go, in chunks, each in a short
/// transaction: runs that ended and are past it (their folder first, then
/// their rows), then closed sessions with no run left (transcript, a
/// bridge's state, then the record). A run that has not ended is never
/// touched. `dry_run` removes nothing; `said` hears every item ("would
/// remove ..." or a problem). Once `stop` is set it stops after the chunk
/// under way (at least one chunk of runs and one of sessions is done).
Expected<Collected> collect_garbage(StateDb& db, int root, const Retention& retention, bool dry_run,
                                    const std::function<void(const std::string&)>& said,
                                    const std::atomic<bool>* stop = nullptr);

/// `harnessd gc [--dry-run]`. Returns the exit code.
int gc_command(const std::string& state_dir, const Retention& retention, bool dry_run);

/// Marks the session `target` (an id, or the name of open sessions) closed
/// in its record, unless a running daemon serves it. Returns the exit code.
int close_command(const std::string& state_dir, const std::string& target);

/// Closes every open session that no running daemon serves, or only those
/// idle longer than `older_than` ("90s", "30m", "12h", "7d"); `dry_run`
/// lists them and changes nothing. Returns the exit code.
int prune_command(const std::string& state_dir, const std::optional<std::string>& older_than, bool dry_run);

/// Removes what the session `target` (an id, or a name or host's name that
/// only one session has) recorded of its content: every run's folder
/// (request, packaged prompt, frames, stderr, result), the transcript, a
/// bridge's state for it, and the record's summary, oneshot history and MCP
/// servers; the record is kept, closed. The ledger's lines stay (times,
/// states, errors). Refused while a running daemon serves the session.
/// `dry_run` lists what would go. Returns the exit code.
int forget_command(const std::string& state_dir, const std::string& target, bool dry_run);

}  // namespace harnessd::worker
