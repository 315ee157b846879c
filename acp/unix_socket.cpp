#include "acp/unix_socket.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace harnessd::acp {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

Expected<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Error{"the socket path is empty"};
  if (path.size() >= sizeof addr.sun_path) {
    return Error{"the socket path " + path + " is " + std::to_string(path.size()) + " bytes; at most " +
                 std::to_string(sizeof addr.sun_path - 1) + " fit"};
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

Expected<std::string> parse_unix_address(const std::string& address) {
  std::string path = address;
  if (path.rfind("unix:", 0) == 0) {
    path = path.substr(5);
  } else if (auto colon = path.find("://"); colon != std::string::npos) {
    return Error{"'" + address + "' is not a Unix socket address: write unix:PATH"};
  }
  auto addr = address_of(path);
  if (!addr) return addr.error();
  return path;
}

Expected<Listener> listen_unix(const std::string& path, int backlog) {
  auto addr = address_of(path);
  if (!addr) return addr.error();
  const std::string lock_path = path + ".lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock < 0) return Error{"cannot open " + lock_path + ": " + errno_text(errno)};
  if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    ::close(lock);
    if (e == EWOULDBLOCK) return Error{"a server already listens on " + path};
    return Error{"cannot lock " + lock_path + ": " + errno_text(e)};
  }
  auto fail = [&](std::string why) -> Expected<Listener> {
    ::close(lock);
    return Error{std::move(why)};
  };
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(path + " exists and is not a socket; not replacing it");
    ::unlink(path.c_str());  // left by a server that is gone: its lock was free
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return fail("socket: " + errno_text(errno));
  // Created 0600 from the start: no moment where another user could connect.
  const mode_t old = ::umask(0177);
  const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  const int bind_errno = errno;
  ::umask(old);
  if (bound != 0) {
    ::close(fd);
    return fail("cannot bind " + path + ": " + errno_text(bind_errno));
  }
  if (::listen(fd, backlog) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return fail("cannot listen on " + path + ": " + errno_text(e));
  }
  return Listener{fd, lock};
}

std::optional<Expected<int>> socket_from_systemd() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (!pid || !fds) return std::nullopt;
  const bool ours = std::strtoll(pid, nullptr, 10) == static_cast<long long>(::getpid());
  const long n = std::strtol(fds, nullptr, 10);
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!ours || n < 1) return std::nullopt;
  constexpr int kFirst = 3;  // SD_LISTEN_FDS_START
  int type = 0, listening = 0;
  socklen_t len = sizeof type;
  sockaddr_un addr{};
  socklen_t alen = sizeof addr;
  if (::getsockopt(kFirst, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
      ::getsockname(kFirst, reinterpret_cast<sockaddr*>(&addr), &alen) != 0 || addr.sun_family != AF_UNIX) {
    return Expected<int>(Error{"the socket systemd passed (fd 3) is not a Unix stream socket"});
  }
  len = sizeof listening;
  if (::getsockopt(kFirst, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) {
    return Expected<int>(Error{"the socket systemd passed (fd 3) is not listening (Accept=yes is not supported)"});
  }
  ::fcntl(kFirst, F_SETFD, FD_CLOEXEC);
  ::fcntl(kFirst, F_SETFL, ::fcntl(kFirst, F_GETFL) | O_NONBLOCK);
  // Further fds are not ours to use: closed so that no child inherits them.
  for (long i = 1; i < n; ++i) ::close(kFirst + static_cast<int>(i));
  return Expected<int>(kFirst);
}

std::optional<Expected<Accepted>> accept_unix(int listen_fd) {
  int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return std::nullopt;
    return Expected<Accepted>(Error{"accept: " + errno_text(errno)});
  }
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    const int e = errno;
    ::close(fd);
    return Expected<Accepted>(Error{"cannot read the peer's credentials: " + errno_text(e)});
  }
  return Expected<Accepted>(Accepted{fd, cred.uid, cred.pid});
}

Expected<int> connect_unix(const std::string& path) {
  auto addr = address_of(path);
  if (!addr) return addr.error();
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{"socket: " + errno_text(errno)};
  while (::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    if (errno == EINTR) continue;
    const int e = errno;
    ::close(fd);
    if (e == ENOENT || e == ECONNREFUSED) return Error{"no harnessd server listens on " + path};
    return Error{"cannot connect to " + path + ": " + errno_text(e)};
  }
  return fd;
}

}  // namespace harnessd::acp
