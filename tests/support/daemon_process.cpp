// The harnessd process driver used by integration tests.
#include "daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <stdexcept>

namespace harnessd::test {

namespace {
// Test code reports failures by throwing; Catch2 shows the message.
void must(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

std::vector<std::string>& ledger_problems() {
  static std::vector<std::string> problems;
  return problems;
}
}  // namespace

std::vector<std::string> take_ledger_problems() {
  std::vector<std::string> out;
  out.swap(ledger_problems());
  return out;
}

int run_cli(const std::string& args, std::string* output, bool with_stderr) {
  std::string cmd = harnessd_exe() + " " + args + (with_stderr ? " 2>&1" : "");
  FILE* p = ::popen(cmd.c_str(), "r");
  must(p != nullptr, "cannot run " + cmd);
  std::string out;
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (output) *output = std::move(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::string> check_ledger(const std::string& state_dir, bool allow_open) {
  std::vector<std::string> problems;
  Ledger l = read_ledger(state_dir);
  for (const auto& why : l.bad) problems.push_back(state_dir + ": " + why);
  std::map<std::string, int> ends;
  std::vector<std::string> order;
  for (const json& e : l.entries) {
    std::string run = e.value("runId", "");
    if (!ends.count(run)) order.push_back(run);
    ends[run] += static_cast<int>(e.value("event", "") != "queued" && e.value("event", "") != "started");
  }
  for (const auto& run : order) {
    int n = ends[run];
    if (n > 1) problems.push_back(state_dir + ": run " + run + " has " + std::to_string(n) + " terminal entries");
    if (n == 0 && !allow_open) problems.push_back(state_dir + ": run " + run + " never ended");
  }
  return problems;
}

namespace {
std::string& harnessd_override() {
  static std::string path;
  return path;
}
}  // namespace

std::string harnessd_exe() { return harnessd_override().empty() ? HARNESSD_EXE : harnessd_override(); }
void set_harnessd_exe(std::string path) { harnessd_override() = std::move(path); }
std::string guard_exe() { return GUARD_EXE; }
std::string fake_agent_exe() { return FAKE_AGENT_EXE; }

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "harnessd-test-XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  must(made != nullptr, "cannot create a temporary directory");
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  std::string full = path_ + "/" + name;
  std::ofstream out(full, std::ios::binary);
  out << content;
  return full;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string fake_config(const std::vector<std::string>& args, const std::string& extra, const std::string& daemon) {
  json argv = json::array({fake_agent_exe()});
  for (const auto& a : args) argv.push_back(a);
  // A JSON array of strings is also a valid TOML array.
  return "[daemon]\ndefault_harness = \"fake\"\n" + daemon + "\n[harness.fake]\ncommand = " + argv.dump() + "\n" +
         extra;
}

Daemon::Daemon(const std::string& config, std::vector<std::string> args, std::string state_dir) {
  config_path_ = dir_.write("config.toml", config);
  const std::string& config_path = config_path_;
  stderr_path_ = dir_.path() + "/stderr.log";
  state_dir_ = state_dir.empty() ? dir_.path() + "/state" : std::move(state_dir);
  std::vector<std::string> argv = {harnessd_exe(), "--config",     config_path, "--state-dir", state_dir_,
                                   "--cancel-grace", "0.3",        "--kill-grace", "0.5",
                                   "--log-level",    "debug"};
  argv.insert(argv.end(), args.begin(), args.end());

  int in_pipe[2], out_pipe[2];
  must(pipe2(in_pipe, O_CLOEXEC) == 0 && pipe2(out_pipe, O_CLOEXEC) == 0, "cannot create pipes");
  int err_fd = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  must(err_fd >= 0, "cannot create " + stderr_path_);
  pid_ = fork();
  must(pid_ >= 0, "cannot fork");
  if (pid_ == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_fd, 2);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_fd);
  in_ = in_pipe[1];
  out_ = out_pipe[0];
}

Daemon::~Daemon() {
  close_stdin();
  int code = wait_exit(10s);
  if (code == -1 && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    code = 128 + SIGKILL;
  }
  if (out_ >= 0) ::close(out_);
  // Completion truth: after every daemon, every run ended exactly once
  // (a daemon killed mid-run may leave runs for the next start to end).
  if (!check_ledger_) return;
  for (auto& p : check_ledger(state_dir_, code == 128 + SIGKILL)) ledger_problems().push_back(std::move(p));
}

Server::Server(const std::string& config, std::vector<std::string> args, std::string state_dir,
               std::vector<std::string> prefix) {
  config_path_ = dir_.write("config.toml", config);
  stderr_path_ = dir_.path() + "/server.log";
  state_dir_ = state_dir.empty() ? dir_.path() + "/state" : std::move(state_dir);
  socket_ = state_dir_ + "/harnessd.sock";
  std::vector<std::string> argv = std::move(prefix);
  const bool activated = !argv.empty();
  argv.insert(argv.end(), {harnessd_exe(), "--config", config_path_, "--state-dir", state_dir_, "--cancel-grace", "0.3",
                           "--kill-grace", "0.5", "--log-level", "debug", "serve"});
  if (!activated) argv.push_back("--listen");
  argv.insert(argv.end(), args.begin(), args.end());
  if (activated) {
    std::filesystem::create_directories(state_dir_);
    ::chmod(state_dir_.c_str(), 0700);
  }
  int err_fd = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  must(err_fd >= 0, "cannot create " + stderr_path_);
  pid_ = fork();
  must(pid_ >= 0, "cannot fork");
  if (pid_ == 0) {
    int null = ::open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(err_fd, 2);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execvp(cargv[0], cargv.data());
    _exit(127);
  }
  ::close(err_fd);
  // Up once its socket takes connections.
  bool up = eventually(
      [&] {
        if (wait_exit(0ms) != -1) return true;
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_.c_str());
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        return ok;
      },
      10s);
  must(up && !exited_, "the server did not start listening: " + stderr_text());
}

Server::~Server() {
  int code = exited_ ? exit_code_ : stop(10s);
  if (code == -1 && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    code = 128 + SIGKILL;
  }
  if (!check_ledger_) return;
  for (auto& p : check_ledger(state_dir_, code == 128 + SIGKILL)) ledger_problems().push_back(std::move(p));
}

std::unique_ptr<Daemon> Server::client() {
  auto d = std::make_unique<Daemon>(read_file(config_path_), std::vector<std::string>{"--connect", "unix:" + socket_},
                                    state_dir_);
  d->skip_ledger_check();
  return d;
}

int Server::wait_exit(std::chrono::milliseconds timeout) {
  if (exited_) return exit_code_;
  auto end = std::chrono::steady_clock::now() + timeout;
  do {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    usleep(2000);
  } while (std::chrono::steady_clock::now() < end);
  return -1;
}

int Server::stop(std::chrono::milliseconds timeout) {
  if (!exited_) ::kill(pid_, SIGTERM);
  return wait_exit(timeout);
}

void Daemon::send_raw(const std::string& bytes) {
  must(in_ >= 0, "stdin of harnessd is already closed");
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(in_, p, left);
    if (n < 0 && errno == EINTR) continue;
    must(n > 0, "cannot write to harnessd");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void Daemon::send(const json& message) { send_raw(message.dump() + "\n"); }

std::optional<json> Daemon::recv(std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n', buffer_at_);
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(buffer_at_, nl - buffer_at_);
      buffer_at_ = nl + 1;
      raw_lines_.push_back(line);
      json parsed = json::parse(line, nullptr, false);
      must(!parsed.is_discarded(), "harnessd wrote a line that is not JSON: " + line);
      return parsed;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || out_ < 0) return std::nullopt;
    pollfd pfd{out_, POLLIN, 0};
    int rc = poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return std::nullopt;
    char buf[65536];
    ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    buffer_.erase(0, buffer_at_);  // what is left is the start of a line
    buffer_at_ = 0;
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

json Daemon::recv_reply(const json& id, std::vector<json>* seen, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    auto msg = recv(std::max(left, 1ms));
    must(msg.has_value(), "no answer to request " + id.dump() + "; harnessd's stderr:\n" + stderr_text());
    if (msg->contains("id") && (*msg)["id"] == id && !msg->contains("method")) return *msg;
    if (seen) seen->push_back(*msg);
  }
}

bool Daemon::quiet_for(std::chrono::milliseconds window) { return !recv(window).has_value(); }

void Daemon::close_stdin() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

int Daemon::wait_exit(std::chrono::milliseconds timeout) {
  if (exited_) return exit_code_;
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    usleep(2000);
  }
  return -1;
}

std::string Daemon::stderr_text() const { return read_file(stderr_path_); }

json Daemon::initialize(const json& client_capabilities) {
  int id = next_id_++;
  send({{"jsonrpc", "2.0"},
        {"id", id},
        {"method", "initialize"},
        {"params", {{"protocolVersion", 1}, {"clientCapabilities", client_capabilities}}}});
  json reply = recv_reply(id);
  must(reply.contains("result"), "initialize failed: " + reply.dump());
  return reply["result"];
}

std::string Daemon::new_session(const std::string& cwd, const json& meta) {
  int id = next_id_++;
  json params = {{"cwd", cwd}, {"mcpServers", json::array()}};
  if (!meta.is_null()) params["_meta"] = meta;
  send({{"jsonrpc", "2.0"}, {"id", id}, {"method", "session/new"}, {"params", params}});
  json reply = recv_reply(id);
  must(reply.contains("result"), "session/new failed: " + reply.dump());
  return reply["result"]["sessionId"].get<std::string>();
}

int Daemon::send_prompt(const std::string& session_id, const std::string& text) {
  int id = next_id_++;
  send({{"jsonrpc", "2.0"},
        {"id", id},
        {"method", "session/prompt"},
        {"params", {{"sessionId", session_id}, {"prompt", json::array({{{"type", "text"}, {"text", text}}})}}}});
  return id;
}

json Daemon::prompt(const std::string& session_id, const std::string& text, std::vector<json>* updates) {
  int id = send_prompt(session_id, text);
  return recv_reply(id, updates);
}

std::string message_text(const std::vector<json>& updates) {
  std::string out;
  for (const auto& m : updates) {
    if (m.value("method", "") != "session/update") continue;
    const json& u = m["params"]["update"];
    if (u.value("sessionUpdate", "") == "agent_message_chunk" && u["content"].value("type", "") == "text") {
      out += u["content"]["text"].get<std::string>();
    }
  }
  return out;
}

long status_kib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

long long wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

long long monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

json request(const json& id, const std::string& method, const json& params) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
}

std::pair<pid_t, pid_t> adapter_pids(Daemon& d, const std::string& sid) {
  std::vector<json> seen;
  json reply = d.prompt(sid, "pid", &seen);
  if (!reply.contains("result") || reply["result"].value("stopReason", "") != "end_turn") {
    throw std::runtime_error("the pid prompt did not end: " + reply.dump());
  }
  std::string text = message_text(seen);
  if (text.rfind("pid ", 0) != 0 || text.find(" ppid ") == std::string::npos) {
    throw std::runtime_error("the pid prompt answered '" + text + "'");
  }
  return {std::stoi(text.substr(4)), std::stoi(text.substr(text.find(" ppid ") + 6))};
}

json notification(const std::string& method, const json& params) {
  return {{"jsonrpc", "2.0"}, {"method", method}, {"params", params}};
}

std::vector<json> update_params(const std::vector<json>& seen, const std::string& sid, const std::string& kind) {
  std::vector<json> out;
  for (const auto& m : seen) {
    if (m.value("method", "") != "session/update" || !m.contains("params")) continue;
    const json& p = m["params"];
    if (!sid.empty() && p.value("sessionId", "") != sid) continue;
    if (!kind.empty() && (!p.contains("update") || p["update"].value("sessionUpdate", "") != kind)) continue;
    out.push_back(p);
  }
  return out;
}

Ledger read_ledger(const std::string& state_dir) {
  Ledger l;
  // Read the way a person would: harnessd's own command prints every
  // recorded transition, whatever holds them on disk.
  Output out = run_harnessd({"--state-dir", state_dir, "runs", "--transitions", "--format", "json"});
  if (out.code != 0) l.bad.push_back("harnessd runs --transitions exited " + std::to_string(out.code) + ": " + out.err);
  std::istringstream in(out.out);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      l.bad.push_back("not JSON: " + line.substr(0, 200));
      continue;
    }
    j.erase("version");
    l.entries.push_back(j);
    std::string event = j.value("event", "");
    auto& ends = l.terminal[j.value("runId", "")];
    if (event != "queued" && event != "started") ends.push_back(j);
  }
  // Lines the reader skipped (cut by a crash) are said on stderr.
  std::istringstream err(out.err);
  while (std::getline(err, line)) {
    if (line.find("is not JSON") != std::string::npos) l.bad.push_back(line);
  }
  return l;
}

std::optional<std::string> run_file(const std::string& state_dir, const std::string& run_id, const std::string& name) {
  Output shown = run_harnessd({"--state-dir", state_dir, "show", run_id, "--file", name});
  if (shown.code != 0) return std::nullopt;
  return shown.out;
}

Output run_harnessd(const std::vector<std::string>& args) { return run_harnessd_env({}, args); }

Output run_harnessd_env(const std::vector<std::string>& extra_env, const std::vector<std::string>& args) {
  TempDir tmp;
  std::string out_path = tmp.path() + "/out", err_path = tmp.path() + "/err";
  // Everything the child needs is made before the fork: other threads may
  // hold the allocator's lock.
  std::vector<std::string> argv = {harnessd_exe()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<std::string> env = extra_env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  std::vector<char*> cenv;
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  pid_t pid = ::fork();
  must(pid >= 0, "fork failed");
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (devnull < 0 || o < 0 || e < 0) ::_exit(127);
    ::dup2(devnull, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Output r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

std::string run_id_of(const json& answer) {
  if (answer.contains("result")) return answer["result"]["_meta"]["harnessd"]["runId"];
  return answer["error"]["data"]["runId"];
}

int mode_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

std::vector<std::pair<pid_t, std::string>> children_of(pid_t parent) {
  std::vector<std::pair<pid_t, std::string>> out;
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    auto close_paren = line.rfind(')');
    if (close_paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid != parent || state == 'Z') continue;
    auto open_paren = line.find('(');
    out.emplace_back(static_cast<pid_t>(pid), line.substr(open_paren + 1, close_paren - open_paren - 1));
  }
  closedir(dir);
  return out;
}

bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(stat, content)) return false;
  auto close_paren = content.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= content.size()) return false;
  return content[close_paren + 2] != 'Z';
}

long long cpu_us(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  // Fields after the command (which may hold spaces) start after the last ')'.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return (utime + stime) * 1000000LL / sysconf(_SC_CLK_TCK);
}

void copy_state_dir(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  fs::copy(from, to, fs::copy_options::recursive);
  for (const auto& e : fs::recursive_directory_iterator(to)) {
    fs::permissions(e.path(), e.is_directory() ? fs::perms::owner_all : fs::perms::owner_read | fs::perms::owner_write);
  }
  fs::permissions(to, fs::perms::owner_all);
}

}  // namespace harnessd::test
