// Shared pieces of the libFuzzer targets: a scratch directory per process,
// and a real Engine (store, agent, scheduler) behind an in-process host
// connection, driven line by line without spawning anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace harnessd::fuzz {

/// Aborts with `what` on stderr: libFuzzer records the input as a crash.
[[noreturn]] void fail(const std::string& what);

/// A directory private to this process (under /dev/shm when it exists, so
/// state files cost no disk), removed at exit.
const std::string& scratch_dir();

/// Replaces `path`'s content with `bytes`.
void write_file(const std::string& path, std::string_view bytes);

/// Points stdout at /dev/null, for targets whose commands print there.
void quiet_stdout();

/// Splits on LF; a last piece without LF is a line too.
std::vector<std::string_view> split_lines(std::string_view text);

/// Runs one daemon lifetime in-process: opens the Engine on `state_dir`
/// (after `prepare` filled it), feeds `lines` to its host connection as a
/// host would (running the loop between lines), then shuts it down as at
/// the end of input and returns every line it wrote (without the LF).
/// Adapters cannot start: PATH and harnessd's own path point nowhere, so
/// prompts fail fast instead of spawning processes.
std::vector<std::string> run_engine(const std::vector<std::string_view>& lines, const std::string& state_dir);

/// Empties and recreates `dir`.
void reset_dir(const std::string& dir);

/// Checks the exchange of run_engine: every output line is one JSON
/// object; every request line (id not null) got exactly one answer with its
/// id, every answer belongs to such a line.
void check_answers(const std::vector<std::string_view>& in, const std::vector<std::string>& out);

}  // namespace harnessd::fuzz
