// Harness profiles: built-ins, TOML overrides, and the adapter environment.
#include <catch2/catch.hpp>

#include <algorithm>

#include "harnesses/profile.h"

using namespace harnessd::harnesses;

namespace {
bool has(const std::vector<std::string>& env, const std::string& entry) {
  return std::find(env.begin(), env.end(), entry) != env.end();
}
}  // namespace

TEST_CASE("built-in ACP profiles run the adapters by name, never through npx") {
  auto b = builtin_profiles();
  CHECK(b.at("claude").command == std::vector<std::string>{"claude-agent-acp"});
  CHECK(b.at("opencode").command == std::vector<std::string>{"opencode", "acp"});
  CHECK(b.at("gemini").command == std::vector<std::string>{"gemini", "--acp"});
  CHECK(b.at("codex").command == std::vector<std::string>{"codex-acp"});
  for (const auto& [name, p] : b) {
    CHECK(p.command[0] != "npx");
    CHECK((p.kind == "acp" || !bridge_of(p.kind).empty()));
  }
  CHECK(b.at("claude-code").kind == "claude-code");
  CHECK(b.at("opencode-run").kind == "opencode-run");
  CHECK(b.at("openspace").kind == "openspace");
  CHECK(b.at("exec").kind == "exec");
}

TEST_CASE("a TOML table defines or overrides a profile") {
  auto t = toml::parse(R"(command = ["/opt/agent", "--acp"]
env = { MODE = "test" }
env_passthrough = ["API_KEY"])");
  auto p = profile_from_toml("mine", t, nullptr);
  REQUIRE(p);
  CHECK(p->command == std::vector<std::string>{"/opt/agent", "--acp"});
  CHECK(p->env.at("MODE") == "test");
  CHECK(p->env_passthrough == std::vector<std::string>{"API_KEY"});

  auto base = builtin_profiles().at("claude");
  auto over = profile_from_toml("claude", toml::parse(R"(env = { X = "1" })"), &base);
  REQUIRE(over);
  CHECK(over->command == base.command);  // kept from the built-in
  CHECK(over->env.at("X") == "1");
}

TEST_CASE("bad profiles are rejected with the key named") {
  CHECK(profile_from_toml("a", toml::parse("command = \"agent --acp\""), nullptr).error().message ==
        "[harness.a].command must be an array of strings");
  CHECK(profile_from_toml("a", toml::parse("command = []"), nullptr).error().message ==
        "[harness.a].command must be a non-empty array (argv, no shell)");
  CHECK(profile_from_toml("a", toml::parse("command = [\"x\"]\nkind = \"pty\""), nullptr).error().message ==
        "[harness.a].kind 'pty' is not supported (supported: acp, claude-code, opencode-run, openspace, exec)");
  CHECK(profile_from_toml("a", toml::parse("command = [\"x\"]\ncomand = 1"), nullptr).error().message ==
        "[harness.a]: unknown key 'comand' for kind 'acp'");
  CHECK(profile_from_toml("a", toml::parse("kind = \"exec\"\ncommand = [\"x\"]\nmodel = \"m\""), nullptr)
            .error()
            .message == "[harness.a]: unknown key 'model' for kind 'exec'");
}

TEST_CASE("bridge profiles start harnessd's own adapter with their options") {
  auto p = profile_from_toml("script", toml::parse(R"(kind = "exec"
command = ["./run.sh", "{prompt_file}"]
input = "file"
output = "jsonl")"),
                             nullptr);
  REQUIRE(p);
  CHECK(adapter_argv(*p, "/bin/harnessd") ==
        std::vector<std::string>{"/bin/harnessd", "adapter", "exec", "--input", "file", "--output", "jsonl", "--",
                                 "./run.sh", "{prompt_file}"});
  auto b = builtin_profiles();
  CHECK(adapter_argv(b.at("claude-code"), "h") == std::vector<std::string>{"h", "adapter", "claude-code", "--", "claude"});
  CHECK(adapter_argv(b.at("opencode-run"), "h")[2] == "opencode");
  CHECK(adapter_argv(b.at("claude"), "h") == std::vector<std::string>{"claude-agent-acp"});
}

TEST_CASE("adapters get a safe environment plus what the profile names") {
  HarnessProfile p;
  p.env = {{"MODE", "x"}, {"HOME", "/override"}};
  p.env_passthrough = {"API_KEY"};
  std::vector<std::string> parent = {"PATH=/bin", "HOME=/home/u", "API_KEY=k", "SECRET_TOKEN=s", "LANG=C.UTF-8"};
  auto env = adapter_environment(p, parent);
  CHECK(has(env, "PATH=/bin"));
  CHECK(has(env, "LANG=C.UTF-8"));
  CHECK(has(env, "API_KEY=k"));
  CHECK(has(env, "MODE=x"));
  CHECK(has(env, "HOME=/override"));  // the profile's env wins
  CHECK_FALSE(has(env, "SECRET_TOKEN=s"));
}

TEST_CASE("limits, warm and auth_env are read and checked") {
  auto p = profile_from_toml("a", toml::parse(R"(command = ["x"]
limits = { memory = "2G", pids = 512, cpu = 1.5 }
warm = 2
auth_env = "X_API_KEY")"), nullptr);
  REQUIRE(p);
  CHECK(p->limits.memory == (2ull << 30));
  CHECK(p->limits.pids == 512u);
  CHECK(p->limits.cpu == 1.5);
  CHECK(p->limits.describe() == "memory 2G, pids 512, cpu 1.5");
  CHECK(p->warm == 2);
  CHECK(p->auth_env == "X_API_KEY");
  auto bad = [](const std::string& text) {
    auto r = profile_from_toml("a", toml::parse("command = [\"x\"]\n" + text), nullptr);
    return r ? std::string() : r.error().message;
  };
  CHECK(bad("limits = { memory = \"2X\" }").find("[harness.a].limits.memory must be a size of 4M or more") == 0);
  CHECK(bad("limits = { memory = \"1K\" }").find("limits.memory must be a size") != std::string::npos);
  CHECK(bad("limits = { swap = 1 }") == "[harness.a].limits: unknown key 'swap' (memory, pids, cpu)");
  CHECK(bad("limits = { cpu = 0 }").find("limits.cpu must be a number of CPUs") != std::string::npos);
  CHECK(bad("limits = \"2G\"").find("limits must be a table") != std::string::npos);
  CHECK(bad("warm = 65") == "[harness.a].warm must be a whole number from 0 to 64");
  CHECK(bad("auth_env = \"\"") == "[harness.a].auth_env must name an environment variable");
}

TEST_CASE("max_concurrent and the budgets are read and checked") {
  auto p = profile_from_toml("a", toml::parse(R"(command = ["x"]
max_concurrent = 2
max_runs_per_hour = 30
max_tokens_per_day = 5000000)"), nullptr);
  REQUIRE(p);
  CHECK(p->max_concurrent == 2);
  CHECK(p->max_runs_per_hour == 30);
  CHECK(p->max_tokens_per_day == 5000000);
  // Absent: no limit.
  auto none = profile_from_toml("b", toml::parse("command = [\"x\"]"), nullptr);
  REQUIRE(none);
  CHECK(none->max_concurrent == 0);
  CHECK(none->max_runs_per_hour == 0);
  CHECK(none->max_tokens_per_day == 0);
  auto bad = [](const std::string& text) {
    auto r = profile_from_toml("a", toml::parse("command = [\"x\"]\n" + text), nullptr);
    return r ? std::string() : r.error().message;
  };
  CHECK(bad("max_concurrent = -1") == "[harness.a].max_concurrent must be a whole number, 0 for no limit");
  CHECK(bad("max_runs_per_hour = \"10\"") == "[harness.a].max_runs_per_hour must be a whole number, 0 for no limit");
  CHECK(bad("max_tokens_per_day = 1.5") == "[harness.a].max_tokens_per_day must be a whole number, 0 for no limit");
}

TEST_CASE("the cgroup v1 hierarchies harnessd may use are read from mountinfo and /proc/self/cgroup") {
  const std::string mountinfo =
      "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
      "32 25 0:28 / /nonexistent/cpu rw,relatime - cgroup cgroup rw,cpu\n";
  const std::string self = "8:pids:/\n4:memory:/\n1:cpu:/\n0::/\n";
  auto s = harnessd::adapters::CgroupSupport::from(mountinfo, self);
  // The cpu hierarchy cannot be written (it does not exist): cpu limits are refused.
  auto cpu = s.refuse({std::nullopt, std::nullopt, 1.0});
  REQUIRE(cpu);
  CHECK(cpu->find("no cgroup controller for cpu") == 0);
  auto none = harnessd::adapters::CgroupSupport::from("", "0::/\n");
  CHECK(none.describe() == "none (cgroup v2 only, and harnessd creates cgroups in v1 hierarchies only); profiles with limits are refused");
  CHECK(harnessd::adapters::parse_bytes("512M") == (512ull << 20));
  CHECK_FALSE(harnessd::adapters::parse_bytes("-1"));
  CHECK_FALSE(harnessd::adapters::parse_bytes("1.5G"));
}
