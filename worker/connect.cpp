// The stdio relay to a server: one poll loop, one buffer each way. A
// direction is read only once what it read before has been written out,
// so memory stays at two buffers and neither side can block the other.
#include "worker/connect.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "acp/log.h"
#include "acp/unix_socket.h"
#include "schema/json_parse.h"

namespace harnessd::worker {

namespace {

constexpr std::size_t kChunk = 256 * 1024;

struct Direction {
  int from = -1;
  int to = -1;
  std::string out;      // read, not yet written
  std::size_t at = 0;   // how much of `out` is written
  std::string partial;  // a line not yet ended (only when lines are edited)
  bool eof = false;     // `from` ended
  bool pending() const { return at < out.size(); }
};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// The host's session/new, with what the relay was started with that the
// server cannot know: the harness (--harness) and the host's name for the
// session (HARNESSD_HOST_SESSION), unless the request names them itself.
std::string edit_line(std::string line, const RelayMeta& meta) {
  if (line.find("\"session/new\"") == std::string::npos) return line;
  nlohmann::json msg = schema::parse_or_discard(line);
  if (!msg.is_object() || msg.value("method", "") != "session/new" || !msg.contains("params") ||
      !msg["params"].is_object()) {
    return line;
  }
  nlohmann::json& params = msg["params"];
  if (params.contains("_meta") && !params["_meta"].is_object()) return line;  // the server says what is wrong
  nlohmann::json& ours = params["_meta"]["harnessd"];
  if (ours.is_null()) ours = nlohmann::json::object();
  if (!ours.is_object()) return line;
  if (meta.harness && !ours.contains("harness")) ours["harness"] = *meta.harness;
  if (meta.host_session && !ours.contains("hostSession")) ours["hostSession"] = *meta.host_session;
  return msg.dump();
}

// Reads what is there; false on a hard error.
bool fill(Direction& d, const RelayMeta* meta) {
  char buf[kChunk];
  for (;;) {
    ssize_t n = ::read(d.from, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n < 0 && errno != ECONNRESET) return false;
    d.out.erase(0, d.at);
    d.at = 0;
    if (n <= 0) {
      d.eof = true;
      d.out += d.partial;  // a last line without its LF goes as it is
      d.partial.clear();
      return true;
    }
    if (!meta) {
      d.out.append(buf, static_cast<std::size_t>(n));
      return true;
    }
    d.partial.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0;
    for (std::size_t nl; (nl = d.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      d.out += edit_line(d.partial.substr(start, nl - start), *meta);
      d.out += '\n';
    }
    d.partial.erase(0, start);
    return true;
  }
}

// Writes what it can; false when the other side is gone.
bool drain(Direction& d) {
  while (d.pending()) {
    ssize_t n = ::write(d.to, d.out.data() + d.at, d.out.size() - d.at);
    if (n > 0) {
      d.at += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  return true;
}

}  // namespace

int connect_relay(const std::string& path, const RelayMeta& meta) {
  auto sock = acp::connect_unix(path);
  if (!sock) {
    acp::log::error(sock.error().message + " (start one with 'harnessd serve --listen unix:" + path + "')");
    return 1;
  }
  return relay(*sock, meta);
}

int relay(int s, const RelayMeta& meta) {
  signal(SIGPIPE, SIG_IGN);
  set_nonblocking(0);
  set_nonblocking(1);
  set_nonblocking(s);
  // Lines from the host are looked at only when there is something to add.
  const RelayMeta* edit = meta.harness || meta.host_session ? &meta : nullptr;
  Direction up, down;
  up.from = 0;  // host to server
  up.to = s;
  down.from = s;  // server to host
  down.to = 1;
  bool up_closed = false;
  int code = 0;
  for (;;) {
    // The host's input ended: once what it sent is out, the server is told
    // (its half of the socket closes) and answers what is still open, as a
    // harnessd on stdio does. The relay ends with the server's side.
    if (up.eof && !up.pending() && !up_closed) {
      ::shutdown(s, SHUT_WR);
      up_closed = true;
    }
    if (down.eof && !down.pending()) break;
    pollfd fds[4];
    nfds_t n = 0;
    int up_in = -1, up_out = -1, down_in = -1, down_out = -1;
    if (!up.pending() && !up.eof) fds[up_in = static_cast<int>(n++)] = {up.from, POLLIN, 0};
    if (up.pending()) fds[up_out = static_cast<int>(n++)] = {up.to, POLLOUT, 0};
    if (!down.pending() && !down.eof) fds[down_in = static_cast<int>(n++)] = {down.from, POLLIN, 0};
    if (down.pending()) fds[down_out = static_cast<int>(n++)] = {down.to, POLLOUT, 0};
    if (n == 0) break;
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      code = 1;
      break;
    }
    auto ready = [&](int at) { return at >= 0 && fds[at].revents != 0; };
    if ((ready(up_in) && !fill(up, edit)) || (ready(down_in) && !fill(down, nullptr))) {
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
