#include "harnesses/remote.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

namespace harnessd::harnesses {

namespace {

// Names ssh would read as options, or that a shell or ssh_config would
// treat specially, are refused rather than quoted: they are never hosts.
bool plain_name(std::string_view s) {
  if (s.empty() || s.front() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '%';
  });
}

std::string slug(std::string_view id) {
  std::string out;
  for (unsigned char c : id) out += std::isalnum(c) ? static_cast<char>(std::tolower(c)) : '-';
  return out;
}

}  // namespace

Expected<std::vector<std::string>> string_array(const toml::node& node, const std::string& where) {
  const toml::array* arr = node.as_array();
  if (!arr) return Error{where + " must be an array of strings"};
  std::vector<std::string> out;
  for (const auto& item : *arr) {
    const auto* s = item.as_string();
    if (!s) return Error{where + " must contain only strings"};
    // exec() would cut an argument at a NUL: the program would not run
    // what the file says.
    if (s->get().find('\0') != std::string::npos) return Error{where + " must not contain NUL characters"};
    out.push_back(s->get());
  }
  return out;
}


Expected<SshTarget> parse_ssh_url(std::string_view url) {
  const std::string shown = "'" + std::string(url) + "'";
  constexpr std::string_view kScheme = "ssh://";
  if (url.substr(0, kScheme.size()) != kScheme) return Error{shown + " is not an ssh://[user@]host[:port] address"};
  std::string_view rest = url.substr(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return Error{shown + ": a worker address has no path"};
  SshTarget t;
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    t.user = std::string(rest.substr(0, at));
    rest = rest.substr(at + 1);
    if (!plain_name(t.user) || t.user.find(':') != std::string::npos) return Error{shown + ": the user name is not valid"};
  }
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return Error{shown + ": '[' without ']'"};
    t.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Error{shown + ": only :port may follow ']'"};
      port = rest.substr(1);
    }
  } else {
    auto colon = rest.find(':');
    t.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
    if (t.host.find(':') != std::string::npos) return Error{shown + ": an IPv6 address goes in brackets"};
  }
  if (!plain_name(t.host)) return Error{shown + ": the host name is not valid"};
  if (!port.empty() || (url.size() > 0 && url.back() == ':')) {
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), t.port);
    if (ec != std::errc() || end != port.data() + port.size() || t.port < 1 || t.port > 65535) {
      return Error{shown + ": the port must be a number from 1 to 65535"};
    }
  }
  return t;
}

bool is_remote_key(std::string_view key) {
  static const std::set<std::string, std::less<>> kKeys = {
      "remote",     "hosts",      "capacity",           "ssh_options",     "remote_harness",   "remote_command",
      "remote_cwd", "launcher",   "keepalive_interval", "keepalive_count", "forward_client_fs"};
  return kKeys.count(key) > 0;
}

Expected<void> read_remote(const toml::table& table, const std::string& where, const std::string& name,
                           RemoteSpec& spec, std::vector<std::string>& launcher) {
  const toml::node* remote = table.get("remote");
  const toml::node* hosts = table.get("hosts");
  if (remote && hosts) return Error{where + ": give either remote or hosts, not both"};
  if (remote) {
    const auto* s = remote->as_string();
    if (!s) return Error{where + ".remote must be a string, ssh://[user@]host[:port]"};
    spec.hosts = {s->get()};
  }
  if (hosts) {
    auto list = string_array(*hosts, where + ".hosts");
    if (!list) return list.error();
    if (list->empty()) return Error{where + ".hosts must name at least one ssh:// host"};
    spec.hosts = std::move(*list);
  }
  for (const auto& host : spec.hosts) {
    if (auto t = parse_ssh_url(host); !t) return Error{where + ": " + t.error().message};
  }
  if (std::set<std::string>(spec.hosts.begin(), spec.hosts.end()).size() != spec.hosts.size()) {
    return Error{where + ".hosts names a host twice"};
  }
  auto whole = [&](const char* key, std::int64_t lo, std::int64_t hi, auto& out) -> Expected<void> {
    const toml::node* node = table.get(key);
    if (!node) return {};
    const auto* n = node->as_integer();
    if (!n || n->get() < lo || n->get() > hi) {
      return Error{where + "." + key + " must be a whole number from " + std::to_string(lo) + " to " +
                   std::to_string(hi)};
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(n->get());
    return {};
  };
  if (auto r = whole("capacity", 0, 100000, spec.capacity); !r) return r;
  if (auto r = whole("keepalive_interval", 1, 3600, spec.keepalive_interval); !r) return r;
  if (auto r = whole("keepalive_count", 1, 100, spec.keepalive_count); !r) return r;
  if (const toml::node* options = table.get("ssh_options")) {
    auto list = string_array(*options, where + ".ssh_options");
    if (!list) return list.error();
    spec.ssh_options = std::move(*list);
  }
  std::string remote_harness = name;
  if (const toml::node* h = table.get("remote_harness")) {
    const auto* s = h->as_string();
    if (!s || s->get().empty()) return Error{where + ".remote_harness must name a profile of the worker"};
    remote_harness = s->get();
  }
  spec.command = {"harnessd", "--worker", "--harness", remote_harness};
  if (const toml::node* command = table.get("remote_command")) {
    auto argv = string_array(*command, where + ".remote_command");
    if (!argv) return argv.error();
    if (argv->empty() || argv->front().empty()) return Error{where + ".remote_command must be a non-empty argv"};
    spec.command = std::move(*argv);
  }
  if (const toml::node* cwd = table.get("remote_cwd")) {
    const auto* s = cwd->as_string();
    if (!s) return Error{where + ".remote_cwd must be a string (a template over {cwd}, {session}, {harness})"};
    if (auto checked = expand(s->get(), {}); !checked) return Error{where + ".remote_cwd: " + checked.error().message};
    spec.cwd = s->get();
  }
  if (const toml::node* forward = table.get("forward_client_fs")) {
    const auto* b = forward->as_boolean();
    if (!b) return Error{where + ".forward_client_fs must be true or false"};
    spec.forward_client_fs = b->get();
  }
  if (const toml::node* l = table.get("launcher")) {
    auto argv = string_array(*l, where + ".launcher");
    if (!argv) return argv.error();
    if (argv->empty() || argv->front().empty()) return Error{where + ".launcher must be a non-empty argv prefix"};
    for (const auto& arg : *argv) {
      if (auto checked = expand(arg, {}); !checked) return Error{where + ".launcher: " + checked.error().message};
    }
    launcher = std::move(*argv);
  }
  const bool remote_keys_without_hosts =
      !spec.enabled() && std::any_of(table.begin(), table.end(), [](const auto& kv) {
        const std::string_view k = kv.first.str();
        return is_remote_key(k) && k != "launcher";
      });
  if (remote_keys_without_hosts) return Error{where + ": remote settings need remote = \"ssh://...\" or hosts = [...]"};
  if (spec.enabled() && !launcher.empty()) {
    return Error{where + ": a remote profile runs on its worker; put the launcher in the worker's profile"};
  }
  return {};
}

Expected<std::string> expand(std::string_view text, const Placeholders& values) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '{') {
      out += text[i];
      continue;
    }
    // Only {name} is a placeholder: JSON such as kubectl's --overrides
    // passes as it is.
    auto close = text.find('}', i);
    std::string_view key = close == std::string_view::npos ? std::string_view() : text.substr(i + 1, close - i - 1);
    if (key.empty() || !std::all_of(key.begin(), key.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; })) {
      out += text[i];
      continue;
    }
    if (key == "cwd") {
      out += values.cwd;
    } else if (key == "session") {
      out += values.session;
    } else if (key == "session_slug") {
      out += slug(values.session);
    } else if (key == "harness") {
      out += values.harness;
    } else {
      return Error{"unknown placeholder {" + std::string(key) + "} (known: {cwd}, {session}, {session_slug}, {harness})"};
    }
    i = close;
  }
  return out;
}

std::vector<std::string> launched_argv(const std::vector<std::string>& launcher, const Placeholders& values,
                                       std::vector<std::string> argv) {
  std::vector<std::string> out;
  out.reserve(launcher.size() + argv.size());
  // Checked when the config was read.
  for (const auto& arg : launcher) {
    auto filled = expand(arg, values);
    out.push_back(filled ? *filled : arg);
  }
  std::move(argv.begin(), argv.end(), std::back_inserter(out));
  return out;
}

std::string shell_quoted(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) {
    if (!out.empty()) out += ' ';
    out += '\'';
    for (char c : arg) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

std::vector<std::string> ssh_argv(const RemoteSpec& spec, const std::string& host) {
  // Checked when the config was read.
  auto parsed = parse_ssh_url(host);
  SshTarget t = parsed ? *parsed : SshTarget{{}, host, 0};
  std::vector<std::string> argv = {"ssh", "-T", "-o", "BatchMode=yes"};
  argv.insert(argv.end(), spec.ssh_options.begin(), spec.ssh_options.end());
  const int bound = spec.keepalive_interval * spec.keepalive_count;
  for (std::string option : {"ServerAliveInterval=" + std::to_string(spec.keepalive_interval),
                             "ServerAliveCountMax=" + std::to_string(spec.keepalive_count),
                             "ConnectTimeout=" + std::to_string(bound)}) {
    argv.push_back("-o");
    argv.push_back(std::move(option));
  }
  if (t.port) {
    argv.push_back("-p");
    argv.push_back(std::to_string(t.port));
  }
  if (!t.user.empty()) {
    argv.push_back("-l");
    argv.push_back(t.user);
  }
  argv.push_back("--");
  argv.push_back(t.host);
  argv.push_back(shell_quoted(spec.command));
  return argv;
}

std::string host_label(const std::string& host) {
  auto t = parse_ssh_url(host);
  return t ? t->host : host;
}

}  // namespace harnessd::harnesses
