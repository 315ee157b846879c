// The TOML configuration: defaults, overrides, and errors that say where.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>

#include "worker/config.h"

using namespace harnessd::worker;

TEST_CASE("an empty file gives the built-in defaults") {
  auto c = parse_config("", "empty.toml");
  REQUIRE(c);
  CHECK(c->daemon.default_harness == "claude");
  CHECK(c->daemon.cancel_grace == std::chrono::milliseconds(2500));
  CHECK(c->daemon.kill_grace == std::chrono::milliseconds(1500));
  CHECK(c->daemon.max_line_bytes == 64u << 20);
  CHECK(c->harnesses.count("opencode") == 1);
}

TEST_CASE("daemon settings and harness tables are read") {
  auto c = parse_config(R"(
[daemon]
default_harness = "mine"
cancel_grace = 0.25
kill_grace = 1
max_line_bytes = 4096

[harness.mine]
command = ["my-agent", "--stdio"]
)",
                        "c.toml");
  REQUIRE(c);
  CHECK(c->daemon.default_harness == "mine");
  CHECK(c->daemon.cancel_grace == std::chrono::milliseconds(250));
  CHECK(c->daemon.kill_grace == std::chrono::milliseconds(1000));
  CHECK(c->daemon.max_line_bytes == 4096);
  CHECK(c->harnesses.at("mine").command[0] == "my-agent");
}

TEST_CASE("configuration errors name the file, the place and the key") {
  auto syntax = parse_config("[daemon\n", "bad.toml");
  REQUIRE_FALSE(syntax);
  CHECK(syntax.error().message.rfind("bad.toml:1:", 0) == 0);

  auto unknown = parse_config("[daemon]\ncancel_grce = 1\n", "c.toml");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message == "c.toml: [daemon]: unknown key 'cancel_grce'");

  auto negative = parse_config("[daemon]\nkill_grace = -1\n", "c.toml");
  REQUIRE_FALSE(negative);
  CHECK(negative.error().message == "c.toml: [daemon].kill_grace must be a number of seconds (e.g. 2.5)");

  auto default_missing = parse_config("[daemon]\ndefault_harness = \"nope\"\n", "c.toml");
  REQUIRE_FALSE(default_missing);
  CHECK(default_missing.error().message == "c.toml: [daemon].default_harness names unknown harness 'nope'");

  auto top = parse_config("deamon = 1\n", "c.toml");
  REQUIRE_FALSE(top);
  CHECK(top.error().message == "c.toml: unknown table or key 'deamon'");
}

TEST_CASE("a missing explicit config file is an error but a missing default is not") {
  CHECK_FALSE(load_config(std::string("/no/such/config.toml")));
  setenv("XDG_CONFIG_HOME", "/no/such/dir", 1);
  CHECK(load_config(std::nullopt));
}

TEST_CASE("the queues' high- and low-water marks are read and checked") {
  auto defaults = parse_config("", "c.toml");
  REQUIRE(defaults);
  CHECK(defaults->daemon.queue_high_water == 8u << 20);
  CHECK(defaults->daemon.queue_low_water == 2u << 20);

  auto set = parse_config("[daemon]\nqueue_high_water = 1048576\nqueue_low_water = 4096\n", "c.toml");
  REQUIRE(set);
  CHECK(set->daemon.queue_high_water == 1048576);
  CHECK(set->daemon.queue_low_water == 4096);

  auto inverted = parse_config("[daemon]\nqueue_high_water = 4096\nqueue_low_water = 8192\n", "c.toml");
  REQUIRE_FALSE(inverted);
  CHECK(inverted.error().message == "c.toml: [daemon].queue_low_water must not be above queue_high_water");
}

TEST_CASE("retention is read, as an inline or a sub-table, and bad bounds are refused") {
  auto defaults = parse_config("", "c.toml");
  REQUIRE(defaults);
  CHECK(defaults->daemon.retention.keep_days == 30);
  CHECK(defaults->daemon.retention.keep_runs == 100000);

  auto inline_table = parse_config("[daemon]\nretention = { keep_days = 7, keep_runs = 0 }\n", "c.toml");
  REQUIRE(inline_table);
  CHECK(inline_table->daemon.retention.keep_days == 7);
  CHECK(inline_table->daemon.retention.keep_runs == 0);
  auto sub_table = parse_config("[daemon.retention]\nkeep_days = 0\nkeep_runs = 0\n", "c.toml");
  REQUIRE(sub_table);
  CHECK_FALSE(sub_table->daemon.retention.bounded());

  for (const char* bad : {"retention = 3", "retention = { keep_days = -1 }", "retention = { keep_runs = \"many\" }",
                          "retention = { keep_weeks = 2 }"}) {
    auto refused = parse_config(std::string("[daemon]\n") + bad + "\n", "c.toml");
    INFO(bad);
    REQUIRE_FALSE(refused);
    CHECK_THAT(refused.error().message, Catch::Contains("[daemon].retention"));
  }
}

TEST_CASE("a new profile of a bridge kind without command runs that kind's usual program") {
  auto c = parse_config(R"(
[harness.cc]
kind = "claude-code"
env = { ANTHROPIC_MODEL = "fast" }

[harness.os]
kind = "openspace"
max_iterations = 3

[harness.oc]
kind = "opencode-run"
model = "m"
)",
                        "/srv/conf/c.toml");
  REQUIRE(c);
  const auto& cc = c->harnesses.at("cc");
  CHECK(cc.name == "cc");
  CHECK(cc.command == std::vector<std::string>{"claude"});
  CHECK(cc.env.at("ANTHROPIC_MODEL") == "fast");
  CHECK(std::count(cc.env_passthrough.begin(), cc.env_passthrough.end(), "ANTHROPIC_API_KEY") == 1);
  const auto& os = c->harnesses.at("os");
  CHECK(os.command == std::vector<std::string>{"openspace-worker"});
  CHECK(os.mode == "oneshot");
  CHECK(os.template_name == "openspace");
  CHECK(os.bridge_options == std::vector<std::string>{"--max-iterations", "3"});
  CHECK(c->harnesses.at("oc").command == std::vector<std::string>{"opencode"});
  // exec has no usual program.
  auto exec = parse_config("[harness.x]\nkind = \"exec\"\n", "c.toml");
  REQUIRE_FALSE(exec);
  CHECK(exec.error().message.find("[harness.x].command must be a non-empty array") != std::string::npos);
}

TEST_CASE("a relative command path is the file beside the config file, a bare name stays for PATH") {
  auto c = parse_config(R"(
[harness.a]
command = ["./agent.sh", "--x"]
[harness.b]
command = ["bin/agent"]
[harness.c]
command = ["agent"]
[harness.d]
command = ["/opt/agent"]
)",
                        "/srv/conf/c.toml");
  REQUIRE(c);
  CHECK(c->harnesses.at("a").command == std::vector<std::string>{"/srv/conf/agent.sh", "--x"});
  CHECK(c->harnesses.at("b").command[0] == "/srv/conf/bin/agent");
  CHECK(c->harnesses.at("c").command[0] == "agent");
  CHECK(c->harnesses.at("d").command[0] == "/opt/agent");
  // A config file named relative to the working directory.
  auto r = parse_config("[harness.a]\ncommand = [\"./agent.sh\"]\n", "conf/c.toml");
  REQUIRE(r);
  char cwd[4096];
  REQUIRE(::getcwd(cwd, sizeof cwd));
  CHECK(r->harnesses.at("a").command[0] == std::string(cwd) + "/conf/agent.sh");
}
