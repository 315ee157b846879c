// `harnessd --connect unix:PATH`: stdin and stdout relayed to a harnessd
// server's socket, for hosts that spawn their agent as a process.
#pragma once

#include <string>

namespace harnessd::worker {

/// Relays bytes both ways between fds 0/1 and the server's socket at
/// `path`, without looking at them, until either side closes. Returns 0
/// when the server or the host ended the connection, 1 when no server
/// could be reached (said on stderr) or the relay failed.
int connect_relay(const std::string& path);

}  // namespace harnessd::worker
