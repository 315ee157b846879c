// Reader and Writer implementations: libuv streams for pipes, sockets and
// ttys; a uv_fs_read chain for regular files; plain write(2) for files.
#include "acp/stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <memory>
#include <vector>

#include "acp/log.h"

namespace harnessd::acp {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;

// Reads a libuv stream (pipe, socket or tty). The handle's data points to
// this object; the UvCloser clears it, so no callback reaches a dead owner.
template <class H>
class StreamReader final : public Reader {
 public:
  explicit StreamReader(UvHandle<H> handle) : handle_(std::move(handle)) {
    handle_->data = this;
    auto* idle = new uv_idle_t;
    uv_idle_init(handle_->loop, idle);
    idle->data = this;
    yield_.reset(idle);
  }

  void start(DataFn on_data, EndFn on_end) override {
    on_data_ = std::move(on_data);
    on_end_ = std::move(on_end);
    resume();
  }

  void pause() override {
    if (reading_) uv_read_stop(stream());
    reading_ = false;
    paused_ = true;
    uv_idle_stop(yield_.get());
  }

  void resume() override {
    paused_ = false;
    uv_idle_stop(yield_.get());
    if (reading_ || ended_) return;
    int rc = uv_read_start(stream(), &StreamReader::on_alloc, &StreamReader::on_read);
    if (rc != 0) {
      end(rc);
      return;
    }
    reading_ = true;
  }

 private:
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(handle_.get()); }

  // One read buffer for every stream of the thread: read callbacks consume
  // the bytes before returning, so streams never need their own. Per-stream
  // buffers would cost 64 KiB for each adapter pipe, and harnessd forks to
  // spawn adapters: a large address space makes every fork slower.
  // Left unwritten until a read fills it: zeroing it first would touch all
  // 16 of its pages in every process, most of which short lines never use.
  static char* shared_buffer() {
    thread_local std::unique_ptr<char[]> shared = std::make_unique_for_overwrite<char[]>(kReadChunk);
    return shared.get();
  }
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
    *buf = uv_buf_init(shared_buffer(), static_cast<unsigned>(kReadChunk));
  }

 public:
  void drain() override {
    uv_os_fd_t fd;
    if (ended_ || paused_ || !on_data_ || uv_fileno(reinterpret_cast<uv_handle_t*>(handle_.get()), &fd) != 0) return;
    // libuv keeps the fd non-blocking; reading it here, on the loop thread,
    // only takes bytes its next read would have taken.
    char* buffer = shared_buffer();
    while (!paused_ && !ended_) {  // a handler may pause the reader (backpressure)
      ssize_t n = ::read(fd, buffer, kReadChunk);
      if (n <= 0) return;  // nothing pending, the end (the loop reports it), or an error
      deliver(std::string_view(buffer, static_cast<std::size_t>(n)));
    }
  }

 private:

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* self = static_cast<StreamReader*>(s->data);
    if (!self) return;
    if (nread > 0) {
      self->deliver(std::string_view(buf->base, static_cast<std::size_t>(nread)));
      // libuv reads again, up to 32 times, while reads fill the buffer: a
      // flooding peer would hold the loop for megabytes while writes wait
      // (issue 11). After a full chunk, stop and read on in the next
      // iteration, after the loop has polled every other stream.
      if (static_cast<std::size_t>(nread) == kReadChunk && self->reading_) self->yield();
    } else if (nread < 0) {
      // UV_EOF or a real error; nread == 0 is "try again", not EOF.
      self->end(nread == UV_EOF ? 0 : static_cast<int>(nread));
    }
  }

  void yield() {
    uv_read_stop(stream());
    reading_ = false;
    uv_idle_start(yield_.get(), [](uv_idle_t* idle) noexcept {
      auto* self = static_cast<StreamReader*>(idle->data);
      uv_idle_stop(idle);
      if (self && !self->paused_) self->resume();
    });
  }

  void deliver(std::string_view data) {
    try {
      if (on_data_) on_data_(data);
    } catch (const std::exception& e) {
      log::error(std::string("stream data handler failed: ") + e.what());
    }
  }

  void end(int status) {
    if (ended_) return;
    ended_ = true;
    if (reading_) uv_read_stop(stream());
    reading_ = false;
    uv_idle_stop(yield_.get());
    auto fn = std::move(on_end_);
    try {
      if (fn) fn(status);
    } catch (const std::exception& e) {
      log::error(std::string("stream end handler failed: ") + e.what());
    }
  }

  UvHandle<H> handle_;
  UvHandle<uv_idle_t> yield_;  // resumes reading in the next iteration
  DataFn on_data_;
  EndFn on_end_;
  bool reading_ = false;
  bool paused_ = false;  // by the owner, not by a yield
  bool ended_ = false;
};

// Reads a regular file or device with a chain of uv_fs_read requests. The
// request state lives on the heap and outlives the reader if a read is in
// flight when the reader is destroyed.
class FileReader final : public Reader {
 public:
  FileReader(Loop& loop, int fd) : loop_(loop), state_(new State) {
    state_->fd = fd;
    state_->owner = this;
  }
  ~FileReader() override {
    state_->owner = nullptr;
    if (!state_->in_flight) delete state_;
  }

  void start(DataFn on_data, EndFn on_end) override {
    on_data_ = std::move(on_data);
    on_end_ = std::move(on_end);
    resume();
  }
  void pause() override { paused_ = true; }
  void resume() override {
    paused_ = false;
    if (!state_->in_flight && !ended_) issue();
  }

 private:
  struct State {
    uv_fs_t req{};
    int fd = -1;
    FileReader* owner = nullptr;
    bool in_flight = false;
    std::vector<char> buffer = std::vector<char>(kReadChunk);
  };

  void issue() {
    uv_buf_t buf = uv_buf_init(state_->buffer.data(), static_cast<unsigned>(state_->buffer.size()));
    state_->req.data = state_;
    int rc = uv_fs_read(loop_.get(), &state_->req, state_->fd, &buf, 1, -1, &FileReader::on_read);
    if (rc < 0) {
      end(rc);
      return;
    }
    state_->in_flight = true;
  }

  static void on_read(uv_fs_t* req) noexcept {
    auto* state = static_cast<State*>(req->data);
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    state->in_flight = false;
    FileReader* self = state->owner;
    if (!self) {
      delete state;
      return;
    }
    if (n > 0) {
      try {
        if (self->on_data_) self->on_data_(std::string_view(state->buffer.data(), static_cast<std::size_t>(n)));
      } catch (const std::exception& e) {
        log::error(std::string("file data handler failed: ") + e.what());
      }
      // The handler may have destroyed the reader.
      if (!state->owner) {
        delete state;
        return;
      }
      if (!self->paused_ && !self->ended_) self->issue();
    } else {
      self->end(n == 0 ? 0 : static_cast<int>(n));
    }
  }

  void end(int status) {
    if (ended_) return;
    ended_ = true;
    auto fn = std::move(on_end_);
    if (fn) fn(status);
  }

  Loop& loop_;
  State* state_;
  DataFn on_data_;
  EndFn on_end_;
  bool paused_ = false;
  bool ended_ = false;
};

// Writes to a libuv stream. Lines written during one loop iteration wait in
// `pending_` and go out together just before the loop next polls (a prepare
// handle): one uv_write, with one buffer per line, which libuv writes at
// once with one writev. A flood read from an adapter (hundreds of frames
// per read) thus reaches the host in one system call, not one per frame.
// Lines that come while a batch is still in libuv's hands (the peer is
// slow) wait for its callback and go out as the next batch. One uv_write
// per line made libuv write at most 32 requests per loop iteration while a
// flooding adapter was read 2 MiB at a time, so a live stream crawled
// (issue 11). A batch owns its bytes until libuv calls back, as libuv
// requires.
template <class H>
class StreamWriter final : public Writer {
 public:
  explicit StreamWriter(UvHandle<H> handle) : handle_(std::move(handle)) {
    handle_->data = this;
    auto* prepare = new uv_prepare_t;
    uv_prepare_init(handle_->loop, prepare);
    prepare->data = this;
    prepare_.reset(prepare);
  }
  ~StreamWriter() override {
    // Closed right after a write (a prompt on stdin, then EOF): what waits
    // for the next poll goes out now if the pipe takes it, as a write would
    // have before it was batched. Lines behind a batch still in libuv's
    // hands are dropped with it, as closing a stream does.
    if (batch_ || failed_) return;
    for (const std::string& line : pending_) {
      uv_buf_t buf = uv_buf_init(const_cast<char*>(line.data()), static_cast<unsigned>(line.size()));
      if (uv_try_write(stream(), &buf, 1) != static_cast<int>(line.size())) break;
    }
  }

  void write(std::string data) override {
    if (failed_ || data.empty()) return;
    queued_ += data.size();
    pending_.push_back(std::move(data));
    // Started, it keeps the loop running until the lines are out.
    if (!batch_ && pending_.size() == 1) uv_prepare_start(prepare_.get(), &StreamWriter::on_prepare);
    check_watermarks();
  }

  std::size_t queued_bytes() const override { return queued_; }
  void on_error(ErrorFn fn) override { on_error_ = std::move(fn); }

  void set_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn) override {
    high_ = high;
    low_ = low < high ? low : high;
    on_pressure_ = std::move(fn);
    check_watermarks();
  }

  void flush(std::function<void()> fn) override {
    if (!batch_ && pending_.empty()) {
      fn();
      return;
    }
    flush_waiters_.push_back(std::move(fn));
  }

 private:
  // libuv passes at most IOV_MAX buffers to one writev; more make a batch
  // that takes several system calls, which is fine.
  static constexpr std::size_t kMaxBatchLines = 1024;

  struct Batch {
    uv_write_t req{};
    std::vector<std::string> lines;
    std::size_t bytes = 0;
  };

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(handle_.get()); }

  static void on_prepare(uv_prepare_t* p) noexcept {
    auto* self = static_cast<StreamWriter*>(p->data);
    uv_prepare_stop(p);
    if (self->batch_ || self->pending_.empty()) return;
    self->issue();
    self->settle();
  }

  // Writes what waits at once if the peer takes it (one writev, no
  // callback), else hands the rest to libuv. A write that uv_write finished
  // at once would still call back from the next iteration, whose poll then
  // could not wait: one wasted poll per line sent between two reads.
  void issue() {
    while (!pending_.empty()) {
      std::size_t n = std::min(pending_.size(), kMaxBatchLines);
      bufs_.clear();
      for (std::size_t i = 0; i < n; ++i) {
        bufs_.push_back(uv_buf_init(pending_[i].data(), static_cast<unsigned>(pending_[i].size())));
      }
      int wrote = uv_try_write(stream(), bufs_.data(), static_cast<unsigned>(n));
      if (wrote < 0 && wrote != UV_EAGAIN) {
        fail(wrote);
        return;
      }
      std::size_t done = wrote > 0 ? static_cast<std::size_t>(wrote) : 0;
      while (n > 0 && done >= pending_.front().size()) {
        done -= pending_.front().size();
        queued_ -= pending_.front().size();
        pending_.pop_front();
        --n;
      }
      if (n == 0) continue;
      if (done > 0) {
        queued_ -= done;
        pending_.front().erase(0, done);
      }
      auto* batch = new Batch;
      for (std::size_t i = 0; i < n; ++i) {
        batch->bytes += pending_.front().size();
        batch->lines.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      bufs_.clear();
      for (auto& line : batch->lines) bufs_.push_back(uv_buf_init(line.data(), static_cast<unsigned>(line.size())));
      int rc =
          uv_write(&batch->req, stream(), bufs_.data(), static_cast<unsigned>(bufs_.size()), &StreamWriter::on_write);
      if (rc != 0) {
        queued_ -= batch->bytes;
        delete batch;
        fail(rc);
        return;
      }
      batch_ = batch;
      return;
    }
  }

  static void on_write(uv_write_t* r, int status) noexcept {
    auto* batch = reinterpret_cast<Batch*>(r);
    auto* self = static_cast<StreamWriter*>(r->handle->data);
    std::size_t size = batch->bytes;
    delete batch;
    if (!self) return;  // writer gone; the write was cancelled by the close
    self->batch_ = nullptr;
    self->queued_ -= size;
    if (status != 0) {
      self->fail(status);
    } else if (!self->pending_.empty()) {
      self->issue();
    }
    self->settle();
  }

  // Last: whoever waited for the queue to drain may destroy the writer.
  void settle() {
    check_watermarks();
    if (!batch_ && pending_.empty() && !flush_waiters_.empty()) {
      auto waiters = std::move(flush_waiters_);
      flush_waiters_.clear();
      for (auto& w : waiters) w();
    }
  }

  void check_watermarks() {
    if (!on_pressure_ || high_ == 0) return;
    if (!over_ && queued_ > high_) {
      over_ = true;
      on_pressure_(true);
    } else if (over_ && queued_ <= low_) {
      over_ = false;
      on_pressure_(false);
    }
  }

  void fail(int status) {
    if (failed_) return;
    failed_ = true;
    // Nothing more will be written: the queue is dropped, and whoever
    // waited for it to drain must not wait for ever.
    for (auto& line : pending_) queued_ -= line.size();
    pending_.clear();
    check_watermarks();
    if (on_error_) on_error_(status);
  }

  UvHandle<H> handle_;
  UvHandle<uv_prepare_t> prepare_;   // hands pending_ to libuv before the loop polls
  std::deque<std::string> pending_;  // not yet handed to libuv
  Batch* batch_ = nullptr;           // handed to libuv, awaiting its callback
  std::vector<uv_buf_t> bufs_;       // issue()'s buffers, kept from call to call
  std::size_t queued_ = 0;           // bytes in pending_ and batch_
  std::size_t high_ = 0;
  std::size_t low_ = 0;
  bool over_ = false;
  bool failed_ = false;
  ErrorFn on_error_;
  std::function<void(bool)> on_pressure_;
  std::vector<std::function<void()>> flush_waiters_;
};

// Writes to a regular file or device with blocking write(2): such writes do
// not wait on a peer, so they cannot stall the loop for long.
class FileWriter final : public Writer {
 public:
  explicit FileWriter(int fd) : fd_(fd) {}

  void write(std::string data) override {
    if (failed_) return;
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        failed_ = true;
        if (on_error_) on_error_(-errno);
        return;
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  std::size_t queued_bytes() const override { return 0; }
  void on_error(ErrorFn fn) override { on_error_ = std::move(fn); }
  void flush(std::function<void()> fn) override { fn(); }

 private:
  int fd_;
  bool failed_ = false;
  ErrorFn on_error_;
};

Expected<UvHandle<uv_pipe_t>> open_pipe(Loop& loop, int fd) {
  auto* p = new uv_pipe_t;
  if (int rc = uv_pipe_init(loop.get(), p, 0); rc != 0) {
    delete p;
    return Error{"cannot create a pipe handle: " + uv_error_text(rc)};
  }
  UvHandle<uv_pipe_t> handle(p);
  if (int rc = uv_pipe_open(p, fd); rc != 0) {
    return Error{"cannot open fd " + std::to_string(fd) + " as a pipe: " + uv_error_text(rc)};
  }
  return handle;
}

Expected<UvHandle<uv_tty_t>> open_tty(Loop& loop, int fd, bool readable) {
  auto* t = new uv_tty_t;
  if (int rc = uv_tty_init(loop.get(), t, fd, readable ? 1 : 0); rc != 0) {
    delete t;
    return Error{"cannot open fd " + std::to_string(fd) + " as a terminal: " + uv_error_text(rc)};
  }
  return UvHandle<uv_tty_t>(t);
}

}  // namespace

Expected<std::unique_ptr<Reader>> open_fd_reader(Loop& loop, int fd) {
  switch (uv_guess_handle(fd)) {
    case UV_TTY: {
      auto tty = open_tty(loop, fd, true);
      if (!tty) return tty.error();
      return std::unique_ptr<Reader>(new StreamReader<uv_tty_t>(std::move(*tty)));
    }
    case UV_FILE:
      return std::unique_ptr<Reader>(new FileReader(loop, fd));
    case UV_NAMED_PIPE:
    case UV_TCP:
    case UV_UDP:
    case UV_UNKNOWN_HANDLE:
    default: {
      // Pipes and socketpairs (what Node gives a child) both work as uv_pipe_t.
      auto pipe = open_pipe(loop, fd);
      if (!pipe) return pipe.error();
      return std::unique_ptr<Reader>(new StreamReader<uv_pipe_t>(std::move(*pipe)));
    }
  }
}

Expected<std::unique_ptr<Writer>> open_fd_writer(Loop& loop, int fd) {
  switch (uv_guess_handle(fd)) {
    case UV_TTY: {
      auto tty = open_tty(loop, fd, false);
      if (!tty) return tty.error();
      return std::unique_ptr<Writer>(new StreamWriter<uv_tty_t>(std::move(*tty)));
    }
    case UV_FILE:
      return std::unique_ptr<Writer>(new FileWriter(fd));
    default: {
      auto pipe = open_pipe(loop, fd);
      if (!pipe) return pipe.error();
      return std::unique_ptr<Writer>(new StreamWriter<uv_pipe_t>(std::move(*pipe)));
    }
  }
}

std::unique_ptr<Reader> make_pipe_reader(UvHandle<uv_pipe_t> pipe) {
  return std::make_unique<StreamReader<uv_pipe_t>>(std::move(pipe));
}

std::unique_ptr<Writer> make_pipe_writer(UvHandle<uv_pipe_t> pipe) {
  return std::make_unique<StreamWriter<uv_pipe_t>>(std::move(pipe));
}

}  // namespace harnessd::acp
