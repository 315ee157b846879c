// The stdio relay to a server: one poll loop, one buffer each way. A
// direction is read only once its buffer has been written out, so memory
// stays at two buffers and neither side can block the other.
#include "worker/connect.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "acp/log.h"
#include "acp/unix_socket.h"

namespace harnessd::worker {

namespace {

constexpr std::size_t kBuffer = 256 * 1024;

struct Direction {
  int from = -1;
  int to = -1;
  std::vector<char> buf = std::vector<char>(kBuffer);
  std::size_t start = 0, end = 0;
  bool eof = false;  // `from` ended
  bool pending() const { return start < end; }
};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what is there; false on a hard error.
bool fill(Direction& d) {
  for (;;) {
    ssize_t n = ::read(d.from, d.buf.data(), d.buf.size());
    if (n > 0) {
      d.start = 0;
      d.end = static_cast<std::size_t>(n);
      return true;
    }
    if (n == 0) {
      d.eof = true;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    if (errno == ECONNRESET) {
      d.eof = true;
      return true;
    }
    return false;
  }
}

// Writes what it can; false when the other side is gone.
bool drain(Direction& d) {
  while (d.pending()) {
    ssize_t n = ::write(d.to, d.buf.data() + d.start, d.end - d.start);
    if (n > 0) {
      d.start += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  return true;
}

}  // namespace

int connect_relay(const std::string& path) {
  signal(SIGPIPE, SIG_IGN);
  auto sock = acp::connect_unix(path);
  if (!sock) {
    acp::log::error(sock.error().message + " (start one with 'harnessd serve --listen unix:" + path + "')");
    return 1;
  }
  const int s = *sock;
  set_nonblocking(0);
  set_nonblocking(1);
  set_nonblocking(s);
  Direction up{0, s};    // host to server
  Direction down{s, 1};  // server to host
  int code = 0;
  for (;;) {
    // The server's side ends the relay once what it sent is out; the host's
    // side ends it at once (what it would still be sent, it would not read).
    if (down.eof && !down.pending()) break;
    if (up.eof && !up.pending()) break;
    pollfd fds[4];
    nfds_t n = 0;
    int up_in = -1, up_out = -1, down_in = -1, down_out = -1;
    if (!up.pending() && !up.eof) fds[up_in = static_cast<int>(n++)] = {up.from, POLLIN, 0};
    if (up.pending()) fds[up_out = static_cast<int>(n++)] = {up.to, POLLOUT, 0};
    if (!down.pending() && !down.eof) fds[down_in = static_cast<int>(n++)] = {down.from, POLLIN, 0};
    if (down.pending()) fds[down_out = static_cast<int>(n++)] = {down.to, POLLOUT, 0};
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      code = 1;
      break;
    }
    auto ready = [&](int at) { return at >= 0 && fds[at].revents != 0; };
    if ((ready(up_in) && !fill(up)) || (ready(down_in) && !fill(down))) {
      code = 1;
      break;
    }
    if (((ready(up_out) || up.pending()) && !drain(up)) || ((ready(down_out) || down.pending()) && !drain(down))) {
      break;  // a side stopped taking bytes: it is gone
    }
  }
  ::close(s);
  return code;
}

}  // namespace harnessd::worker
