// Adapters beyond this machine (docs/remote.md): a profile whose adapter is
// a harnessd worker reached over OpenSSH, alone or in a pool of hosts, and
// the launcher argv that puts any adapter inside a container or a pod. The
// pieces here are pure: they read the profile's keys and build argv; the
// session decides where it runs.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "schema/expected.h"

namespace harnessd::harnesses {

/// One worker host, from "ssh://[user@]host[:port]".
struct SshTarget {
  std::string user;  // empty: ssh's own choice
  std::string host;  // a name, an IPv4 address or a bracketed IPv6 one (without brackets)
  int port = 0;      // 0: ssh's own choice
};

/// Parses an ssh:// address; the error says what is wrong with it.
Expected<SshTarget> parse_ssh_url(std::string_view url);

struct RemoteSpec {
  /// Worker hosts as ssh:// addresses: one for `remote`, several for a pool.
  std::vector<std::string> hosts;
  /// Sessions at once on each host; 0: no limit.
  std::size_t capacity = 0;
  /// Further ssh options, before harnessd's own (ssh keeps the first
  /// value it reads for an option, so these win over the defaults).
  std::vector<std::string> ssh_options;
  /// The argv run on the worker (default: harnessd --worker --harness NAME).
  std::vector<std::string> command;
  /// The session's cwd on the worker: a template over {cwd}, {session}, {harness}.
  std::string cwd = "{cwd}";
  /// ssh's ServerAliveInterval (seconds) and ServerAliveCountMax: a link
  /// that stopped carrying anything is given up after their product.
  int keepalive_interval = 5;
  int keepalive_count = 3;
  /// Offer the host's fs/* and terminal/* to the worker (off: a remote
  /// adapter would read and run on this machine).
  bool forward_client_fs = false;

  bool enabled() const { return !hosts.empty(); }
};

/// The placeholders of `remote_cwd` and `launcher`.
struct Placeholders {
  std::string cwd, session, harness;
};

/// A TOML array of strings (argv elements: no NUL), or the error naming `where`.
Expected<std::vector<std::string>> string_array(const toml::node& node, const std::string& where);

/// The keys of a profile that belong here.
bool is_remote_key(std::string_view key);

/// Reads remote, hosts, capacity, ssh_options, remote_harness,
/// remote_command, remote_cwd, keepalive_interval, keepalive_count and
/// forward_client_fs into `spec`, and launcher into `launcher`. `name` is
/// the profile's (the default remote harness).
Expected<void> read_remote(const toml::table& table, const std::string& where, const std::string& name,
                           RemoteSpec& spec, std::vector<std::string>& launcher);

/// `text` with each {name} of `values` replaced; an unknown {name} is an
/// error (so a typo is found when the config is read, with `values` empty).
Expected<std::string> expand(std::string_view text, const Placeholders& values);

/// The launcher's argv with its placeholders filled, followed by `argv`.
std::vector<std::string> launched_argv(const std::vector<std::string>& launcher, const Placeholders& values,
                                       std::vector<std::string> argv);

/// `argv` as one command line for a POSIX shell: each element in single
/// quotes, so the remote shell splits and expands nothing of ours.
std::string shell_quoted(const std::vector<std::string>& argv);

/// The local argv that runs the worker on `host` (an ssh:// address):
/// ssh -T in batch mode, the profile's options, then harnessd's keep-alives,
/// the target, and the quoted remote command.
std::vector<std::string> ssh_argv(const RemoteSpec& spec, const std::string& host);

/// "w1" of "ssh://user@w1:2222": the short name logs and tables show.
std::string host_label(const std::string& host);

}  // namespace harnessd::harnesses
