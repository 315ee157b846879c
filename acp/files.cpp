#include "acp/files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace harnessd::acp {

bool is_safe_id(std::string_view id) {
  if (id.empty() || id.size() > 100) return false;
  // ASCII letters and digits whatever the locale (and with no call per
  // byte: every recorded frame checks its session id).
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void make_dirs(const std::string& path, unsigned mode) {
  for (std::size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    ::mkdir(path.substr(0, pos).c_str(), static_cast<mode_t>(mode));
    if (pos == std::string::npos) break;
  }
}

int write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

std::string default_state_home() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg == '/') return std::string(xdg) + "/harnessd";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.local/state/harnessd";
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  int milli = static_cast<int>(ms % 1000);
  if (milli < 0) {  // before 1970
    --secs;
    milli += 1000;
  }
  // A run's transitions, records and lines ask for the time many times a
  // second: the seconds are formatted once per second and thread.
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[32] = {};
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_secs = secs;
  }
  // Built whole before the string, which then allocates once.
  char text[sizeof cached + 5];
  const std::size_t n = std::strlen(cached);
  std::memcpy(text, cached, n);
  const char tail[] = {'.', static_cast<char>('0' + milli / 100), static_cast<char>('0' + milli / 10 % 10),
                       static_cast<char>('0' + milli % 10), 'Z'};
  std::memcpy(text + n, tail, sizeof tail);
  return std::string(text, n + sizeof tail);
}

}  // namespace harnessd::acp
