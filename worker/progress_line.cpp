// Drawn 150 ms after the start, then every 250 ms, over itself: a carriage
// return and erase-line (ESC [K) replace the line in place.
#include "worker/progress_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

#include "acp/files.h"
#include "acp/utf8.h"

namespace harnessd::worker {

ProgressLine::ProgressLine(acp::Loop& loop, std::string harness, std::chrono::steady_clock::time_point started,
                           std::function<bool()> answer_mid_line)
    : harness_(std::move(harness)), started_(started), answer_mid_line_(std::move(answer_mid_line)), timer_(loop) {}

void ProgressLine::start(const std::string& mode) {
  on_ = mode == "always" || (mode == "auto" && ::isatty(2) == 1);
  if (!on_) return;
  answer_on_terminal_ = ::isatty(1) == 1 && ::isatty(2) == 1;
  timer_.start(std::chrono::milliseconds(150), [this] { draw(); });
}

void ProgressLine::draw() {
  if (!on_) return;
  const bool mid_line = answer_on_terminal_ && answer_mid_line_();
  if (!mid_line) {
    auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f s", took);
    std::string line = "harnessd: " + std::string(seconds) + " \u00b7 " + harness_ + " \u00b7 " + activity_;
    // Never wider than the terminal: a wrapped line cannot be redrawn.
    winsize ws{};
    std::size_t cols = ::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 100;
    if (line.size() > cols - 1) line = line.substr(0, acp::utf8::safe_cut(line, cols - 1));
    acp::write_all(2, "\r\x1b[K" + line);
    drawn_ = true;
  }
  timer_.start(std::chrono::milliseconds(250), [this] { draw(); });
}

void ProgressLine::clear() {
  if (!drawn_) return;
  acp::write_all(2, "\r\x1b[K");
  drawn_ = false;
}

void ProgressLine::stop() {
  on_ = false;
  timer_.stop();
  clear();
}

}  // namespace harnessd::worker
