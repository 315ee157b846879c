// Commands that ask the state directory's server: watch a session, wait
// for a run, cancel a run or a session's turn, close a session, and the
// server's part of `harnessd status`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace harnessd::worker {

/// Exit codes of `harnessd wait` past those of `harnessd run`: still
/// running when --timeout passed.
inline constexpr int kWaitPending = 4;

/// `harnessd watch ID|NAME`: the session's frames from `from` (replay),
/// then live until the session closes (0), the server goes (1) or a signal.
int watch_command(const std::string& socket, const std::string& target, std::uint64_t from, const std::string& format);
/// `harnessd wait RUN`: through the server when one listens, else by
/// reading the ledger; the exit code of `harnessd run` for that outcome.
int wait_command(const std::optional<std::string>& socket, const std::string& state_dir, const std::string& run_id,
                 std::optional<double> timeout_s, const std::string& format);
/// `harnessd cancel RUN|ID|NAME`: a queued or running run, or the running
/// turn of a session, through the server.
int cancel_command(const std::string& socket, const std::string& target);
/// `harnessd close ID|NAME` through the server.
int close_through_server(const std::string& socket, const std::string& target);
/// The server's `_harnessd/status`, or nullopt when none answers.
std::optional<nlohmann::json> server_status(const std::string& socket);

}  // namespace harnessd::worker
