// The TOML configuration: defaults, overrides, and errors that say where.
#include <catch2/catch.hpp>

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
