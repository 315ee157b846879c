// NDJSON framing: LF or CRLF, blank lines skipped, bounded line length.
#include "acp/line_splitter.h"

#include <algorithm>

#include "acp/log.h"

namespace harnessd::acp {

LineSplitter::LineSplitter(std::size_t max_line_bytes, LineFn on_line, OverlongFn on_overlong)
    : max_(max_line_bytes), on_line_(std::move(on_line)), on_overlong_(std::move(on_overlong)) {}

void LineSplitter::emit(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  bool blank = std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
  if (blank) return;
  // One line's failure never reaches the next line or the reader's buffer.
  try {
    on_line_(line);
  } catch (const std::exception& e) {
    log::error(std::string("a line could not be handled: ") + e.what());
  }
}

void LineSplitter::feed(std::string_view data) {
  while (!data.empty()) {
    auto nl = data.find('\n');
    std::string_view part = data.substr(0, nl);
    if (discarding_) {
      discarded_ += part.size();
    } else if (buffer_.size() + part.size() > max_) {
      // Keep only a prefix; the rest of the line is counted, not stored.
      std::size_t total = buffer_.size() + part.size();
      if (buffer_.size() < kOverlongPrefix) {
        buffer_.append(part.substr(0, std::min(kOverlongPrefix - buffer_.size(), part.size())));
      } else {
        buffer_.resize(kOverlongPrefix);
      }
      discarded_ = total;
      discarding_ = true;
    } else if (nl != std::string_view::npos && buffer_.empty()) {
      emit(part);  // fast path: a whole line inside one read, no copy
    } else {
      buffer_.append(part);
    }
    if (nl == std::string_view::npos) return;
    data.remove_prefix(nl + 1);
    end_line();
  }
}

void LineSplitter::finish() { end_line(); }

void LineSplitter::end_line() {
  // The buffer is moved out first: a callback may feed more data.
  std::string line;
  line.swap(buffer_);
  if (discarding_) {
    std::size_t size = discarded_;
    discarding_ = false;
    discarded_ = 0;
    try {
      on_overlong_(line, size);
    } catch (const std::exception& e) {
      log::error(std::string("an over-long line could not be handled: ") + e.what());
    }
  } else if (!line.empty()) {
    emit(line);
  }
}

}  // namespace harnessd::acp
