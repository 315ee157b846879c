// Reader and Writer implementations: libuv streams for pipes, sockets and
// ttys; a uv_fs_read chain for regular files; plain write(2) for files.
#include "acp/stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "acp/log.h"

namespace harnessd {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;

// Reads a libuv stream (pipe, socket or tty). The handle's data points to
// this object; the UvCloser clears it, so no callback reaches a dead owner.
template <class H>
class StreamReader final : public Reader {
 public:
  explicit StreamReader(UvHandle<H> handle) : handle_(std::move(handle)) { handle_->data = this; }

  void start(DataFn on_data, EndFn on_end) override {
    on_data_ = std::move(on_data);
    on_end_ = std::move(on_end);
    resume();
  }

  void pause() override {
    if (reading_) uv_read_stop(stream());
    reading_ = false;
  }

  void resume() override {
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
  static std::vector<char>& shared_buffer() {
    thread_local std::vector<char> shared(kReadChunk);
    return shared;
  }
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
    std::vector<char>& shared = shared_buffer();
    *buf = uv_buf_init(shared.data(), static_cast<unsigned>(shared.size()));
  }

 public:
  void drain() override {
    uv_os_fd_t fd;
    if (ended_ || !reading_ || uv_fileno(reinterpret_cast<uv_handle_t*>(handle_.get()), &fd) != 0) return;
    // libuv keeps the fd non-blocking; reading it here, on the loop thread,
    // only takes bytes its next read would have taken.
    std::vector<char>& buffer = shared_buffer();
    for (;;) {
      ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n <= 0) return;  // nothing pending, the end (the loop reports it), or an error
      deliver(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
    }
  }

 private:

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* self = static_cast<StreamReader*>(s->data);
    if (!self) return;
    if (nread > 0) {
      self->deliver(std::string_view(buf->base, static_cast<std::size_t>(nread)));
    } else if (nread < 0) {
      // UV_EOF or a real error; nread == 0 is "try again", not EOF.
      self->end(nread == UV_EOF ? 0 : static_cast<int>(nread));
    }
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
    auto fn = std::move(on_end_);
    try {
      if (fn) fn(status);
    } catch (const std::exception& e) {
      log::error(std::string("stream end handler failed: ") + e.what());
    }
  }

  UvHandle<H> handle_;
  DataFn on_data_;
  EndFn on_end_;
  bool reading_ = false;
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

// Writes to a libuv stream. Each write request owns its bytes until libuv
// calls back, as libuv requires.
template <class H>
class StreamWriter final : public Writer {
 public:
  explicit StreamWriter(UvHandle<H> handle) : handle_(std::move(handle)) { handle_->data = this; }

  void write(std::string data) override {
    if (failed_ || data.empty()) return;
    auto* req = new WriteReq;
    req->data = std::move(data);
    uv_buf_t buf = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
    int rc = uv_write(&req->req, reinterpret_cast<uv_stream_t*>(handle_.get()), &buf, 1, &StreamWriter::on_write);
    if (rc != 0) {
      delete req;
      fail(rc);
      return;
    }
    queued_ += req->data.size();
    ++in_flight_;
  }

  std::size_t queued_bytes() const override { return queued_; }
  void on_error(ErrorFn fn) override { on_error_ = std::move(fn); }

  void flush(std::function<void()> fn) override {
    if (in_flight_ == 0) {
      fn();
      return;
    }
    flush_waiters_.push_back(std::move(fn));
  }

 private:
  struct WriteReq {
    uv_write_t req{};
    std::string data;
  };

  static void on_write(uv_write_t* r, int status) noexcept {
    auto* req = reinterpret_cast<WriteReq*>(r);
    auto* self = static_cast<StreamWriter*>(r->handle->data);
    std::size_t size = req->data.size();
    delete req;
    if (!self) return;  // writer gone; the write was cancelled by the close
    self->queued_ -= size;
    --self->in_flight_;
    if (status != 0) self->fail(status);
    if (self->in_flight_ == 0 && !self->flush_waiters_.empty()) {
      auto waiters = std::move(self->flush_waiters_);
      self->flush_waiters_.clear();
      for (auto& w : waiters) w();
    }
  }

  void fail(int status) {
    if (failed_) return;
    failed_ = true;
    if (on_error_) on_error_(status);
  }

  UvHandle<H> handle_;
  std::size_t queued_ = 0;
  std::size_t in_flight_ = 0;
  bool failed_ = false;
  ErrorFn on_error_;
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

}  // namespace harnessd
