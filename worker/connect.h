// `harnessd --connect unix:PATH`: stdin and stdout relayed to a harnessd
// server's socket, for hosts that spawn their agent as a process.
#pragma once

#include <optional>
#include <string>

namespace harnessd::worker {

/// What the relay adds to the host's session/new, because the server's own
/// environment and options are not the host's: the harness given to the
/// relay (--harness) and the host's name for the session
/// (HARNESSD_HOST_SESSION). Without either, host lines are not looked at.
struct RelayMeta {
  std::optional<std::string> harness;
  std::optional<std::string> host_session;
};

/// Relays bytes both ways between fds 0/1 and the server's socket at
/// `path`, without looking at them, until either side closes. Returns 0
/// when the server or the host ended the connection, 1 when no server
/// could be reached (said on stderr) or the relay failed.
int connect_relay(const std::string& path, const RelayMeta& meta = {});
/// The same over a socket already connected (taken).
int relay(int socket, const RelayMeta& meta = {});

}  // namespace harnessd::worker
