// Process containment when harnessd itself dies: kill -9 in the middle of a
// turn must not leave the adapter, its guard, or the adapter's children.
#include <catch2/catch.hpp>

#include <signal.h>

#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

TEST_CASE("kill -9 of harnessd mid-turn takes the whole adapter tree with it within a second") {
  for (const char* command : {"grandchild", "grandchild-detached"}) {
    Daemon d;
    d.initialize();
    std::string sid = d.new_session();
    std::vector<json> seen;
    d.prompt(sid, "pid", &seen);
    std::string text = message_text(seen);
    pid_t adapter = std::stoi(text.substr(4));
    pid_t guard = std::stoi(text.substr(text.find("ppid ") + 5));
    d.send_prompt(sid, command);
    auto first = d.recv();
    REQUIRE(first);
    std::string chunk = (*first)["params"]["update"]["content"]["text"];
    pid_t grandchild = std::stoi(chunk.substr(chunk.find(' ') + 1));
    REQUIRE(process_alive(grandchild));

    auto start = std::chrono::steady_clock::now();
    kill(d.pid(), SIGKILL);
    INFO(command);
    CHECK(d.wait_exit(2s) == 128 + SIGKILL);
    CHECK(eventually(
        [&] { return !process_alive(adapter) && !process_alive(guard) && !process_alive(grandchild); }, 1s));
    CHECK(std::chrono::steady_clock::now() - start < 1s);
  }
}
