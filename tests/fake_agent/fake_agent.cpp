// fake_agent: a scriptable ACP v1 agent used by harnessd's tests as a stand-in adapter.
// JSON-RPC 2.0 over stdin/stdout, one compact JSON object per line; the prompt text picks the behaviour.
// See README.md in this directory for the commands and command-line flags.

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kInternalError = -32603;
constexpr int kResourceNotFound = -32002;
constexpr int kAuthRequired = -32000;
constexpr long long kTickMs = 50;
constexpr size_t kReadChunk = 65536;

struct Options {
  std::optional<int> exit_on_start;
  bool no_init_reply = false;
  bool new_error = false;
  bool banner = false;
  long long init_delay_ms = 0;
  std::string log_file;
  std::string timing_file;
  std::string state_dir;  // empty: history is kept in memory only
  bool resume = false;    // advertise and implement session/resume
  bool load = false;      // advertise and implement session/load
  bool close = false;     // advertise session/close (always served)
  bool auth_required = false;  // session/new, resume and load need authenticate first
  std::string auth_env;        // also offer an env_var auth method reading this variable
  bool config_options = false;  // offer the "model" config option
};

// One completed prompt turn of a session, as remembered for `history`, session/load and --state-dir.
struct TurnRecord {
  std::string prompt;  // first text block, trimmed
  std::string reply;   // concatenated agent_message_chunk texts of the turn
};

struct Session {
  std::string cwd;
  std::vector<TurnRecord> turns;
  std::string model = "fake-small";  // its one config option
  // `usage`: what the session has cost so far and its context's size, as
  // usage_update reports them (cumulative, per the ACP session-usage RFD).
  double cost = 0;
  long long context = 0;
};

// The session's config options, as ACP session/new and set_config_option answer them.
json config_options(const Session& s) {
  return json::array({{{"id", "model"},
                       {"name", "Model"},
                       {"category", "model"},
                       {"type", "select"},
                       {"currentValue", s.model},
                       {"options", json::array({{{"value", "fake-small"}, {"name", "Small"}},
                                                {{"value", "fake-large"}, {"name", "Large"}}})}}});
}

// State of the prompt turn currently being executed.
struct Turn {
  json request_id;
  std::string session_id;
  bool cancel_requested = false;
  bool ignore_cancel = false;
  bool answered = false;
  std::string prompt;                 // first text block, trimmed
  std::string reply;                  // agent_message_chunk texts sent so far
  bool recorded = false;              // appended to the session's history
  std::optional<size_t> record_index;  // where, if the session still existed
};

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (fd == 1) _exit(1);  // stdout is gone: nobody is listening any more
      return;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void log_err(const std::string& text) { write_all(2, "fake-agent: " + text + "\n"); }

// Compact serialisation that never throws on odd strings.
std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// Splits "word rest" into the first word and everything after the single separator following it.
std::pair<std::string, std::string> split_word(std::string_view text) {
  size_t end = 0;
  while (end < text.size() && !is_space(text[end])) ++end;
  std::string word(text.substr(0, end));
  std::string rest = end < text.size() ? std::string(text.substr(end + 1)) : std::string();
  return {word, rest};
}

std::optional<long long> parse_int(std::string_view s) {
  long long value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

long long int_arg(std::string_view args, long long fallback) {
  std::string text = trim(args);
  return parse_int(text).value_or(fallback);
}

void on_sigchld(int) {}  // only there to interrupt poll() so children get reaped

class FakeAgent {
 public:
  explicit FakeAgent(Options options) : options_(std::move(options)) {
    if (!options_.log_file.empty()) {
      log_fd_ = ::open(options_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (log_fd_ < 0) log_err("cannot open log file " + options_.log_file + ": " + std::strerror(errno));
    }
    if (!options_.timing_file.empty()) {
      timing_fd_ = ::open(options_.timing_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (timing_fd_ < 0) log_err("cannot open timing file " + options_.timing_file + ": " + std::strerror(errno));
    }
    if (!options_.state_dir.empty()) {
      std::error_code error;
      std::filesystem::create_directories(options_.state_dir, error);
      if (error) log_err("cannot create state dir " + options_.state_dir + ": " + error.message());
    }
  }

  [[noreturn]] void run() {
    for (;;) {
      if (pending_prompts_.empty()) {
        pump(-1);
        continue;
      }
      json request = std::move(pending_prompts_.front());
      pending_prompts_.pop_front();
      run_turn(request);
    }
  }

 private:
  // ---- transport -------------------------------------------------------

  void send(const json& message) { send_raw_line(dump(message)); }

  void send_raw_line(const std::string& line) { write_all(1, line + "\n"); }

  void respond(const json& id, json result) {
    bool prompt_answer = result.is_object() && result.contains("stopReason");
    send({{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}});
    if (prompt_answer) timing("answer");
  }

  // "<CLOCK_MONOTONIC ns> <event>" lines for benchmarks (--timing-file).
  void timing(const char* event) {
    if (timing_fd_ < 0) return;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    write_all(timing_fd_, std::to_string(ts.tv_sec * 1000000000LL + ts.tv_nsec) + " " + event + "\n");
  }

  void respond_error(const json& id, int code, const std::string& message, std::optional<json> data = {}) {
    json error = {{"code", code}, {"message", message}};
    if (data) error["data"] = std::move(*data);
    send({{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}});
  }

  long long send_request(const std::string& method, std::optional<json> params) {
    long long id = next_request_id_++;
    json message = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
    if (params) message["params"] = std::move(*params);
    awaited_.insert(id);
    send(message);
    return id;
  }

  // Waits up to timeout_ms (-1: forever) for stdin and dispatches every complete line that arrived.
  void pump(int timeout_ms) {
    if (stdin_closed_) {
      ::poll(nullptr, 0, timeout_ms);
      reap_children();
      return;
    }
    pollfd fd{0, POLLIN, 0};
    int ready = ::poll(&fd, 1, timeout_ms);
    reap_children();
    if (ready <= 0) return;  // timeout or EINTR
    char chunk[kReadChunk];
    ssize_t n = ::read(0, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      on_eof();
      return;
    }
    input_.append(chunk, static_cast<size_t>(n));
    size_t newline;
    while ((newline = input_.find('\n')) != std::string::npos) {
      std::string line = input_.substr(0, newline);
      input_.erase(0, newline + 1);
      handle_line(std::move(line));
    }
  }

  void on_eof() {
    if (!ignore_eof_) {
      log_err("stdin closed, exiting");
      std::exit(0);
    }
    log_err("stdin closed, ignoring it");
    stdin_closed_ = true;
  }

  void reap_children() {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  void handle_line(std::string line) {
    if (timing_fd_ >= 0 && line.find("\"session/prompt\"") != std::string::npos) timing("prompt");
    if (log_fd_ >= 0) write_all(log_fd_, line + "\n");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) return;
    json message = json::parse(line, nullptr, false);
    if (message.is_discarded() || !message.is_object()) {
      log_err("ignoring non-JSON-RPC input line: " + line);
      return;
    }
    try {
      if (message.contains("method") && message["method"].is_string()) {
        if (message.contains("id"))
          handle_request(message);
        else
          handle_notification(message);
      } else if (message.contains("id") && (message.contains("result") || message.contains("error"))) {
        handle_response(message);
      } else {
        log_err("ignoring unrecognised message: " + line);
      }
    } catch (const std::exception& e) {
      log_err(std::string("failed to handle message: ") + e.what());
    }
  }

  void handle_request(const json& message) {
    const json& id = message["id"];
    const std::string method = message["method"];
    const json params = message.value("params", json::object());
    if (method == "initialize") {
      if (options_.no_init_reply) {
        log_err("--no-init-reply: not answering initialize");
        return;
      }
      if (options_.init_delay_ms > 0) ::usleep(static_cast<useconds_t>(options_.init_delay_ms * 1000));
      json caps = params.is_object() ? params.value("clientCapabilities", json::object()) : json::object();
      client_capabilities_ = caps.is_null() ? json::object() : caps;
      json agent_caps = {{"loadSession", options_.load},
                         {"promptCapabilities", {{"image", true}, {"audio", false}, {"embeddedContext", true}}}};
      if (options_.resume) agent_caps["sessionCapabilities"]["resume"] = json::object();
      if (options_.close) agent_caps["sessionCapabilities"]["close"] = json::object();
      respond(id, {{"protocolVersion", 1},
                   {"agentCapabilities", std::move(agent_caps)},
                   {"authMethods", auth_methods()},
                   {"agentInfo", {{"name", "fake-agent"}, {"version", "1.0.0"}}}});
    } else if (method == "authenticate") {
      authenticate(id, params);
    } else if (options_.auth_required && !authenticated_ &&
               (method == "session/new" || method == "session/resume" || method == "session/load")) {
      respond_error(id, kAuthRequired, "Authentication required");
    } else if (method == "session/new") {
      if (options_.new_error) {
        respond_error(id, kInternalError, "cannot create session");
        return;
      }
      if (!params.is_object() || !params.contains("cwd") || !params["cwd"].is_string()) {
        respond_error(id, kInvalidParams, "Invalid params: cwd (string) is required");
        return;
      }
      std::string session_id = "fake-" + std::to_string(::getpid()) + "-" + std::to_string(next_session_++);
      Session& session = sessions_[session_id];
      session.cwd = params["cwd"].get<std::string>();
      persist(session_id, session);
      json answer = {{"sessionId", session_id}};
      if (options_.config_options) answer["configOptions"] = config_options(session);
      respond(id, answer);
    } else if (method == "session/set_config_option" && options_.config_options) {
      auto it = sessions_.find(params.value("sessionId", ""));
      std::string value = params.value("value", json()).is_string() ? params["value"].get<std::string>() : "";
      if (it == sessions_.end()) {
        respond_error(id, kInvalidParams, "Unknown session");
      } else if (params.value("configId", "") != "model") {
        respond_error(id, kInvalidParams, "Unknown config option: " + params.value("configId", json()).dump());
      } else if (value != "fake-small" && value != "fake-large") {
        respond_error(id, kInvalidParams, "Unknown model: " + value);
      } else {
        it->second.model = value;
        respond(id, {{"configOptions", config_options(it->second)}});
      }
    } else if (method == "session/prompt") {
      pending_prompts_.push_back(message);  // run by run(), never nested inside another turn
    } else if (method == "session/close") {
      if (params.is_object() && params.contains("sessionId") && params["sessionId"].is_string())
        sessions_.erase(params["sessionId"].get<std::string>());
      respond(id, json::object());
    } else if ((method == "session/resume" && options_.resume) || (method == "session/load" && options_.load)) {
      resume_or_load(id, params, method == "session/load");
    } else {
      respond_error(id, kMethodNotFound, "Method not found: " + method);
    }
  }

  json auth_methods() const {
    json methods = json::array();
    if (!options_.auth_required) return methods;
    methods.push_back({{"id", "fake-login"}, {"name", "Log in with a browser"}});
    if (!options_.auth_env.empty()) {
      methods.push_back({{"id", "fake-key"}, {"name", "API key"}, {"type", "env_var"}, {"varName", options_.auth_env}});
    }
    return methods;
  }

  // fake-key succeeds when its variable is set and not empty; fake-login never can (no browser here).
  void authenticate(const json& id, const json& params) {
    std::string method_id = params.is_object() ? params.value("methodId", "") : "";
    if (method_id == "fake-key" && !options_.auth_env.empty()) {
      const char* value = std::getenv(options_.auth_env.c_str());
      if (value && *value) {
        authenticated_ = true;
        log_err("authenticated with fake-key");
        respond(id, json::object());
        return;
      }
      respond_error(id, kAuthRequired, options_.auth_env + " is not set");
      return;
    }
    respond_error(id, kAuthRequired, "cannot authenticate with '" + method_id + "' here");
  }

  // session/resume adopts a known session silently; session/load replays its history first.
  void resume_or_load(const json& id, const json& params, bool replay) {
    if (!params.is_object() || !params.contains("sessionId") || !params["sessionId"].is_string() ||
        !params.contains("cwd") || !params["cwd"].is_string()) {
      respond_error(id, kInvalidParams, "Invalid params: sessionId (string) and cwd (string) are required");
      return;
    }
    const std::string session_id = params["sessionId"];
    Session* session = find_or_adopt(session_id);
    if (!session) {
      respond_error(id, kResourceNotFound, "Session not found: " + session_id, json{{"sessionId", session_id}});
      return;
    }
    session->cwd = params["cwd"].get<std::string>();
    log_err(std::string(replay ? "loaded " : "resumed ") + session_id + " with " +
            std::to_string(session->turns.size()) + " turn(s)");
    if (replay) {
      for (const TurnRecord& turn : session->turns) {
        send_session_update(session_id, {{"sessionUpdate", "user_message_chunk"},
                                         {"content", {{"type", "text"}, {"text", turn.prompt}}}});
        send_session_update(session_id, {{"sessionUpdate", "agent_message_chunk"},
                                         {"content", {{"type", "text"}, {"text", turn.reply}}}});
      }
    }
    respond(id, json::object());
  }

  // ---- session history ----------------------------------------------------

  // Ids that are safe to use as a file name inside the state dir.
  static bool storable_id(const std::string& id) {
    return !id.empty() && id.front() != '.' && id.find('/') == std::string::npos &&
           id.find('\0') == std::string::npos;
  }

  std::string history_path(const std::string& session_id) const {
    return options_.state_dir + "/" + session_id + ".json";
  }

  // The session from memory, or else from its history file (then kept in memory); nullptr if unknown.
  Session* find_or_adopt(const std::string& session_id) {
    if (auto it = sessions_.find(session_id); it != sessions_.end()) return &it->second;
    if (options_.state_dir.empty() || !storable_id(session_id)) return nullptr;
    std::ifstream in(history_path(session_id), std::ios::binary);
    if (!in) return nullptr;
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    json stored = json::parse(text, nullptr, false);
    if (stored.is_discarded() || !stored.is_object()) {
      log_err("ignoring unreadable history file " + history_path(session_id));
      return nullptr;
    }
    Session session;
    if (stored.contains("cwd") && stored["cwd"].is_string()) session.cwd = stored["cwd"];
    if (stored.contains("turns") && stored["turns"].is_array()) {
      for (const json& turn : stored["turns"]) {
        if (!turn.is_object()) continue;
        TurnRecord record;
        if (turn.contains("prompt") && turn["prompt"].is_string()) record.prompt = turn["prompt"];
        if (turn.contains("reply") && turn["reply"].is_string()) record.reply = turn["reply"];
        session.turns.push_back(std::move(record));
      }
    }
    return &(sessions_[session_id] = std::move(session));
  }

  // Writes DIR/<id>.json atomically (temp file + rename); no-op without --state-dir.
  void persist(const std::string& session_id, const Session& session) {
    if (options_.state_dir.empty()) return;
    if (!storable_id(session_id)) {
      log_err("not persisting session with unusable id " + session_id);
      return;
    }
    json turns = json::array();
    for (const TurnRecord& turn : session.turns) turns.push_back({{"prompt", turn.prompt}, {"reply", turn.reply}});
    const std::string data = dump({{"cwd", session.cwd}, {"turns", std::move(turns)}}) + "\n";
    const std::string path = history_path(session_id);
    const std::string temp = options_.state_dir + "/." + session_id + ".json.tmp-" + std::to_string(::getpid());
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      log_err("cannot write " + temp + ": " + std::strerror(errno));
      return;
    }
    std::string_view rest = data;
    bool ok = true;
    while (!rest.empty()) {
      ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ok = false;
        break;
      }
      rest.remove_prefix(static_cast<size_t>(n));
    }
    if (::close(fd) != 0) ok = false;
    if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
      log_err("cannot write " + path + ": " + std::strerror(errno));
      ::unlink(temp.c_str());
    }
  }

  // Appends the running turn to its session's history (once) and persists it.
  void record_turn() {
    if (!turn_ || turn_->recorded) return;
    turn_->recorded = true;
    auto it = sessions_.find(turn_->session_id);
    if (it == sessions_.end()) return;  // closed while the turn ran
    it->second.turns.push_back({turn_->prompt, turn_->reply});
    turn_->record_index = it->second.turns.size() - 1;
    persist(it->first, it->second);
  }

  // Chunks sent after the answer (update-after) still belong to the turn's reply.
  void update_recorded_reply() {
    if (!turn_ || !turn_->record_index) return;
    auto it = sessions_.find(turn_->session_id);
    if (it == sessions_.end() || *turn_->record_index >= it->second.turns.size()) return;
    TurnRecord& record = it->second.turns[*turn_->record_index];
    if (record.reply == turn_->reply) return;
    record.reply = turn_->reply;
    persist(it->first, it->second);
  }

  void handle_notification(const json& message) {
    if (message["method"] != "session/cancel") return;
    const json params = message.value("params", json::object());
    if (!params.is_object() || !params.contains("sessionId") || !params["sessionId"].is_string()) return;
    const std::string session_id = params["sessionId"];
    if (turn_ && !turn_->answered && turn_->session_id == session_id) {
      log_err("cancel requested for " + session_id + (turn_->ignore_cancel ? " (ignored)" : ""));
      turn_->cancel_requested = true;
    }
    // Prompts queued behind the running turn are cancelled before they start.
    for (auto it = pending_prompts_.begin(); it != pending_prompts_.end();) {
      const json queued = it->value("params", json());
      if (queued.is_object() && queued.value("sessionId", json()) == session_id) {
        respond((*it)["id"], {{"stopReason", "cancelled"}});
        it = pending_prompts_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void handle_response(const json& message) {
    const json& id = message["id"];
    if (id.is_number_integer() && awaited_.count(id.get<long long>())) {
      awaited_.erase(id.get<long long>());
      responses_[id.get<long long>()] = message;
    } else {
      log_err("ignoring response to unknown or abandoned request id " + dump(id));
    }
  }

  // Writes n chunks as fast as blocking writes allow, built by hand (no
  // JSON objects per chunk), so the adapter is never the bottleneck; then a
  // chunk that tells the wall-clock time the last write returned.
  void cmd_flood(const std::string& args) {
    auto [count, rest] = split_word(args);
    long long n = int_arg(count, 1);
    long long pad = std::max(0LL, int_arg(trim(rest), 0));
    const std::string head = R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":)" +
                             dump(turn_->session_id) +
                             R"(,"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"chunk )";
    const std::string tail = std::string(static_cast<size_t>(pad), 'x') + "\"}}}}\n";
    std::string batch;
    for (long long i = 1; i <= n; ++i) {
      batch += head;
      batch += std::to_string(i);
      if (pad) batch += ' ';
      batch += tail;
      if (batch.size() >= 16384 || i == n) {
        write_all(1, batch);
        batch.clear();
      }
    }
    long long done_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    send_chunk("flood done " + std::to_string(done_ms));
    finish("end_turn");
  }

  // "paced N US": N chunks, one every US microseconds, each saying when it
  // was written ("at <CLOCK_MONOTONIC ns>"), for latency benchmarks.
  void cmd_paced(const std::string& args) {
    auto [count, rest] = split_word(args);
    long long n = int_arg(count, 1);
    long long us = std::max(0LL, int_arg(trim(rest), 1000));
    auto next = Clock::now();
    for (long long i = 1; i <= n; ++i) {
      timespec ts{};
      clock_gettime(CLOCK_MONOTONIC, &ts);
      send_chunk("at " + std::to_string(static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec));
      next += std::chrono::microseconds(us);
      if (!sleep_until(next)) break;
    }
    finish("end_turn");
  }

  // ---- turn helpers -----------------------------------------------------

  void send_session_update(const std::string& session_id, json update) {
    send({{"jsonrpc", "2.0"},
          {"method", "session/update"},
          {"params", {{"sessionId", session_id}, {"update", std::move(update)}}}});
  }

  void send_update(json update) { send_session_update(turn_->session_id, std::move(update)); }

  void send_chunk(const std::string& text) {
    turn_->reply += text;
    send_update({{"sessionUpdate", "agent_message_chunk"}, {"content", {{"type", "text"}, {"text", text}}}});
  }

  // The history is recorded (and written) before the answer goes out, so it is current once seen.
  void finish(const std::string& stop_reason, json usage = nullptr) {
    record_turn();
    json result = {{"stopReason", stop_reason}};
    if (!usage.is_null()) result["usage"] = std::move(usage);
    respond(turn_->request_id, std::move(result));
    turn_->answered = true;
  }

  // `usage <in> <out> [cost]`: a usage_update (context tokens so far, the
  // session's cumulative cost when one is given), a chunk, then
  // PromptResponse.usage {totalTokens, inputTokens, outputTokens}.
  void cmd_usage(const std::string& args) {
    auto [in_text, rest] = split_word(args);
    auto [out_text, cost_text] = split_word(trim(rest));
    const long long in = parse_int(in_text).value_or(0);
    const long long out = parse_int(trim(out_text)).value_or(0);
    Session* s = nullptr;
    if (auto it = sessions_.find(turn_->session_id); it != sessions_.end()) s = &it->second;
    json update = {{"sessionUpdate", "usage_update"}, {"used", 0}, {"size", 200000}};
    if (s) {
      s->context += in + out;
      update["used"] = s->context;
      if (!trim(cost_text).empty()) {
        s->cost += std::strtod(trim(cost_text).c_str(), nullptr);
        update["cost"] = {{"amount", s->cost}, {"currency", "USD"}};
      }
    }
    send_update(update);
    send_chunk("usage " + std::to_string(in) + " " + std::to_string(out));
    finish("end_turn", {{"totalTokens", in + out}, {"inputTokens", in}, {"outputTokens", out}});
  }

  bool cancelled() const { return turn_ && turn_->cancel_requested && !turn_->ignore_cancel; }

  // Keeps serving stdin until the deadline; false as soon as an honoured cancel arrives.
  bool sleep_until(Clock::time_point deadline) {
    for (;;) {
      if (cancelled()) return false;
      auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (remaining <= 0) return true;
      pump(static_cast<int>(remaining));
    }
  }

  // Sends "tick <i>" every kTickMs for total_ms; false if cancelled on the way.
  bool tick_for(long long total_ms) {
    const auto start = Clock::now();
    for (long long i = 1; i * kTickMs <= total_ms; ++i) {
      if (!sleep_until(start + std::chrono::milliseconds(i * kTickMs))) return false;
      send_chunk("tick " + std::to_string(i));
    }
    return sleep_until(start + std::chrono::milliseconds(total_ms));
  }

  // Waits for the answer to one of our requests; nullopt if an honoured cancel came first.
  std::optional<json> await_response(long long id, bool honour_cancel) {
    for (;;) {
      if (auto it = responses_.find(id); it != responses_.end()) {
        json response = std::move(it->second);
        responses_.erase(it);
        return response;
      }
      if (honour_cancel && cancelled()) {
        awaited_.erase(id);  // a late answer will be logged and dropped
        return std::nullopt;
      }
      pump(-1);
    }
  }

  void run_turn(const json& request) {
    const json& id = request["id"];
    const json params = request.value("params", json::object());
    if (!params.is_object() || !params.contains("sessionId") || !params["sessionId"].is_string() ||
        !params.contains("prompt") || !params["prompt"].is_array()) {
      respond_error(id, kInvalidParams, "Invalid params: sessionId (string) and prompt (array) are required");
      return;
    }
    const std::string session_id = params["sessionId"];
    if (!sessions_.count(session_id)) {
      respond_error(id, kInvalidParams, "Unknown session: " + session_id);
      return;
    }
    std::string text;
    for (const json& block : params["prompt"]) {
      if (block.is_object() && block.value("type", json()) == "text" && block.contains("text") &&
          block["text"].is_string()) {
        text = trim(block["text"].get<std::string>());
        break;
      }
    }
    // A prompt packaged by a template: the command is the line after its
    // "[TASK]" header; "show-prompt" answers with the whole packaged text.
    const std::string packaged = text;
    if (auto at = text.find("[TASK]\n"); at != std::string::npos) {
      std::string rest = text.substr(at + 7);
      text = trim(rest.substr(0, rest.find('\n')));
    }
    if (text == "show-prompt") text = "echo " + packaged;
    Turn turn;
    turn.request_id = id;
    turn.session_id = session_id;
    turn.prompt = text;
    turn_ = &turn;
    log_err("prompt for " + session_id + ": " + text.substr(0, 200));
    try {
      execute(text);
      if (!turn.answered) finish("end_turn");  // safety net; every command answers itself
    } catch (const std::exception& e) {
      log_err(std::string("command failed: ") + e.what());
      if (!turn.answered) {
        record_turn();
        respond_error(id, kInternalError, std::string("fake-agent: ") + e.what());
      }
    }
    update_recorded_reply();
    turn_ = nullptr;
  }

  // ---- commands ---------------------------------------------------------

  // Writes the file's bytes to stdout in one write, with "$SESSION" and
  // "$ID" replaced by the session id and the prompt's request id as JSON
  // values. The script answers the prompt itself (or the turn hangs).
  void cmd_script(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read script " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    auto replace_all = [&text](const std::string& from, const std::string& to) {
      for (auto pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
        text.replace(pos, from.size(), to);
      }
    };
    replace_all("$SESSION", dump(turn_->session_id));
    replace_all("$ID", dump(turn_->request_id));
    write_all(1, text);
    turn_->answered = true;
  }

  void execute(const std::string& text) {
    auto [command, raw_args] = split_word(text);
    const std::string args = trim(raw_args);
    if (command == "echo") {
      send_chunk(raw_args);
      finish("end_turn");
    } else if (command == "stream") {
      long long n = int_arg(args, 1);
      for (long long i = 1; i <= n; ++i) send_chunk("chunk " + std::to_string(i));
      finish("end_turn");
    } else if (command == "usage") {
      cmd_usage(args);
    } else if (command == "flood") {
      cmd_flood(args);
    } else if (command == "paced") {
      cmd_paced(args);
    } else if (command == "permission") {
      cmd_permission();
    } else if (command == "tool") {
      cmd_tool(args);
    } else if (command == "slow") {
      finish(tick_for(int_arg(args, 1000)) ? "end_turn" : "cancelled");
    } else if (command == "timed") {
      // Wall-clock start and end (ms since the epoch), so tests can compare
      // turns of different adapter processes.
      auto wall_ms = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
      };
      long long started = wall_ms();
      bool completed = sleep_until(Clock::now() + std::chrono::milliseconds(int_arg(args, 100)));
      if (!completed) {
        finish("cancelled");
      } else {
        send_chunk("start " + std::to_string(started) + " end " + std::to_string(wall_ms()));
        finish("end_turn");
      }
    } else if (command == "ignore-cancel") {
      turn_->ignore_cancel = true;
      tick_for(int_arg(args, 1000));
      finish("end_turn");
    } else if (command == "ignore-sigterm") {
      cmd_ignore_sigterm();
    } else if (command == "alloc") {
      // Takes and touches N MiB, a page at a time (a memory-hungry tool).
      const long long mib = int_arg(args, 64);
      std::vector<char*> blocks;
      for (long long i = 0; i < mib; ++i) {
        char* block = static_cast<char*>(std::malloc(1 << 20));
        if (!block) break;
        for (size_t at = 0; at < (1u << 20); at += 4096) block[at] = 1;
        blocks.push_back(block);
      }
      send_chunk("allocated " + std::to_string(blocks.size()) + " MiB");
      for (char* block : blocks) std::free(block);
      finish("end_turn");
    } else if (command == "crash") {
      send_chunk("about to crash");
      write_all(2, "crashing\n");
      _exit(static_cast<int>(int_arg(args, 3)));
    } else if (command == "crash-signal") {
      cmd_crash_signal();
    } else if (command == "half-line") {
      write_all(1, R"({"jsonrpc":"2.0","method":"session/up)");
      _exit(0);
    } else if (command == "script") {
      cmd_script(args);
    } else if (command == "garbage") {
      send_raw_line("this is not json");
      send_chunk("after garbage");
      finish("end_turn");
    } else if (command == "call") {
      cmd_call(args);
    } else if (command == "ask") {
      auto [count, pause] = split_word(args);
      cmd_ask(int_arg(count, 1), int_arg(pause, 0));
    } else if (command == "stderr") {
      long long n = int_arg(args, 1);
      for (long long i = 1; i <= n; ++i) write_all(2, "stderr line " + std::to_string(i) + "\n");
      send_chunk("done");
      finish("end_turn");
    } else if (command == "env") {
      const char* value = std::getenv(args.c_str());
      send_chunk(value ? value : "<unset>");
      finish("end_turn");
    } else if (command == "cwd") {
      char buffer[4096];
      send_chunk(::getcwd(buffer, sizeof buffer) ? buffer : std::string("<getcwd failed>"));
      finish("end_turn");
    } else if (command == "write") {
      auto [path, content] = split_word(args);
      cmd_write(path, content);
    } else if (command == "connect") {
      auto [host, port] = split_word(args);
      cmd_connect(host, trim(port));
    } else if (command == "pid") {
      send_chunk("pid " + std::to_string(::getpid()) + " ppid " + std::to_string(::getppid()));
      finish("end_turn");
    } else if (command == "grandchild" || command == "grandchild-detached") {
      cmd_grandchild(command == "grandchild-detached");
    } else if (command == "close-stdout") {
      cmd_close_stdout(args.empty() ? -1 : int_arg(args, 0));
    } else if (command == "kill-guard") {
      cmd_kill_guard();
    } else if (command == "client-caps") {
      send_chunk(dump(client_capabilities_));
      finish("end_turn");
    } else if (command == "big") {
      send_chunk(std::string(static_cast<size_t>(std::max(0LL, int_arg(args, 0))), 'x'));
      finish("end_turn");
    } else if (command == "bad-utf8") {
      send_raw_line(R"({"jsonrpc":"2.0","method":"session/update","params":{"sessionId":)" +
                    dump(turn_->session_id) +
                    R"(,"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"ok )"
                    "\xff\xfe"
                    R"( end"}}}})");
      turn_->reply += "ok \xff\xfe end";
      finish("end_turn");
    } else if (command == "update-after") {
      send_chunk("before");
      finish("end_turn");
      sleep_until(Clock::now() + std::chrono::milliseconds(20));
      send_chunk("after the answer");
    } else if (command == "error") {
      auto [code_text, message] = split_word(args);
      std::optional<long long> code = parse_int(code_text);
      std::string text_message = code ? trim(message) : args;
      record_turn();
      respond_error(turn_->request_id, code ? static_cast<int>(*code) : kInternalError,
                    text_message.empty() ? "error" : text_message);
      turn_->answered = true;
    } else if (command == "history") {
      // This turn is recorded only when it completes, so every recorded turn is an earlier one.
      std::string joined;
      bool empty = true;
      if (auto it = sessions_.find(turn_->session_id); it != sessions_.end()) {
        for (const TurnRecord& record : it->second.turns) {
          if (!empty) joined += " | ";
          joined += record.prompt;
          empty = false;
        }
      }
      send_chunk("history: " + (empty ? std::string("(empty)") : joined));
      finish("end_turn");
    } else if (command == "model") {
      send_chunk("model " + sessions_[turn_->session_id].model);
      finish("end_turn");
    } else if (command == "stop") {
      finish(args.empty() ? "end_turn" : args);
    } else {
      send_chunk("unknown command: " + text);
      finish("end_turn");
    }
  }

  // "write <path> <text>": what a tool that edits a file does; the chunk
  // says whether the file system let it (sandbox tests).
  void cmd_write(const std::string& path, const std::string& content) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) err = errno;
      if (::close(fd) != 0 && err == 0) err = errno;
    }
    send_chunk(err == 0 ? "wrote " + path : "write failed: " + std::string(std::strerror(err)));
    finish("end_turn");
  }

  // "connect <host> <port>": one TCP connection to an IPv4 address, closed
  // at once; the chunk says whether the network let it (sandbox tests).
  void cmd_connect(const std::string& host, const std::string& port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(int_arg(port, 0)));
    int err = ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1 ? 0 : EINVAL;
    if (err == 0) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        err = errno;
      } else {
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) err = errno;
        ::close(fd);
      }
    }
    send_chunk(err == 0 ? "connected" : "connect failed: " + std::string(std::strerror(err)));
    finish("end_turn");
  }

  void cmd_permission() {
    send_update({{"sessionUpdate", "tool_call"},
                 {"toolCallId", "call_1"},
                 {"title", "Write file"},
                 {"kind", "edit"},
                 {"status", "pending"}});
    json params = {{"sessionId", turn_->session_id},
                   {"toolCall", {{"toolCallId", "call_1"}}},
                   {"options",
                    {{{"optionId", "allow"}, {"name", "Allow once"}, {"kind", "allow_once"}},
                     {{"optionId", "reject"}, {"name", "Reject"}, {"kind", "reject_once"}}}}};
    long long id = send_request("session/request_permission", std::move(params));
    // Per ACP the client answers a pending permission request with "cancelled" after session/cancel,
    // so keep waiting for it even when a cancel arrives.
    json response = *await_response(id, false);
    if (response.contains("error")) {
      if (cancelled()) return finish("cancelled");
      const json& error = response["error"];
      send_chunk("permission: error " + dump(error.is_object() ? error.value("code", json()) : error));
      return finish("end_turn");
    }
    const json result = response.value("result", json());
    const json outcome = result.is_object() ? result.value("outcome", json()) : json();
    const json kind = outcome.is_object() ? outcome.value("outcome", json()) : json();
    if (kind == "cancelled") {
      send_chunk("permission: cancelled");
      return finish(cancelled() ? "cancelled" : "end_turn");
    }
    if (cancelled()) return finish("cancelled");
    if (kind == "selected") {
      const json option = outcome.value("optionId", json());
      const std::string option_id = option.is_string() ? option.get<std::string>() : dump(option);
      send_update({{"sessionUpdate", "tool_call_update"},
                   {"toolCallId", "call_1"},
                   {"status", option_id == "allow" ? "completed" : "failed"}});
      send_chunk("permission: selected " + option_id);
      return finish("end_turn");
    }
    send_chunk("permission: unexpected answer " + dump(result));
    finish("end_turn");
  }

  // `tool <kind> <rawInput JSON>`: a tool call announced by a tool_call
  // update (kind, title, rawInput, locations from rawInput.path), then a
  // permission request that names only its toolCallId.
  void cmd_tool(const std::string& args) {
    auto [kind, raw_text] = split_word(args);
    json raw = json::parse(trim(raw_text), nullptr, false);
    if (raw.is_discarded() || !raw.is_object()) raw = json::object();
    const std::string call_id = "call_" + std::to_string(++tool_calls_);
    json update = {{"sessionUpdate", "tool_call"}, {"toolCallId", call_id}, {"title", kind + " call"},
                   {"kind", kind},                 {"status", "pending"},   {"rawInput", raw}};
    if (raw.contains("path") && raw["path"].is_string()) update["locations"] = json::array({{{"path", raw["path"]}}});
    send_update(update);
    json params = {{"sessionId", turn_->session_id},
                   {"toolCall", {{"toolCallId", call_id}}},
                   {"options",
                    {{{"optionId", "allow"}, {"name", "Allow once"}, {"kind", "allow_once"}},
                     {{"optionId", "always"}, {"name", "Always allow"}, {"kind", "allow_always"}},
                     {{"optionId", "reject"}, {"name", "Reject"}, {"kind", "reject_once"}},
                     {{"optionId", "never"}, {"name", "Always reject"}, {"kind", "reject_always"}}}}};
    long long id = send_request("session/request_permission", std::move(params));
    json response = *await_response(id, false);
    if (response.contains("error")) {
      if (cancelled()) return finish("cancelled");
      send_chunk("permission: error " + dump(response["error"].is_object() ? response["error"].value("code", json()) : response["error"]));
      return finish("end_turn");
    }
    const json result = response.value("result", json());
    const json outcome = result.is_object() ? result.value("outcome", json()) : json();
    if (cancelled()) return finish("cancelled");
    if (outcome.is_object() && outcome.value("outcome", json()) == "selected") {
      const json option = outcome.value("optionId", json());
      const std::string option_id = option.is_string() ? option.get<std::string>() : dump(option);
      const bool ran = option_id == "allow" || option_id == "always";
      send_update({{"sessionUpdate", "tool_call_update"}, {"toolCallId", call_id}, {"status", ran ? "completed" : "failed"}});
      send_chunk("permission: selected " + option_id);
    } else {
      send_chunk("permission: cancelled");
    }
    finish("end_turn");
  }

  void cmd_ignore_sigterm() {
    turn_->ignore_cancel = true;
    ignore_eof_ = true;
    ::signal(SIGTERM, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    send_chunk("stubborn");
    for (;;) pump(-1);  // only SIGKILL ends this
  }

  void cmd_crash_signal() {
    send_chunk("about to crash");
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);  // no core files in the test directory
    ::signal(SIGSEGV, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::kill(::getpid(), SIGSEGV);
    _exit(128 + SIGSEGV);  // not reached
  }

  void cmd_call(const std::string& args) {
    auto [method, params_text] = split_word(args);
    if (method.empty()) {
      send_chunk("call: missing method");
      return finish("end_turn");
    }
    std::optional<json> params;
    if (!trim(params_text).empty()) {
      json parsed = json::parse(params_text, nullptr, false);
      if (parsed.is_discarded()) {
        send_chunk("call: invalid params JSON");
        return finish("end_turn");
      }
      if (parsed.is_object() && parsed.value("sessionId", json()) == "$SESSION")
        parsed["sessionId"] = turn_->session_id;
      params = std::move(parsed);
    }
    long long id = send_request(method, std::move(params));
    std::optional<json> response = await_response(id, true);
    if (!response) return finish("cancelled");
    if (response->contains("error"))
      send_chunk("error: " + dump((*response)["error"]));
    else
      send_chunk("result: " + dump(response->value("result", json())));
    finish("end_turn");
  }

  // "ask N MS": N fs/read_text_file requests at once, then MS milliseconds
  // without reading stdin (the answers pile up in the pipe and in harnessd),
  // then every answer, in order. Reports how many answers began with their
  // own question's path, and the total size of all contents.
  void cmd_ask(long long n, long long pause_ms) {
    std::vector<long long> ids;
    for (long long i = 0; i < n; ++i) {
      ids.push_back(send_request("fs/read_text_file",
                                 json{{"sessionId", turn_->session_id}, {"path", "/ask/" + std::to_string(i + 1)}}));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    long long bytes = 0, answered = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      json response = *await_response(ids[i], false);
      const json result = response.value("result", json::object());
      if (result.is_object() && result.contains("content") && result["content"].is_string()) {
        const std::string& content = result["content"].get_ref<const std::string&>();
        bytes += static_cast<long long>(content.size());
        // An answer counts when it is the one to its own question.
        if (content.rfind("/ask/" + std::to_string(i + 1) + " ", 0) == 0) ++answered;
      }
    }
    send_chunk("asked " + std::to_string(n) + " answered " + std::to_string(answered) + " bytes " +
               std::to_string(bytes));
    finish("end_turn");
  }

  void cmd_grandchild(bool detached) {
    pid_t child = ::fork();
    if (child < 0) {
      send_chunk(std::string("grandchild: fork failed: ") + std::strerror(errno));
      return finish("end_turn");
    }
    if (child == 0) {
      if (detached) ::setsid();
      // Keep the grandchild off the agent's pipes so it cannot hold them open.
      int null_fd = ::open("/dev/null", O_RDWR);
      if (null_fd >= 0) {
        ::dup2(null_fd, 0);
        ::dup2(null_fd, 1);
        ::dup2(null_fd, 2);
      }
      ::execlp("sleep", "sleep", "1000", static_cast<char*>(nullptr));
      _exit(127);
    }
    send_chunk("grandchild " + std::to_string(child));
    // On cancel the grandchild is deliberately left alive: the daemon's containment must kill it.
    finish(tick_for(600000) ? "end_turn" : "cancelled");
  }

  // Closes stdout (harnessd reads EOF) and stays alive: forever when
  // `exit_after_ms` is negative, else it exits 0 after that many ms.
  [[noreturn]] void cmd_close_stdout(long long exit_after_ms) {
    write_all(2, "closing stdout\n");
    ::close(1);
    if (exit_after_ms >= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(exit_after_ms));
      _exit(0);
    }
    for (;;) ::pause();
  }

  // Starts a setsid'd, double-forked `sleep 1000` (an orphan in a session of
  // its own, adopted by the guard), reports its pid, then SIGKILLs its
  // parent: the guard. Only harnessd can then clean up.
  void cmd_kill_guard() {
    int fds[2];
    if (::pipe(fds) != 0) {
      send_chunk("kill-guard: pipe failed");
      return finish("end_turn");
    }
    pid_t middle = ::fork();
    if (middle == 0) {
      ::setsid();
      pid_t grandchild = ::fork();
      if (grandchild == 0) {
        ::close(fds[0]);
        ::close(fds[1]);  // or the agent would wait for its EOF forever
        int null_fd = ::open("/dev/null", O_RDWR);
        if (null_fd >= 0) {
          ::dup2(null_fd, 0);
          ::dup2(null_fd, 1);
          ::dup2(null_fd, 2);
        }
        ::execlp("sleep", "sleep", "1000", static_cast<char*>(nullptr));
        _exit(127);
      }
      std::string text = std::to_string(grandchild);
      ssize_t n = ::write(fds[1], text.data(), text.size());
      (void)n;
      _exit(0);
    }
    ::close(fds[1]);
    std::string text;
    char buf[32];
    ssize_t n;
    // SIGCHLD (the middle process exiting) interrupts the read.
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0) text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    ::waitpid(middle, nullptr, 0);  // unless the SIGCHLD handler reaped it already
    send_chunk("grandchild " + text);
    ::kill(::getppid(), SIGKILL);
    finish(tick_for(600000) ? "end_turn" : "cancelled");
  }

  Options options_;
  int log_fd_ = -1;
  int timing_fd_ = -1;
  std::string input_;
  bool stdin_closed_ = false;
  bool ignore_eof_ = false;
  int tool_calls_ = 0;  // the tool command's calls, for their ids
  json client_capabilities_ = json::object();
  std::map<std::string, Session> sessions_;
  long long next_session_ = 1;
  long long next_request_id_ = 0;
  std::set<long long> awaited_;
  std::map<long long, json> responses_;
  std::deque<json> pending_prompts_;
  Turn* turn_ = nullptr;
  bool authenticated_ = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  log_err(message);
  log_err(
      "usage: fake_agent [--exit-on-start CODE] [--no-init-reply] [--new-error] [--init-delay MS] [--banner] [--log-file PATH] [--timing-file PATH] [--state-dir DIR] [--resume] [--load] [--close] [--auth-required] [--auth-env VAR]");
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--exit-on-start") {
      std::string code = value();
      auto parsed = parse_int(code);
      if (!parsed) usage_error("invalid exit code: " + code);
      options.exit_on_start = static_cast<int>(*parsed);
    } else if (arg == "--no-init-reply") {
      options.no_init_reply = true;
    } else if (arg == "--new-error") {
      options.new_error = true;
    } else if (arg == "--init-delay") {
      std::string ms = value();
      auto parsed = parse_int(ms);
      if (!parsed) usage_error("invalid delay: " + ms);
      options.init_delay_ms = *parsed;
    } else if (arg == "--banner") {
      options.banner = true;
    } else if (arg == "--log-file") {
      options.log_file = value();
    } else if (arg == "--timing-file") {
      options.timing_file = value();
    } else if (arg == "--state-dir") {
      options.state_dir = value();
      if (options.state_dir.empty()) usage_error("empty value for --state-dir");
    } else if (arg == "--resume") {
      options.resume = true;
    } else if (arg == "--load") {
      options.load = true;
    } else if (arg == "--close") {
      options.close = true;
    } else if (arg == "--auth-required") {
      options.auth_required = true;
    } else if (arg == "--auth-env") {
      options.auth_env = value();
    } else if (arg == "--config-options") {
      options.config_options = true;
    } else {
      usage_error("unknown flag: " + arg);
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse_options(argc, argv);
  if (options.exit_on_start) {
    log_err("refusing to start");
    if (!options.log_file.empty()) {
      int fd = ::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        write_all(fd, "refusing to start\n");
        ::close(fd);
      }
    }
    return *options.exit_on_start;
  }
  // Dispositions may be inherited as ignored; the tests rely on the defaults.
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
  struct sigaction child_action{};
  child_action.sa_handler = on_sigchld;
  sigemptyset(&child_action.sa_mask);
  ::sigaction(SIGCHLD, &child_action, nullptr);  // no SA_RESTART: wakes poll() to reap children
  if (options.banner) write_all(1, "fake-agent banner (not json)\n");
  FakeAgent agent(std::move(options));
  agent.run();
}
