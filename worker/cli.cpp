// Command line: `harnessd [serve]` speaks ACP on stdio. The hidden
// `__guard` mode runs the process-group guard of an adapter.
#include "worker/cli.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "acp/log.h"
#include "adapters/guard.h"
#include "adapters/process.h"
#include "acp/stdio_peer.h"
#include "harnesses/bridge_main.h"
#include "harnessd_version.h"
#include "acp/unix_socket.h"
#include "schema/acp.h"
#include "worker/approvals.h"
#include "worker/config.h"
#include "worker/connect.h"
#include "worker/daemon.h"
#include "worker/housekeeping.h"
#include "worker/inspect.h"
#include "worker/usage_command.h"
#include "worker/server_client.h"
#include "worker/server_commands.h"
#include "worker/state_dir.h"
#include "acp/files.h"
#include "worker/wrapper.h"

namespace harnessd::worker {

namespace {



// Each adapter costs harnessd three pipe fds; the usual soft limit of 1024
// would cap a daemon at a few hundred sessions, so use the hard limit.
void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<long long>(std::llround(seconds * 1000.0)));
}

}  // namespace

int main(int argc, char** argv) {
  // The guard must start fast and touch nothing else.
  if (argc >= 2 && std::strcmp(argv[1], adapters::kGuardArg) == 0) adapters::guard_main(argc, argv);
  // A bridge is its own program with its own options.
  if (argc >= 2 && std::strcmp(argv[1], "adapter") == 0) return harnesses::bridge_main(argc - 1, argv + 1);

  CLI::App app{"harnessd: an ACP runtime that runs coding-agent harnesses as workers.\n"
               "With no command it serves ACP v1 on stdin/stdout (logs go to stderr).",
               "harnessd"};
  app.set_version_flag("--version", std::string("harnessd ") + HARNESSD_VERSION);
  // A later option overrides an earlier one, so wrappers can append flags.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::optional<std::string> config_path;
  std::optional<std::string> harness;
  std::string log_level = "info";
  std::optional<double> cancel_grace, kill_grace, start_timeout;
  std::optional<std::size_t> max_line_bytes;
  std::optional<std::string> state_dir;
  bool no_guard = false;

  app.add_option("--config", config_path, "Configuration file (default: $XDG_CONFIG_HOME/harnessd/config.toml)");
  app.add_option("--harness", harness, "Harness for sessions whose host names none");
  app.add_option("--log-level", log_level, "debug, info, warn, error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
  app.add_option("--cancel-grace", cancel_grace, "Seconds an adapter has to answer a cancel")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--kill-grace", kill_grace, "Seconds between SIGTERM and SIGKILL")->check(CLI::Range(0.0, 3600.0));
  app.add_option("--start-timeout", start_timeout, "Seconds an adapter has to start")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--max-line-bytes", max_line_bytes, "Longest accepted inbound line")
      ->check(CLI::Range(static_cast<std::size_t>(1024), static_cast<std::size_t>(1) << 32));
  app.add_option("--state-dir", state_dir, "State directory (default: $XDG_STATE_HOME/harnessd)");
  app.add_flag("--no-guard", no_guard, "Spawn adapters without the process-group guard");
  std::optional<std::string> connect_addr;
  app.add_option("--connect", connect_addr, "Relay stdio to the harnessd server on this socket (unix:PATH)");
  bool worker_mode = false;
  app.add_flag("--worker", worker_mode,
               "Serve a front harnessd on another machine over pipes (ssh, a container): no terminal, and the end "
               "of input stops everything at once");
  bool shared = false;
  app.add_flag("--shared", shared,
               "Go through the state directory's server (harnessd and harnessd run), starting one if none listens");
  auto* serve_cmd = app.add_subcommand("serve", "Serve ACP v1 on stdio (the default), or on a socket with --listen");
  serve_cmd->fallthrough();
  std::optional<std::string> listen_addr;
  std::optional<double> idle_exit;
  auto* listen_opt = serve_cmd->add_option("--listen", listen_addr,
                                           "Serve many clients on this socket (unix:PATH; bare: [daemon] listen, else "
                                           "harnessd.sock in the state directory)");
  listen_opt->expected(0, 1);
  serve_cmd->add_option("--idle-exit", idle_exit, "With --listen: exit after this many seconds with no client and no prompt")
      ->check(CLI::Range(0.0, 30.0 * 86400));

  RunsQuery runs_query;
  auto* runs_cmd = app.add_subcommand("runs", "List runs from the ledger of the state directory");
  runs_cmd->fallthrough();
  runs_cmd->add_option("--session", runs_query.session, "Only runs of this session (id, name, or the host's name for it)");
  runs_cmd->add_option("--state", runs_query.state, "Only runs whose last event is this (completed, failed, ...)");
  runs_cmd->add_flag("--follow", runs_query.follow, "Then print each new ledger entry as it is written");
  runs_cmd->add_flag("--transitions", runs_query.transitions,
                     "Print every recorded transition of the runs (the ledger), not one line per run");
  runs_cmd->add_option("--format", runs_query.format, "text or json")->check(CLI::IsMember({"text", "json"}));

  UsageQuery usage_query;
  auto* usage_cmd = app.add_subcommand("usage", "Sum what the recorded runs used (tokens, cost) by harness, session or day");
  usage_cmd->fallthrough();
  usage_cmd->add_option("--since", usage_query.since,
                        "Only runs queued since a date (2026-12-01), an ISO time, or a duration ago (90m, 24h, 7d)");
  usage_cmd->add_option("--by", usage_query.by, "harness, session or day (UTC)")
      ->check(CLI::IsMember({"harness", "session", "day"}));
  usage_cmd->add_option("--format", usage_query.format, "text or json")->check(CLI::IsMember({"text", "json"}));

  std::string sessions_format = "text";
  bool sessions_all = false;
  auto* sessions_cmd = app.add_subcommand("sessions", "List session records of the state directory");
  sessions_cmd->fallthrough();
  sessions_cmd->add_option("--format", sessions_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  sessions_cmd->add_flag("--all", sessions_all, "Include closed sessions");
  std::string status_format = "text";
  auto* status_cmd = app.add_subcommand("status", "Daemons, sessions, adapters and runs of the state directory now");
  status_cmd->fallthrough();
  status_cmd->add_option("--format", status_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  bool harnesses_check = false;
  std::string harnesses_format = "text";
  std::string show_run, show_format = "text", show_file, show_export;
  auto* show_cmd = app.add_subcommand("show", "Print one run from its recording");
  show_cmd->fallthrough();
  show_cmd->add_option("run", show_run, "The run id (run_...)")->required();
  show_cmd->add_option("--format", show_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  auto* file_opt = show_cmd->add_option(
      "--file", show_file, "Print one file of the run: request.json, prompt.md, events.jsonl, stderr.log, result.json");
  show_cmd->add_option("--export", show_export, "Write the run's files into this new or empty folder")
      ->excludes(file_opt);
  std::string watch_target, watch_format = "text";
  std::uint64_t watch_from = 1;
  auto* watch_cmd = app.add_subcommand("watch", "Follow a session of the server: its transcript, then live");
  watch_cmd->fallthrough();
  watch_cmd->add_option("session", watch_target, "Session id or name")->required();
  watch_cmd->add_option("--from", watch_from, "Start at this frame number (1: the whole transcript)")
      ->check(CLI::Range(static_cast<std::uint64_t>(1), static_cast<std::uint64_t>(1) << 62));
  watch_cmd->add_option("--format", watch_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  std::string wait_run, wait_format = "text";
  std::optional<double> wait_timeout;
  auto* wait_cmd = app.add_subcommand("wait", "Wait for a run to end; the exit code is harnessd run's for it");
  wait_cmd->fallthrough();
  wait_cmd->add_option("run", wait_run, "The run id (run_...)")->required();
  wait_cmd->add_option("--timeout", wait_timeout, "Seconds to wait at most (then exit 4)")
      ->check(CLI::Range(0.0, 86400.0));
  wait_cmd->add_option("--format", wait_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  std::string cancel_target;
  auto* cancel_cmd = app.add_subcommand("cancel", "Cancel a queued or running run, or a session's running turn, in the server");
  cancel_cmd->fallthrough();
  cancel_cmd->add_option("target", cancel_target, "A run id (run_...), or a session id or name")->required();
  std::string close_target;
  auto* close_cmd = app.add_subcommand("close", "Close a session that no running daemon serves, by id or name");
  close_cmd->fallthrough();
  close_cmd->add_option("session", close_target, "Session id or name")->required();
  std::optional<std::string> prune_older_than;
  bool prune_dry_run = false;
  auto* prune_cmd = app.add_subcommand("prune", "Close the open sessions that no running daemon serves");
  prune_cmd->fallthrough();
  prune_cmd->add_option("--older-than", prune_older_than, "Only those idle this long: 90s, 30m, 12h, 7d");
  prune_cmd->add_flag("--dry-run", prune_dry_run, "List them; change nothing");
  std::string forget_target;
  bool forget_dry_run = false;
  bool gc_dry_run = false;
  auto* gc_cmd = app.add_subcommand(
      "gc", "Remove ended runs and closed sessions past [daemon] retention (a running daemon does this at start)");
  gc_cmd->fallthrough();
  gc_cmd->add_flag("--dry-run", gc_dry_run, "List what would be removed; change nothing");
  auto* forget_cmd = app.add_subcommand(
      "forget", "Remove what a session recorded (run folders, prompts, transcript); its ledger lines stay");
  forget_cmd->fallthrough();
  forget_cmd->add_option("session", forget_target, "The session's id, or a name only one session has")->required();
  forget_cmd->add_flag("--dry-run", forget_dry_run, "List what would be removed; change nothing");
  std::optional<std::string> approvals_session;
  std::optional<std::string> approvals_forget;
  std::string approvals_format = "text";
  auto* approvals_cmd =
      app.add_subcommand("approvals", "List the approvals hosts answered \"always\" to, or forget one");
  approvals_cmd->fallthrough();
  approvals_cmd->add_option("--session", approvals_session, "Only this session's (id or name)");
  approvals_cmd->add_option("--forget", approvals_forget, "Forget the approval with this id, or \"all\" of --session");
  approvals_cmd->add_option("--format", approvals_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  auto* harnesses_cmd = app.add_subcommand("harnesses", "List harness profiles, what they run, and what is missing");
  harnesses_cmd->fallthrough();
  harnesses_cmd->add_flag("--check", harnesses_check, "Also run each program with --version");
  harnesses_cmd->add_option("--format", harnesses_format, "text or json")->check(CLI::IsMember({"text", "json"}));

  WrapperOptions wrap;
  auto add_wrapper_options = [&wrap](CLI::App* cmd, bool running) {
    cmd->fallthrough();
    cmd->add_option("--harness", wrap.harness, "Harness to use (default: [daemon] default_harness)");
    cmd->add_option("--session", wrap.session, "Session name: reused (or created) across invocations");
    cmd->add_option("--template", wrap.template_name, "Packaging template (built-in or in the template folder)");
    cmd->add_option("--context", wrap.context_file, "JSON file with the packaging context (docs/packaging.md)");
    cmd->add_option("--cwd", wrap.cwd, "Working directory of the session (default: the current one)");
    if (running) {
      cmd->add_option("--progress", wrap.progress, "Status line on stderr: never, auto (when a terminal), always")
          ->check(CLI::IsMember({"never", "auto", "always"}));
      cmd->add_option("--summary", wrap.summary,
                      "Set the session's summary (its memory of older turns) before the prompt; needs --session");
      cmd->add_option("--mode", wrap.mode, "persistent or oneshot (default: the harness's)")
          ->check(CLI::IsMember({"persistent", "oneshot"}));
      cmd->add_option("--timeout", wrap.timeout_s, "Seconds the run may take (default: [daemon] run_timeout)")
          ->check(CLI::Range(0.0, 30.0 * 86400));
      cmd->add_option("--wait", wrap.wait_s,
                      "Seconds to wait while another harnessd process serves the --session (default: as long as "
                      "it takes; 0: fail at once)")
          ->check(CLI::Range(0.0, 30.0 * 86400));
      cmd->add_option("--approve", wrap.approve, "Permission requests: all, reads (default) or none")
          ->check(CLI::IsMember({"all", "reads", "none"}));
      cmd->add_option("--format", wrap.format, "text (the answer as it streams), json (one object) or quiet")
          ->check(CLI::IsMember({"text", "json", "quiet"}));
    }
    cmd->add_option("prompt", wrap.prompt, "The task, or - to read it from stdin")->required();
  };
  auto* run_cmd = app.add_subcommand("run", "Run one prompt to its end; the exit code says how it ended");
  add_wrapper_options(run_cmd, true);
  auto* pack_cmd = app.add_subcommand("pack", "Print the packaged prompt a template makes; runs nothing");
  add_wrapper_options(pack_cmd, false);
  app.require_subcommand(0, 1);

  // `run --format json` prints one object however it ends, refusals of
  // the command line and the config included, so it is known before the
  // parse that may fail.
  bool run_json = false;
  for (int i = 1, run_at = 0; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "run" && !run_at) run_at = i;
    if (run_at && (a == "--format=json" || (a == "--format" && i + 1 < argc && std::string_view(argv[i + 1]) == "json"))) {
      run_json = true;
    }
  }
  auto refuse = [&](const std::string& message) {
    if (run_json) print_refused_run(message);
    return run_exit::kUsage;
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, std::cout, std::cerr);  // asked for: stdout, exit 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, std::cout, std::cerr);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e, std::cout, std::cerr);
  } catch (const CLI::ParseError& e) {
    if (app.exit(e, std::cerr, std::cerr) == 0) return 0;
    return refuse(e.what());
  }

  // `run` keeps the terminal for the answer: only warnings unless asked.
  const bool level_given = app.get_option("--log-level")->count() > 0;
  if (run_cmd->parsed() && !level_given) log_level = "warn";
  acp::log::Level level = acp::log::Level::kInfo;
  acp::log::parse_level(log_level, level);
  acp::log::set_level(level);
  acp::log::make_stderr_nonblocking();

  auto config = load_config(config_path);
  if (!config) {
    acp::log::error(config.error().message);
    return refuse(config.error().message);
  }
  // Without a configured default, the first installed harness is it.
  const bool harness_installed = choose_default_harness(*config);
  // A relative --state-dir is taken from the current directory, here, once:
  // the daemon, its adapters and the store all see the same absolute path.
  if (state_dir && !state_dir->empty() && state_dir->front() != '/') {
    std::error_code ec;
    auto absolute = std::filesystem::absolute(*state_dir, ec);
    if (ec) return refuse("--state-dir " + *state_dir + ": " + ec.message());
    state_dir = absolute.lexically_normal().string();
    if (state_dir->size() > 1 && state_dir->back() == '/') state_dir->pop_back();
  }
  const std::string chosen_state_dir = state_dir                           ? *state_dir
                                       : !config->daemon.state_dir.empty() ? config->daemon.state_dir
                                                                           : acp::default_state_home();
  if (runs_cmd->parsed()) {
    runs_query.state_dir = chosen_state_dir;
    return runs_command(runs_query);
  }
  if (sessions_cmd->parsed()) return sessions_command(chosen_state_dir, sessions_format, sessions_all);
  if (usage_cmd->parsed()) {
    usage_query.state_dir = chosen_state_dir;
    return usage_command(usage_query);
  }
  // The state directory's server, for the commands that ask it.
  const std::string socket = server_address(*config, chosen_state_dir);
  if (status_cmd->parsed()) return status_command(chosen_state_dir, status_format, server_status(socket));
  if (watch_cmd->parsed()) return watch_command(socket, watch_target, watch_from, watch_format);
  if (wait_cmd->parsed()) return wait_command(socket, chosen_state_dir, wait_run, wait_timeout, wait_format);
  if (cancel_cmd->parsed()) return cancel_command(socket, cancel_target);
  if (close_cmd->parsed()) {
    // A session the server holds is closed by it; any other from here.
    if (auto fd = connect_server(socket)) {
      ::close(*fd);
      return close_through_server(socket, close_target);
    }
    return close_command(chosen_state_dir, close_target);
  }
  if (show_cmd->parsed()) return show_command(chosen_state_dir, show_run, show_format, show_file, show_export);
  if (prune_cmd->parsed()) return prune_command(chosen_state_dir, prune_older_than, prune_dry_run);
  if (forget_cmd->parsed()) return forget_command(chosen_state_dir, forget_target, forget_dry_run);
  if (gc_cmd->parsed()) return gc_command(chosen_state_dir, config->daemon.retention, gc_dry_run);
  if (approvals_cmd->parsed()) {
    return approvals_command(chosen_state_dir, approvals_session, approvals_forget, approvals_format);
  }
  if (harnesses_cmd->parsed()) return harnesses_command(*config, harnesses_check, harnesses_format, chosen_state_dir);
  if (pack_cmd->parsed()) return pack_command(wrap, *config, chosen_state_dir);
  auto& d = config->daemon;
  if (harness) {
    if (!config->harnesses.count(*harness)) {
      acp::log::error(unknown_harness_message(*harness, *config));
      return refuse(unknown_harness_message(*harness, *config));
    }
    d.default_harness = *harness;
  }
  if (cancel_grace) d.cancel_grace = to_ms(*cancel_grace);
  if (kill_grace) d.kill_grace = to_ms(*kill_grace);
  if (start_timeout) d.start_timeout = to_ms(*start_timeout);
  if (max_line_bytes) d.max_line_bytes = *max_line_bytes;

  if (idle_exit) d.idle_exit = to_ms(*idle_exit);
  // A relay serves a host on stdio, as `harnessd` with no command does.
  const bool stdio_host = app.get_subcommands().empty();
  if (worker_mode) {
    // A worker is started by a front, through ssh -T or a launcher: a
    // terminal on either end means a person, or ssh -t, where the end of
    // the front would not reach us as the end of our input.
    if (!stdio_host || connect_addr || shared) {
      acp::log::error("--worker serves ACP on stdin and stdout; it takes no command, --connect or --shared");
      return run_exit::kUsage;
    }
    if (::isatty(0) == 1 || ::isatty(1) == 1) {
      acp::log::error("--worker refuses to run on a terminal: a front harnessd starts it through pipes "
                      "(ssh -T, docker run -i without -t); see docs/remote.md");
      return run_exit::kUsage;
    }
    d.worker = true;
    d.connect.clear();
    d.shared = false;
  }
  if (!connect_addr && !d.connect.empty() && stdio_host) connect_addr = d.connect;
  shared = shared || d.shared;
  // A server that --shared starts reads the same config file.
  std::optional<std::string> config_file;
  if (config_path) config_file = std::filesystem::absolute(*config_path).lexically_normal().string();
  // What the server cannot know of this host; see RelayMeta.
  RelayMeta relay_meta;
  relay_meta.harness = harness;
  if (const char* key = std::getenv("HARNESSD_HOST_SESSION")) {
    std::string value = key;
    bool plain = !value.empty() && value.size() <= schema::kMaxHostSession;
    for (unsigned char c : value) plain = plain && c >= 0x20 && c != 0x7f;
    if (plain) relay_meta.host_session = value;
  }
  if (connect_addr) {
    if (!stdio_host) {
      acp::log::error("--connect relays a host's stdio to a server and takes no command");
      return run_exit::kUsage;
    }
    auto path = acp::parse_unix_address(*connect_addr);
    if (!path) {
      acp::log::error("--connect: " + path.error().message);
      return run_exit::kUsage;
    }
    return connect_relay(*path, relay_meta);
  }
  if (shared && stdio_host) {
    auto fd = connect_or_start_server(socket, config_file, chosen_state_dir, shared_idle_exit(*config));
    if (!fd) {
      acp::log::error(fd.error().message);
      return 1;
    }
    return relay(*fd, relay_meta);
  }

  raise_fd_limit();
  if (run_cmd->parsed()) {
    if (!harness_installed && !harness && !wrap.harness) {
      std::fprintf(stderr, "harnessd: %s", no_harness_installed_message(*config).c_str());
      return refuse(no_harness_installed_message(*config));
    }
    wrap.shared = shared;
    wrap.config_path = config_file;
    return run_command(wrap, *config, chosen_state_dir);
  }
  ServeOptions options;
  options.config = std::move(*config);
  options.guard_exe = no_guard ? std::string() : adapters::default_guard_exe();
  options.state_dir = chosen_state_dir;
  options.store.sync = options.config.daemon.fsync;
  options.store.retention = options.config.daemon.retention;
  // For tests on machines that cannot mount a small filesystem: writes fail
  // with ENOSPC after this many bytes. Not a feature; see docs/testing.md.
  if (const char* fail = std::getenv("HARNESSD_TEST_STORE_FAIL_AFTER_BYTES")) {
    options.store.fail_after_bytes = std::strtoull(fail, nullptr, 10);
  }
  // A socket from systemd (socket activation), or --listen: many clients.
  std::optional<Expected<int>> activated = acp::socket_from_systemd();
  if (activated || listen_opt->count() > 0) {
    SocketServeOptions served;
    if (activated) {
      if (!*activated) {
        acp::log::error(activated->error().message);
        return 1;
      }
      served.listen_fd = **activated;
    } else {
      std::string address = listen_addr && !listen_addr->empty() ? *listen_addr : options.config.daemon.listen;
      if (address.empty()) {
        // The state directory is made (0700) before the socket goes in it.
        auto dir = open_state_dir(chosen_state_dir, StateAccess::kOwn);
        if (!dir) {
          acp::log::error(dir.error().message);
          return 1;
        }
        address = server_socket_path(chosen_state_dir);
      }
      auto path = acp::parse_unix_address(address);
      if (!path) {
        acp::log::error("--listen: " + path.error().message);
        return run_exit::kUsage;
      }
      served.path = *path;
    }
    served.serve = std::move(options);
    return serve_socket(std::move(served));
  }
  if (::isatty(0) == 1) {
    // Someone typed `harnessd` at a prompt: say what it waits for.
    std::fprintf(stderr,
                 "harnessd: serving ACP v1 on stdin and stdout, one JSON-RPC message per line; "
                 "Ctrl-D ends. 'harnessd --help' lists the commands, 'harnessd run TASK' runs one task.\n");
  }
  options.in_fd = 0;
  options.out_fd = acp::protect_stdout();
  if (options.out_fd < 0) {
    acp::log::error("cannot set up stdout for the protocol");
    return 1;
  }
  return serve(std::move(options));
}

}  // namespace harnessd::worker
