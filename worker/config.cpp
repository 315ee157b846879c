// TOML configuration. Every unknown key is an error, so a typo never
// silently falls back to a default.
#include "worker/config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include "acp/unix_socket.h"
#include "adapters/process.h"

namespace harnessd::worker {

namespace {

Expected<std::chrono::milliseconds> seconds(const toml::node& node, const std::string& where) {
  std::optional<double> v;
  if (const auto* f = node.as_floating_point()) v = f->get();
  if (const auto* i = node.as_integer()) v = static_cast<double>(i->get());
  if (!v || !std::isfinite(*v) || *v < 0 || *v > 86400.0 * 365) {
    return Error{where + " must be a number of seconds (e.g. 2.5)"};
  }
  return std::chrono::milliseconds(static_cast<long long>(std::llround(*v * 1000.0)));
}

Expected<std::size_t> positive(const toml::node& node, const std::string& where) {
  const auto* i = node.as_integer();
  if (!i || i->get() <= 0) return Error{where + " must be a positive integer"};
  return static_cast<std::size_t>(i->get());
}

std::string folder_of(const std::string& file) {
  auto slash = file.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : file.substr(0, slash);
}

Expected<void> read_daemon(const toml::table& t, DaemonConfig& d) {
  static const std::set<std::string> kKnown = {
      "default_harness",   "max_line_bytes",      "cancel_grace",        "kill_grace",      "start_timeout",
      "max_pending_calls", "stderr_tail_bytes",   "max_concurrent_runs", "max_queue_depth", "run_timeout",
      "state_dir",         "fsync",               "template_dir",        "queue_high_water", "queue_low_water",
      "max_recording_bytes", "retention",        "adapter_idle_ttl",    "max_live_adapters",
      "breaker_failures",  "breaker_cooldown",    "listen",              "connect",         "idle_exit",
      "on_disconnect",     "shared",              "worker_client_fs"};
  for (const auto& [key, value] : t) {
    std::string k(key.str());
    if (!kKnown.count(k)) return Error{"[daemon]: unknown key '" + k + "'"};
    std::string where = "[daemon]." + k;
    if (k == "default_harness") {
      const auto* s = value.as_string();
      if (!s || s->get().empty()) return Error{where + " must be a harness name"};
      d.default_harness = s->get();
      d.default_harness_given = true;
    } else if (k == "state_dir" || k == "template_dir") {
      const auto* s = value.as_string();
      if (!s || s->get().empty() || s->get().front() != '/') return Error{where + " must be an absolute path"};
      (k == "state_dir" ? d.state_dir : d.template_dir) = s->get();
    } else if (k == "listen" || k == "connect") {
      const auto* s = value.as_string();
      if (!s) return Error{where + " must be a socket address, unix:PATH"};
      auto path = acp::parse_unix_address(s->get());
      if (!path) return Error{where + ": " + path.error().message};
      (k == "listen" ? d.listen : d.connect) = s->get();
    } else if (k == "on_disconnect") {
      const auto* s = value.as_string();
      if (!s || (s->get() != "cancel" && s->get() != "continue")) {
        return Error{where + " must be \"cancel\" or \"continue\""};
      }
      d.on_disconnect = s->get() == "cancel" ? OnDisconnect::kCancel : OnDisconnect::kContinue;
    } else if (k == "retention") {
      const auto* table = value.as_table();
      if (!table) return Error{where + " must be a table, e.g. { keep_days = 30, keep_runs = 100000 }"};
      for (const auto& [rkey, rvalue] : *table) {
        std::string rk(rkey.str());
        const auto* n = rvalue.as_integer();
        if (rk != "keep_days" && rk != "keep_runs") {
          return Error{where + ": unknown key '" + rk + "' (keep_days, keep_runs)"};
        }
        if (!n || n->get() < 0 || (rk == "keep_days" && n->get() > 365 * 1000)) {
          return Error{where + "." + rk + " must be a whole number, 0 or more (0: no bound)"};
        }
        if (rk == "keep_days") {
          d.retention.keep_days = static_cast<int>(n->get());
        } else {
          d.retention.keep_runs = static_cast<std::size_t>(n->get());
        }
      }
    } else if (k == "fsync" || k == "shared" || k == "worker_client_fs") {
      const auto* b = value.as_boolean();
      if (!b) return Error{where + " must be true or false"};
      (k == "fsync" ? d.fsync : k == "shared" ? d.shared : d.worker_client_fs) = b->get();
    } else if (k == "cancel_grace" || k == "kill_grace" || k == "start_timeout" || k == "run_timeout" ||
               k == "adapter_idle_ttl" || k == "breaker_cooldown" || k == "idle_exit") {
      auto ms = seconds(value, where);
      if (!ms) return ms.error();
      std::chrono::milliseconds* target = k == "cancel_grace"    ? &d.cancel_grace
                                          : k == "kill_grace"    ? &d.kill_grace
                                          : k == "start_timeout" ? &d.start_timeout
                                          : k == "run_timeout"   ? &d.run_timeout
                                          : k == "breaker_cooldown" ? &d.breaker_cooldown
                                          : k == "idle_exit"     ? &d.idle_exit
                                                                 : &d.adapter_idle_ttl;
      *target = *ms;
    } else if (k == "breaker_failures") {
      const auto* i = value.as_integer();
      if (!i || i->get() < 0) return Error{where + " must be a whole number, 0 or more (0: never)"};
      d.breaker_failures = static_cast<std::size_t>(i->get());
    } else {
      auto n = positive(value, where);
      if (!n) return n.error();
      std::size_t* target = k == "max_line_bytes"        ? &d.max_line_bytes
                            : k == "max_pending_calls"   ? &d.max_pending_calls
                            : k == "stderr_tail_bytes"   ? &d.stderr_tail_bytes
                            : k == "max_recording_bytes" ? &d.max_recording_bytes
                            : k == "queue_high_water"    ? &d.queue_high_water
                            : k == "queue_low_water"     ? &d.queue_low_water
                            : k == "max_concurrent_runs" ? &d.max_concurrent_runs
                            : k == "max_live_adapters"   ? &d.max_live_adapters
                                                         : &d.max_queue_depth;
      *target = *n;
    }
  }
  if (d.queue_low_water > d.queue_high_water) {
    return Error{"[daemon].queue_low_water must not be above queue_high_water"};
  }
  if (d.max_live_adapters != 0 && d.max_live_adapters < d.max_concurrent_runs) {
    // Every running turn holds a live adapter: fewer places than turns
    // would leave turns waiting for one that no eviction can free.
    return Error{"[daemon].max_live_adapters (" + std::to_string(d.max_live_adapters) +
                 ") must be at least max_concurrent_runs (" + std::to_string(d.max_concurrent_runs) + ")"};
  }
  return {};
}

}  // namespace

std::size_t default_max_live_adapters(std::size_t max_concurrent_runs) {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGE_SIZE);
  std::size_t n = 16;
  if (pages > 0 && page > 0) n = static_cast<std::size_t>(pages) / ((256u << 20) / static_cast<std::size_t>(page));
  return std::max(std::clamp<std::size_t>(n, 16, 1024), max_concurrent_runs);
}

std::size_t live_adapter_cap(const DaemonConfig& d) {
  return d.max_live_adapters ? d.max_live_adapters : default_max_live_adapters(d.max_concurrent_runs);
}

std::string default_config_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg == '/') {
    return std::string(xdg) + "/harnessd/config.toml";
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.config/harnessd/config.toml";
}

Expected<Config> parse_config(const std::string& text, const std::string& origin) {
  Config config;
  config.harnesses = harnesses::builtin_profiles();
  config.source = origin;
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Error{origin + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
                 std::string(e.description())};
  }
  for (const auto& [key, value] : root) {
    std::string k(key.str());
    if (k == "daemon") {
      const auto* t = value.as_table();
      if (!t) return Error{origin + ": [daemon] must be a table"};
      if (auto r = read_daemon(*t, config.daemon); !r) return Error{origin + ": " + r.error().message};
    } else if (k == "harness") {
      const auto* t = value.as_table();
      if (!t) return Error{origin + ": [harness] must be a table of [harness.<name>] tables"};
      for (const auto& [name_key, profile_node] : *t) {
        std::string name(name_key.str());
        const auto* pt = profile_node.as_table();
        if (!pt) return Error{origin + ": [harness." + name + "] must be a table"};
        auto base = config.harnesses.find(name);
        auto profile = harnesses::profile_from_toml(name, *pt, base == config.harnesses.end() ? nullptr : &base->second);
        if (!profile) return Error{origin + ": " + profile.error().message};
        // A program named with a relative path ("bin/agent", "./agent") is
        // the one beside the config file, wherever harnessd is started; a
        // bare name is looked up on PATH when the adapter starts.
        std::string& program = profile->command.front();
        if (pt->contains("command") && program.front() != '/' && program.find('/') != std::string::npos) {
          std::string folder = folder_of(origin);
          if (folder.front() != '/') {
            char cwd[4096];
            if (::getcwd(cwd, sizeof cwd)) folder = std::string(cwd) + (folder == "." ? "" : "/" + folder);
          }
          program = folder + "/" + (program.rfind("./", 0) == 0 ? program.substr(2) : program);
        }
        config.harnesses[name] = std::move(*profile);
      }
    } else {
      return Error{origin + ": unknown table or key '" + k + "'"};
    }
  }
  if (config.daemon.template_dir.empty()) config.daemon.template_dir = folder_of(origin) + "/templates";
  if (!config.harnesses.count(config.daemon.default_harness)) {
    return Error{origin + ": [daemon].default_harness names unknown harness '" + config.daemon.default_harness + "'"};
  }
  return config;
}

Expected<Config> load_config(const std::optional<std::string>& path) {
  std::string file = path ? *path : default_config_path();
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (path) return Error{"config file '" + file + "' does not exist"};
    Config config;
    config.harnesses = harnesses::builtin_profiles();
    config.daemon.template_dir = folder_of(file) + "/templates";
    return config;
  }
  std::ifstream in(file);
  if (!in) return Error{"cannot read config file '" + file + "'"};
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), file);
}

const std::vector<std::string>& default_harness_preference() {
  // ACP agents first (they keep their own sessions), Claude Code before
  // OpenCode, the single-shot bridges last.
  static const std::vector<std::string> kOrder = {"claude", "claude-code", "opencode", "codex",
                                                  "gemini", "opencode-run", "openspace"};
  return kOrder;
}

bool harness_installed(const harnesses::HarnessProfile& profile, std::string* why) {
  if (profile.command.empty()) {
    if (why) *why = "no command";
    return false;
  }
  std::string path;
  for (const auto& e : harnesses::adapter_environment(profile, adapters::current_environment())) {
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  auto found = adapters::find_executable(profile.command[0], path);
  if (!found && why) *why = found.error().message;
  return static_cast<bool>(found);
}

bool choose_default_harness(Config& config) {
  if (config.daemon.default_harness_given) return true;
  for (const auto& name : default_harness_preference()) {
    auto it = config.harnesses.find(name);
    if (it != config.harnesses.end() && harness_installed(it->second)) {
      config.daemon.default_harness = name;
      return true;
    }
  }
  config.daemon.default_harness = default_harness_preference().front();
  return false;
}

std::string no_harness_installed_message(const Config& config) {
  std::string out = "no supported harness is installed; install one of these (or name one with --harness):\n";
  for (const auto& name : default_harness_preference()) {
    auto it = config.harnesses.find(name);
    if (it == config.harnesses.end()) continue;
    out += "  " + name + ": " + it->second.install_hint + "\n";
  }
  return out;
}

}  // namespace harnessd::worker
