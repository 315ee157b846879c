// `harnessd runs` and `harnessd sessions`: read the state directory
// directly (no daemon needed, and safe while daemons write to it).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "schema/expected.h"
#include "worker/ledger.h"
#include "worker/state_db.h"
#include "worker/session_record.h"

namespace harnessd::worker {

struct Config;

struct RunsQuery {
  std::string state_dir;
  std::optional<std::string> session;  // a session id or name
  std::optional<std::string> state;    // the run's last event
  bool follow = false;
  /// Every recorded transition of the matching runs (the ledger), oldest
  /// first, instead of one line per run; `state` then matches the event.
  bool transitions = false;
  std::string format = "text";  // text or json
};

/// Prints matching runs, oldest first (or their transitions); with
/// `follow`, then prints each new ledger entry as it is written, until
/// interrupted. Returns the exit code.
int runs_command(const RunsQuery& query);

/// Prints the harness profiles: kind, the program each runs and where it
/// resolves on PATH, or that it is missing and how to install it. With
/// `check`, also runs `<program> --version`.
/// Running daemons of `state_dir` that hold a harness unavailable (its
/// start breaker open) are named under it.
int harnesses_command(const Config& config, bool check, const std::string& format, const std::string& state_dir);

/// Every session record of the state directory, by session id.
std::map<std::string, SessionRecord> read_session_records(const std::string& state_dir);

/// What a session's adapter is doing, as far as its record and the
/// processes alive tell another process: {state: "live", pid},
/// {state: "idle", pid, since}, {state: "evicted", since} or
/// {state: "none"}. `served`: a live process holds the session's lease;
/// `running`: one of its runs has started and not ended.
nlohmann::json adapter_state(const SessionRecord& r, bool served, bool running);

/// Prints every session record: id, name, harness, cwd, state, adapter, runs.
int sessions_command(const std::string& state_dir, const std::string& format, bool all);

/// Prints what the state directory holds now: the daemons serving it,
/// sessions open and served, their adapters (live, idle, evicted), runs
/// by state. Returns the exit code.
int status_command(const std::string& state_dir, const std::string& format,
                   const std::optional<nlohmann::json>& server = std::nullopt);

/// Prints one run from the ledger and its recording: who ran it and when,
/// how it ended, the prompt, each tool call with its outcome and time, the
/// answer, the usage and the files of its folder. Returns the exit code.
/// `file`: print only that file of the run (events.jsonl, stderr.log, ...);
/// `export_to`: write every file of the run into that folder.
int show_command(const std::string& state_dir, const std::string& run_id, const std::string& format,
                 const std::string& file = "", const std::string& export_to = "");

/// The state database of `state_dir` (open at `root`) for the command
/// line, or nullptr when nothing was recorded there yet. The ledger and
/// session records of an earlier, file-only state directory are imported
/// first, once.
Expected<std::unique_ptr<StateDb>> open_state_db(const std::string& state_dir, int root);

/// Every session record of `db` by id; records that cannot be read are
/// said on stderr and skipped.
std::map<std::string, SessionRecord> session_records(StateDb& db);

}  // namespace harnessd::worker
