// Test support: runs the real harnessd binary on pipes and talks JSON-RPC
// to it with timeouts, like a host would.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace harnessd::test {

using nlohmann::json;
using namespace std::chrono_literals;

/// Paths of the programs under test, set by CMake.
std::string harnessd_exe();
/// For benchmarks that compare builds: later Daemons run `path` instead.
void set_harnessd_exe(std::string path);
std::string guard_exe();
std::string fake_agent_exe();

/// A private directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  /// Writes `content` to `<path>/<name>` and returns the full path.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

/// Reads a whole file ("" if missing).
std::string read_file(const std::string& path);

/// A config whose default harness "fake" runs the fake agent with `args`;
/// `extra` adds lines to [harness.fake], `daemon` adds lines to [daemon].
std::string fake_config(const std::vector<std::string>& args = {}, const std::string& extra = "",
                        const std::string& daemon = "");

/// One harnessd process driven through its stdin and stdout.
class Daemon {
 public:
  /// Starts `harnessd --config <config> --state-dir <dir> <args...>` with
  /// short grace periods. `state_dir` empty: a fresh directory of its own;
  /// give the same directory to a second Daemon to restart "the same" one.
  explicit Daemon(const std::string& config = fake_config(), std::vector<std::string> args = {},
                  std::string state_dir = "");
  /// Closes stdin and waits for the exit; kills it if it does not exit.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  /// The destructor leaves the ledger unchecked (benchmarks on state
  /// directories with millions of runs).
  void skip_ledger_check() { check_ledger_ = false; }
  const std::string& state_dir() const { return state_dir_; }
  /// The config file it was started with.
  const std::string& config_path() const { return config_path_; }
  void send(const json& message);
  /// Writes bytes as they are (add "\n" yourself).
  void send_raw(const std::string& bytes);
  /// The next message harnessd writes, or nothing on timeout or EOF.
  std::optional<json> recv(std::chrono::milliseconds timeout = 10s);
  /// Reads until the response with `id` arrives; everything before it is
  /// appended to `seen`. Fails the test on timeout.
  json recv_reply(const json& id, std::vector<json>* seen = nullptr, std::chrono::milliseconds timeout = 10s);
  /// True when nothing arrives within `window`.
  bool quiet_for(std::chrono::milliseconds window);
  /// Raw stdout lines received so far (for checks on the bytes).
  const std::vector<std::string>& raw_lines() const { return raw_lines_; }

  void close_stdin();
  /// Waits for the exit; returns the exit code, 128+signal, or -1 on timeout.
  int wait_exit(std::chrono::milliseconds timeout = 10s);
  std::string stderr_text() const;

  // Conveniences for the common exchange.
  json initialize(const json& client_capabilities = json::object());
  std::string new_session(const std::string& cwd = "/tmp", const json& meta = nullptr);
  /// Sends session/prompt with one text block; returns the request id.
  int send_prompt(const std::string& session_id, const std::string& text);
  /// Sends a prompt and waits for its answer; updates go to `updates`.
  json prompt(const std::string& session_id, const std::string& text, std::vector<json>* updates = nullptr);

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  int exit_code_ = -1;
  bool exited_ = false;
  std::string buffer_;
  std::size_t buffer_at_ = 0;  // where the next line starts in buffer_
  std::vector<std::string> raw_lines_;
  std::string stderr_path_;
  std::string state_dir_;
  std::string config_path_;
  int next_id_ = 1000;
  bool check_ledger_ = true;
};

/// A `harnessd serve --listen` process, stdin from /dev/null, and its
/// clients: `harnessd --connect` processes driven like a Daemon.
class Server {
 public:
  /// Starts `harnessd --config <config> --state-dir <dir> serve --listen
  /// <args...>` (short grace periods, debug log) and waits until its socket
  /// answers. The socket is harnessd.sock in the state directory. With a
  /// `prefix` (systemd-socket-activate -l SOCKET), that program runs
  /// `harnessd ... serve <args...>` and passes it the socket.
  explicit Server(const std::string& config = fake_config(), std::vector<std::string> args = {},
                  std::string state_dir = "", std::vector<std::string> prefix = {});
  /// Stops it (SIGTERM) if it still runs, kills it if it does not exit in
  /// 10 s, and checks the ledger as a Daemon does.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& state_dir() const { return state_dir_; }
  const std::string& config_path() const { return config_path_; }
  std::string stderr_text() const { return read_file(stderr_path_); }
  /// A client: `harnessd --connect unix:<socket>`. Its ledger check is the
  /// server's.
  std::unique_ptr<Daemon> client();
  /// Waits for the exit; the exit code, 128+signal, or -1 on timeout.
  int wait_exit(std::chrono::milliseconds timeout = 10s);
  /// SIGTERM, then wait_exit.
  int stop(std::chrono::milliseconds timeout = 10s);
  void skip_ledger_check() { check_ledger_ = false; }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
  bool exited_ = false;
  bool check_ledger_ = true;
  std::string stderr_path_, state_dir_, config_path_, socket_;
};

/// Runs `harnessd ARGS` (ARGS as a shell would split them) and returns its
/// exit code (-1 if a signal ended it); its stdout, and its stderr too when
/// `with_stderr`, go to `output`.
int run_cli(const std::string& args, std::string* output = nullptr, bool with_stderr = true);

/// Checks the ledger of a state directory: every run has at most one
/// terminal entry, and exactly one unless `allow_open` (a daemon that was
/// killed). Returns the problems found, empty when all is well.
std::vector<std::string> check_ledger(const std::string& state_dir, bool allow_open = false);

/// Problems found by Daemon destructors since the last call; the test
/// listener fails the test case on any.
std::vector<std::string> take_ledger_problems();

/// The concatenated text of agent_message_chunk updates in `updates`.
std::string message_text(const std::vector<json>& updates);

/// The live (not zombie) children of `parent`, with their command names, from /proc.
std::vector<std::pair<pid_t, std::string>> children_of(pid_t parent);

/// True if a process with this pid exists (and is not a zombie).
bool process_alive(pid_t pid);

/// A field of /proc/<pid>/status in KiB ("VmRSS", "VmHWM"), or -1.
long status_kib(pid_t pid, const std::string& field);

/// Milliseconds since the epoch (comparable across processes).
long long wall_ms();

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes).
long long monotonic_ns();

/// The value at fraction `p` (0..1) of `v` once sorted; 0 when empty.
double percentile(std::vector<double> v, double p);

/// User plus system CPU of `pid` (all its threads), in microseconds.
long long cpu_us(pid_t pid);

/// Copies the state directory `from` (a fixture of the repository) to `to`
/// as private as harnessd makes its own (a checkout does not keep modes).
void copy_state_dir(const std::string& from, const std::string& to);

/// A JSON-RPC request.
json request(const json& id, const std::string& method, const json& params);

/// The fake agent's pid and its parent's (the guard's), from a `pid` prompt
/// on `sid`. Throws if the prompt does not end as expected.
std::pair<pid_t, pid_t> adapter_pids(Daemon& d, const std::string& sid);

/// A JSON-RPC notification.
json notification(const std::string& method, const json& params);

/// The params ({sessionId, update}) of the session/update notifications in
/// `seen`, in order; only those of `sid` and of the update kind `kind` when
/// they are given.
std::vector<json> update_params(const std::vector<json>& seen, const std::string& sid = "",
                                const std::string& kind = "");

/// The ledger of a state directory, as `harnessd runs --transitions
/// --format json` prints it (without its `version` field).
struct Ledger {
  std::vector<json> entries;     // every recorded transition, oldest first
  std::vector<std::string> bad;  // what the reader skipped or could not read, said as it said it
  std::map<std::string, std::vector<json>> terminal;  // the terminal entries, by run
};
Ledger read_ledger(const std::string& state_dir);

/// What a harnessd command printed, and how it exited.
struct Output {
  int code = -1;
  std::string out, err;
};
/// Runs the harnessd under test with `args`, stdin from /dev/null.
Output run_harnessd(const std::vector<std::string>& args);
/// The same with `extra_env` (NAME=value) before harnessd's own environment.
Output run_harnessd_env(const std::vector<std::string>& extra_env, const std::vector<std::string>& args);

/// One file of a run's recording (request.json, prompt.md, events.jsonl,
/// stderr.log, result.json), as `harnessd show RUN --file NAME` prints it;
/// nullopt when the run has no such file.
std::optional<std::string> run_file(const std::string& state_dir, const std::string& run_id, const std::string& name);

/// The run id harnessd put on a prompt's answer (result or error).
std::string run_id_of(const json& answer);

/// The permission bits of `path` itself (links not followed), or -1.
int mode_of(const std::string& path);

/// Waits until `pred` holds or `timeout` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 3s);

}  // namespace harnessd::test

#include <thread>
namespace harnessd::test {
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}
}  // namespace harnessd::test
