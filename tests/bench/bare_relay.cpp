// The floor for harnessd's CPU per prompt on this machine: a relay that
// does only what any ACP relay between one host and one adapter must do,
// and nothing harnessd adds (no store, no queue, no guard, no threads).
// It starts the default harness's adapter of a harnessd config, reads
// lines from both sides with one epoll loop, parses each line once with
// the JSON library harnessd uses, and writes it on unchanged, keeping the
// one rule of a session that costs wake-ups: one turn at a time (a
// prompt waits until the one before it is answered). The adapter's stderr
// is read, as harnessd must, and dropped. It takes harnessd's
// command line, so the benchmarks drive it like harnessd.
//
// Usage: bare_relay --config CONFIG [harnessd's other options, ignored]
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

namespace {

bool write_all(int fd, const std::string& data) {
  std::size_t at = 0;
  while (at < data.size()) {
    ssize_t n = ::write(fd, data.data() + at, data.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<std::size_t>(n);
  }
  return true;
}

// Prompts wait here while one is at the adapter.
struct Turns {
  std::vector<std::string> waiting;  // lines, oldest first
  std::size_t next = 0;
  nlohmann::json running;  // the id of the prompt at the adapter, or null
};

// One direction: bytes read from `from`, whole lines parsed and written to `to`.
struct Side {
  int from;
  int to;
  Turns& turns;
  bool from_host;
  std::string buffer;
  std::string out;

  // A line for `to`, unless it is a prompt that must wait for its turn;
  // an answer to the prompt at the adapter lets the next one go.
  void pass(const nlohmann::json& message, const char* line, std::size_t size, std::string& to_adapter) {
    if (from_host && message.contains("method") && message["method"] == "session/prompt") {
      if (!turns.running.is_null()) {
        turns.waiting.emplace_back(line, size);
        return;
      }
      turns.running = message["id"];
    }
    out.append(line, size);
    if (from_host || message.contains("method") || turns.running.is_null() || message["id"] != turns.running) return;
    turns.running = nullptr;
    if (turns.next == turns.waiting.size()) return;
    std::string next = std::move(turns.waiting[turns.next++]);
    if (turns.next == turns.waiting.size()) {
      turns.waiting.clear();
      turns.next = 0;
    }
    turns.running = nlohmann::json::parse(next)["id"];
    to_adapter += next;
  }

  // False once `from` is at its end or `to` is gone.
  bool pump(int adapter_in) {
    char chunk[65536];
    ssize_t n = ::read(from, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
    std::size_t start = 0;
    out.clear();
    std::string to_adapter;
    for (std::size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      const char* line = buffer.data() + start;
      // Parsed once, as a relay that checks what it passes on must.
      auto parsed = nlohmann::json::parse(line, line + (nl - start), nullptr, false);
      if (parsed.is_discarded()) continue;
      pass(parsed, line, nl - start + 1, to_adapter);
    }
    buffer.erase(0, start);
    if (!to_adapter.empty() && !write_all(adapter_in, to_adapter)) return false;
    return out.empty() || write_all(to, out);
  }
};

std::vector<std::string> adapter_command(const std::string& config) {
  auto table = toml::parse_file(config);
  std::string harness = table["daemon"]["default_harness"].value_or(std::string());
  std::vector<std::string> argv;
  if (auto* command = table["harness"][harness]["command"].as_array()) {
    for (auto& element : *command) argv.push_back(element.value_or(std::string()));
  }
  return argv;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--config") config = argv[i + 1];
  }
  std::vector<std::string> command;
  try {
    command = adapter_command(config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bare_relay: %s\n", e.what());
    return 2;
  }
  if (command.empty()) {
    std::fprintf(stderr, "bare_relay: no adapter command in %s\n", config.c_str());
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  int to_adapter[2], from_adapter[2], adapter_err[2];
  if (::pipe2(to_adapter, O_CLOEXEC) != 0 || ::pipe2(from_adapter, O_CLOEXEC) != 0 ||
      ::pipe2(adapter_err, O_CLOEXEC) != 0) {
    return 1;
  }
  pid_t child = ::fork();
  if (child < 0) return 1;
  if (child == 0) {
    ::dup2(to_adapter[0], 0);
    ::dup2(from_adapter[1], 1);
    ::dup2(adapter_err[1], 2);
    std::vector<char*> args;
    for (auto& a : command) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(to_adapter[0]);
  ::close(from_adapter[1]);
  ::close(adapter_err[1]);

  Turns turns;
  Side host{0, to_adapter[1], turns, true, {}, {}};
  Side adapter{from_adapter[0], 1, turns, false, {}, {}};
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &host;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, host.from, &ev);
  ev.data.ptr = &adapter;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, adapter.from, &ev);
  ev.data.ptr = nullptr;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, adapter_err[0], &ev);
  bool open = true;
  while (open) {
    epoll_event ready[3];
    int n = ::epoll_wait(ep, ready, 3, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    for (int i = 0; i < n && open; ++i) {
      if (auto* side = static_cast<Side*>(ready[i].data.ptr)) {
        open = side->pump(to_adapter[1]);
      } else {
        char dropped[65536];
        if (::read(adapter_err[0], dropped, sizeof dropped) == 0) ::epoll_ctl(ep, EPOLL_CTL_DEL, adapter_err[0], nullptr);
      }
    }
  }
  // The host left (or the adapter did): the adapter sees its stdin close.
  ::close(to_adapter[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return 0;
}
