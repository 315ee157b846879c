// How the inspecting commands (`harnessd runs`, `sessions`, `show`, ...)
// print for people: times and durations in words, aligned tables, a run's
// state and a ledger entry on one line.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/ledger.h"

namespace harnessd::worker {

/// Writes `line` and a newline to stdout, and flushes it.
void print_line(const std::string& line);

/// Milliseconds since the epoch of harnessd's ISO times
/// ("2026-11-30T23:35:36.734Z"), or -1.
long long iso_ms(const std::string& t);

/// "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min".
std::string duration_words(long long ms);

/// "2026-11-30 23:35:36" from the ISO form (UTC, as recorded); a shorter
/// text is returned as it is, an empty one as "-".
std::string short_time(const std::string& t);

/// Prints rows under a header, each column as wide as its widest cell,
/// two spaces apart; the last column is not padded.
void print_table(const std::vector<std::vector<std::string>>& rows);

/// A string field as read, or "" (state files are read as they are: a field
/// of an unexpected type is left out).
std::string string_field(const nlohmann::json& j, const char* key);

/// A run's state in words, with why it ended that way.
std::string run_state_words(const RunRecord& r);

/// One ledger entry on one line: time, run, session [name], event (why).
std::string describe_entry(const LedgerEntry& e);

}  // namespace harnessd::worker
