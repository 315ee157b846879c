// Logging to stderr. stdout belongs to the protocol, so nothing here ever
// touches fd 1.
#pragma once

#include <string_view>

namespace harnessd::acp::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

/// Lines below this level are dropped. Set once at start-up (single thread).
void set_level(Level level);
Level level();
/// Parses "debug", "info", "warn", "error" or "off"; false when unknown.
bool parse_level(std::string_view text, Level& out);

/// Makes stderr non-blocking when it is a pipe, so a host that never drains
/// our stderr cannot stall the event loop; lines that do not fit are
/// dropped and counted.
void make_stderr_nonblocking();

/// Writes one line `harnessd: <level>: <message>` to stderr with a single
/// write(2). Newlines inside the message are replaced by spaces.
void write(Level level, std::string_view message);

inline void debug(std::string_view m) { if (level() <= Level::kDebug) write(Level::kDebug, m); }
inline void info(std::string_view m) { if (level() <= Level::kInfo) write(Level::kInfo, m); }
inline void warn(std::string_view m) { if (level() <= Level::kWarn) write(Level::kWarn, m); }
inline void error(std::string_view m) { if (level() <= Level::kError) write(Level::kError, m); }

}  // namespace harnessd::acp::log
