// Byte streams over file descriptors and libuv pipes: a Reader delivers
// chunks, a Writer sends data in order. stdin and stdout may be a pipe, a
// socket, a tty or a regular file; each case gets the right libuv primitive.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <uv.h>

#include "acp/loop.h"
#include "acp/uv_handle.h"
#include "schema/expected.h"

namespace harnessd::acp {

/// Delivers inbound bytes. Callbacks run on the loop thread. A Reader must
/// not be destroyed from inside its own callbacks: post the destruction.
/// A stream reader delivers at most one 64 KiB chunk per loop iteration, so
/// a peer that floods cannot starve the loop's other streams and writes.
class Reader {
 public:
  using DataFn = std::function<void(std::string_view data)>;
  /// status 0 means end of stream, a negative value is a libuv error.
  using EndFn = std::function<void(int status)>;

  virtual ~Reader() = default;
  /// Starts delivering. `on_end` fires once, after the last data.
  virtual void start(DataFn on_data, EndFn on_end) = 0;
  /// Stops delivering until resume() (backpressure).
  virtual void pause() = 0;
  virtual void resume() = 0;
  /// Delivers at once what can be read without waiting, so bytes already
  /// written by the peer are not left behind a message that came by another
  /// stream. The end of the stream is still reported by the loop.
  virtual void drain() {}
};

/// Sends bytes in the order given. Destroying a Writer drops what is unsent.
/// Stream writers write at once while the peer keeps up, and otherwise hand
/// everything queued meanwhile to the kernel in one batch (one writev).
class Writer {
 public:
  using ErrorFn = std::function<void(int status)>;

  virtual ~Writer() = default;
  /// Queues `data`. After an error, further writes are dropped.
  virtual void write(std::string data) = 0;
  /// Bytes queued but not yet handed to the kernel.
  virtual std::size_t queued_bytes() const = 0;
  /// Backpressure: `fn(true)` once queued_bytes() rises above `high`, then
  /// `fn(false)` once it is back to `low` or below (or the writer failed and
  /// dropped its queue). Runs inside write() or a write completion; `fn` must
  /// not destroy the writer. Writers that never queue never call it.
  virtual void set_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn) {
    (void)high, (void)low, (void)fn;
  }
  /// Called once, on the first write error (EPIPE: the peer went away).
  virtual void on_error(ErrorFn fn) = 0;
  /// Calls `fn` once everything queued so far has been written (or failed).
  virtual void flush(std::function<void()> fn) = 0;
};

/// A reader for an inherited fd (stdin): a pipe or socket (uv_pipe_t), a tty
/// (uv_tty_t) or a regular file or device (uv_fs_read in a chain).
Expected<std::unique_ptr<Reader>> open_fd_reader(Loop& loop, int fd);
/// A writer for an inherited fd (stdout): pipe, tty, or file (plain write).
Expected<std::unique_ptr<Writer>> open_fd_writer(Loop& loop, int fd);

/// Reader and Writer over a pipe created by the caller (a child's stdio).
/// They take ownership of the handle.
std::unique_ptr<Reader> make_pipe_reader(UvHandle<uv_pipe_t> pipe);
std::unique_ptr<Writer> make_pipe_writer(UvHandle<uv_pipe_t> pipe);

}  // namespace harnessd::acp
