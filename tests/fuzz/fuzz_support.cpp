// The shared pieces of the fuzz targets (see fuzz_support.h).
#include "fuzz_support.h"

#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "acp/connection.h"
#include "acp/loop.h"
#include "schema/json_parse.h"
#include "worker/config.h"
#include "worker/engine.h"

namespace harnessd::fuzz {

using nlohmann::json;

void quiet_stdout() {
  int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 1);
    ::close(null);
  }
}

void fail(const std::string& what) {
  // Through the sanitizers' report channel: scripts/fuzz.sh runs with
  // -close_fd_mask=3, which sends the target's own stderr to /dev/null.
  __sanitizer_report_error_summary(("fuzz check failed: " + what).c_str());
  std::abort();
}

namespace {

struct Scratch {
  std::string dir;
  Scratch() {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    std::string templ = base + "/harnessd-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) fail("cannot create a scratch directory under " + base);
    dir = templ;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// A config with one ACP harness whose program does not exist: the first
// session/new of it, and every prompt, fail at once.
worker::Config fuzz_config() {
  static const char* kToml = R"(
[daemon]
default_harness = "fake"
cancel_grace = 0.05
kill_grace = 0.05
start_timeout = 1

[harness.fake]
kind = "acp"
command = ["harnessd-fuzz-no-such-adapter"]
)";
  auto config = worker::parse_config(kToml, "/nonexistent/harnessd-fuzz/config.toml");
  if (!config) fail("the fuzz config does not parse: " + config.error().message);
  return *config;
}

}  // namespace

const std::string& scratch_dir() {
  static Scratch scratch;
  return scratch.dir;
}

void write_file(const std::string& path, std::string_view bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot write " + path);
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n <= 0) fail("cannot write " + path);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  ::close(fd);
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    auto nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

void reset_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create " + dir + ": " + ec.message());
}

std::vector<std::string> run_engine(const std::vector<std::string_view>& lines, const std::string& state_dir) {
  static bool once = [] {
    // Nothing on PATH, so built-in harnesses cannot start their programs.
    ::setenv("PATH", "/nonexistent/harnessd-fuzz-path", 1);
    return true;
  }();
  (void)once;
  static const worker::Config config = fuzz_config();
  static acp::Loop loop;

  std::vector<std::string> out;
  {
    acp::ConnectionOptions options;
    options.peer = "host";
    options.require_initialize = true;
    acp::Connection host(options, [&out](std::string line) {
      if (!line.empty() && line.back() == '\n') line.pop_back();
      out.push_back(std::move(line));
    });
    worker::EngineOptions engine_options;
    engine_options.config = config;
    engine_options.self_exe = "/nonexistent/harnessd-fuzz/harnessd";
    engine_options.state_dir = state_dir;
    auto engine = std::make_unique<worker::Engine>(loop, host, std::move(engine_options));
    for (std::string_view line : lines) {
      host.receive_line(line);
      loop.run_once_nowait();
    }
    bool done = false;
    engine->shutdown("end of input", [&] {
      done = true;
      loop.stop();
    });
    int rounds = 0;
    while (!done) {
      if (++rounds > 1000) fail("the engine's shutdown never finished");
      loop.run();
    }
    engine.reset();
    host.close();
  }
  loop.run_once_nowait();
  return out;
}

namespace {

// What the connection must do with one inbound line, judged from the line
// alone: answer it once with its id, or not with an id at all.
enum class Expect { kNoIdAnswer, kAnswerOnce, kEither };

Expect expect_for(std::string_view line, json& id) {
  auto parsed = schema::parse_json(line);
  if (!parsed) {
    // Too deep or out of range for the bounded parser: the answer carries
    // the id when harnessd could read it before the problem, which no
    // whole-line parser here can tell (nlohmann refuses 1e400 too). Such a
    // line may add at most one answer, under whatever id.
    if (parsed.error().kind == schema::JsonError::Kind::kSyntax ||
        parsed.error().kind == schema::JsonError::Kind::kNulByte) {
      return Expect::kNoIdAnswer;
    }
    json msg = json::parse(line, nullptr, false);
    if (msg.is_object() && msg.contains("id") && (msg["id"].is_string() || msg["id"].is_number_integer())) {
      id = msg["id"];
    }
    return Expect::kEither;
  }
  const json& msg = *parsed;
  if (!msg.is_object()) return Expect::kNoIdAnswer;
  auto it = msg.find("id");
  if (it == msg.end()) return Expect::kNoIdAnswer;
  const bool valid_id = it->is_string() || it->is_number_integer();
  if (!valid_id) return Expect::kNoIdAnswer;  // answered with id null, if at all
  id = *it;
  auto version = msg.find("jsonrpc");
  const bool v2 = version != msg.end() && version->is_string() && *version == "2.0";
  // A well-formed answer to one of our calls is never answered back.
  if (v2 && !msg.contains("method") && (msg.contains("result") || msg.contains("error"))) return Expect::kNoIdAnswer;
  return Expect::kAnswerOnce;
}

}  // namespace

void check_answers(const std::vector<std::string_view>& in, const std::vector<std::string>& out) {
  std::map<std::string, int> answers;  // id (dumped) -> answers seen
  for (const std::string& line : out) {
    if (line.find('\n') != std::string::npos) fail("an output line holds a newline: " + line);
    auto parsed = schema::parse_json(line);
    if (!parsed) fail("an output line is not JSON (" + parsed.error().message + "): " + line.substr(0, 300));
    const json& msg = *parsed;
    if (!msg.is_object() || msg.value("jsonrpc", json()) != "2.0") fail("an output line is not JSON-RPC 2.0: " + line);
    if (msg.contains("method")) continue;  // a request or notification to the host
    if (!msg.contains("id")) fail("an answer without an id: " + line);
    if (msg.contains("result") == msg.contains("error")) fail("an answer needs exactly one of result and error: " + line);
    if (!msg["id"].is_null()) ++answers[msg["id"].dump()];
  }
  std::map<std::string, int> must, may;
  int refused = 0;  // lines refused past their id: one answer each, id unknown
  for (std::string_view line : in) {
    json id;
    switch (expect_for(line, id)) {
      case Expect::kAnswerOnce: ++must[id.dump()]; break;
      case Expect::kEither:
        if (!id.is_null()) {
          ++may[id.dump()];
        } else {
          ++refused;
        }
        break;
      case Expect::kNoIdAnswer: break;
    }
  }
  int unexplained = 0;
  for (const auto& [id, n] : answers) {
    int lo = must.count(id) ? must[id] : 0;
    int hi = lo + (may.count(id) ? may[id] : 0);
    if (n < lo) fail("id " + id + " was answered " + std::to_string(n) + " times for " + std::to_string(lo) + " request(s)");
    unexplained += n > hi ? n - hi : 0;
  }
  if (unexplained > refused) {
    fail(std::to_string(unexplained) + " answer(s) match no request (" + std::to_string(refused) +
         " line(s) refused past their id)");
  }
  for (const auto& [id, n] : must) {
    if (!answers.count(id)) fail("request id " + id + " was never answered");
  }
}

}  // namespace harnessd::fuzz
