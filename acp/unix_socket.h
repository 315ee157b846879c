// Unix stream sockets for the shared server: listening on a path (or on a
// socket systemd passed), accepting with the peer's uid, and connecting.
// Plain system calls; the loop only ever sees the fds they return.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "schema/expected.h"

namespace harnessd::acp {

/// "unix:PATH" (or a bare absolute or relative path) to PATH; an error
/// names what is wrong (an empty path, another scheme, a path longer than
/// sockaddr_un holds).
Expected<std::string> parse_unix_address(const std::string& address);

/// A listening socket at `path`, close-on-exec and non-blocking, mode 0600,
/// and the lock that makes it ours: `path`.lock, held (flock) for as long
/// as `lock_fd` stays open. A second server on the path fails to take it
/// ("already listens"); a socket file left by a server that is gone is
/// replaced, since the lock is free again.
struct Listener {
  int fd = -1;
  int lock_fd = -1;
};
Expected<Listener> listen_unix(const std::string& path, int backlog = 128);

/// The first socket passed by the sd_listen_fds protocol (LISTEN_PID is
/// this process, LISTEN_FDS at least 1: fd 3), made close-on-exec and
/// non-blocking, with the variables unset so children do not see them;
/// nullopt when none was passed; an error when fd 3 is not a listening
/// Unix stream socket.
std::optional<Expected<int>> socket_from_systemd();

struct Accepted {
  int fd = -1;
  uid_t uid = 0;
  pid_t pid = 0;
};
/// One pending connection from `listen_fd` (non-blocking, close-on-exec)
/// with its peer's credentials (SO_PEERCRED); nullopt when none is waiting;
/// an error for anything else.
std::optional<Expected<Accepted>> accept_unix(int listen_fd);

/// A blocking connection to `path`; the error says whether nothing listens.
Expected<int> connect_unix(const std::string& path);

}  // namespace harnessd::acp
