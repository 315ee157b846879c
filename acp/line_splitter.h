// LineSplitter: NDJSON framing of an inbound byte stream. Pure code, no I/O.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace harnessd::acp {

/// Splits bytes into lines on LF, strips one trailing CR, and skips lines
/// that are empty or only whitespace. A line longer than `max_line_bytes` is
/// not buffered: its first bytes are kept (so the caller can still find the
/// request id) and `on_overlong` fires once the line ends.
class LineSplitter {
 public:
  using LineFn = std::function<void(std::string_view line)>;
  /// `prefix` holds up to kOverlongPrefix bytes of the line; `size` is its
  /// full length in bytes.
  using OverlongFn = std::function<void(std::string_view prefix, std::size_t size)>;

  static constexpr std::size_t kOverlongPrefix = 4096;

  LineSplitter(std::size_t max_line_bytes, LineFn on_line, OverlongFn on_overlong);

  /// Feeds bytes. Callbacks run synchronously, in order.
  void feed(std::string_view data);
  /// End of input: a final line without LF is delivered as a line (a peer
  /// that exits after its last message is not penalised).
  void finish();
  /// Bytes buffered for the current, unfinished line.
  std::size_t buffered() const { return buffer_.size(); }

 private:
  void emit(std::string_view line);
  /// Delivers the buffered line (or reports the discarded one) and resets.
  void end_line();

  std::size_t max_;
  LineFn on_line_;
  OverlongFn on_overlong_;
  std::string buffer_;
  bool discarding_ = false;
  std::size_t discarded_ = 0;
};

}  // namespace harnessd::acp
