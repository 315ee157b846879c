// stderr logging with one write(2) per line.
#include "acp/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>

namespace harnessd::acp::log {
namespace {
std::atomic<Level> g_level{Level::kInfo};
std::atomic<unsigned long> g_dropped{0};

const char* level_name(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
    default: return "";
  }
}
}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return g_level; }

bool parse_level(std::string_view text, Level& out) {
  static constexpr std::pair<std::string_view, Level> kNames[] = {
      {"debug", Level::kDebug}, {"info", Level::kInfo}, {"warn", Level::kWarn},
      {"error", Level::kError}, {"off", Level::kOff}};
  for (const auto& [name, l] : kNames) {
    if (text == name) {
      out = l;
      return true;
    }
  }
  return false;
}

void make_stderr_nonblocking() {
  struct stat st {};
  if (fstat(2, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  int flags = fcntl(2, F_GETFL);
  if (flags >= 0) fcntl(2, F_SETFL, flags | O_NONBLOCK);
}

void write(Level level, std::string_view message) {
  std::string line = "harnessd: ";
  line += level_name(level);
  line += ": ";
  unsigned long dropped = g_dropped.exchange(0);
  if (dropped) line += "(" + std::to_string(dropped) + " log lines dropped) ";
  for (char c : message) line.push_back(c == '\n' || c == '\r' ? ' ' : c);
  line.push_back('\n');
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(2, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      g_dropped.fetch_add(1);
      return;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace harnessd::acp::log
