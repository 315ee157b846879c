// stdin/stdout as one JSON-RPC peer.
#include "acp/stdio_peer.h"

#include <fcntl.h>
#include <unistd.h>

namespace harnessd::acp {

int protect_stdout() {
  int fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return -1;
  dup2(2, 1);
  return fd;
}

StdioPeer::StdioPeer(Loop& loop, StdioPeerOptions options)
    : loop_(loop),
      options_(std::move(options)),
      splitter_(
          options_.max_line_bytes, [this](std::string_view line) { rpc_->receive_line(line); },
          [this](std::string_view prefix, std::size_t size) {
            rpc_->receive_overlong(prefix, size, options_.max_line_bytes);
          }) {}

Expected<std::unique_ptr<StdioPeer>> StdioPeer::open(Loop& loop, StdioPeerOptions options) {
  std::unique_ptr<StdioPeer> self(new StdioPeer(loop, std::move(options)));
  auto reader = open_fd_reader(loop, self->options_.in_fd);
  if (!reader) return Error{"cannot read the peer's input: " + reader.error().message};
  auto writer = open_fd_writer(loop, self->options_.out_fd);
  if (!writer) return Error{"cannot write to the peer: " + writer.error().message};
  self->in_ = std::move(*reader);
  self->out_ = std::move(*writer);
  StdioPeer* raw = self.get();
  self->rpc_ = std::make_unique<Connection>(self->options_.connection, [raw](std::string line) {
    if (raw->out_) raw->out_->write(std::move(line));
  });
  return self;
}

void StdioPeer::start(std::function<void(int status)> on_end) {
  in_->start([this](std::string_view data) { splitter_.feed(data); },
             [this, on_end = std::move(on_end)](int status) {
               splitter_.finish();
               loop_.post([on_end, status] { on_end(status); });
             });
}

void StdioPeer::on_write_error(std::function<void(int status)> fn) {
  out_->on_error([this, fn = std::move(fn)](int status) {
    rpc_->close();
    loop_.post([fn, status] { fn(status); });
  });
}

void StdioPeer::set_output_watermarks(std::size_t high, std::size_t low, std::function<void(bool over)> fn) {
  if (out_) out_->set_watermarks(high, low, std::move(fn));
}

void StdioPeer::pause_input() {
  if (in_) in_->pause();
}

void StdioPeer::resume_input() {
  if (in_) in_->resume();
}

void StdioPeer::flush(std::function<void()> fn) {
  if (out_) {
    out_->flush(std::move(fn));
  } else {
    fn();
  }
}

void StdioPeer::close() {
  if (rpc_) rpc_->close();
  in_.reset();
  out_.reset();
}

}  // namespace harnessd::acp
