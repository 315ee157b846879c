// Resource limits on adapter trees: enforced through a cgroup where the
// machine allows it, refused where it does not, and a kill by a limit
// reported as such.
#include <catch2/catch.hpp>

#include "adapters/cgroups.h"
#include "daemon_process.h"

using namespace harnessd::test;
using nlohmann::json;

TEST_CASE("a memory limit kills a memory-hungry adapter, and the run says it was the limit") {
  // This machine must offer a cgroup for memory: a missing mechanism fails here.
  REQUIRE_FALSE(harnessd::adapters::CgroupSupport::here().refuse({128u << 20, std::nullopt, std::nullopt}));
  Daemon d(fake_config({}, "limits = { memory = \"128M\", pids = 64, cpu = 1 }\n"));
  d.initialize();
  std::string sid = d.new_session("/tmp");
  // Within the limit: the turn ends as usual, inside its cgroups.
  std::vector<json> updates;
  CHECK(d.prompt(sid, "alloc 8", &updates)["result"]["stopReason"] == "end_turn");
  CHECK(message_text(updates) == "allocated 8 MiB");
  auto [agent, guard] = adapter_pids(d, sid);
  std::string cgroups = read_file("/proc/" + std::to_string(agent) + "/cgroup");
  CHECK(cgroups.find("harnessd-" + std::to_string(d.pid())) != std::string::npos);
  // Past it: killed by the kernel, and reported as the limit.
  json answer = d.prompt(sid, "alloc 512");
  INFO(answer.dump());
  REQUIRE(answer["error"]["code"] == -32011);
  CHECK(answer["error"]["data"]["reason"] == "memory limit");
  CHECK(answer["error"]["message"].get<std::string>().find("killed by its memory limit (memory 128M, pids 64, cpu 1)") !=
        std::string::npos);
  auto result = run_file(d.state_dir(), run_id_of(answer), "result.json");
  REQUIRE(result);
  CHECK(json::parse(*result)["error"]["data"]["reason"] == "memory limit");
  // The next prompt starts a new adapter, limited again.
  CHECK(d.prompt(sid, "echo again")["result"]["stopReason"] == "end_turn");
}

TEST_CASE("limits that this machine cannot enforce are refused, with the reason") {
  TempDir dir;
  std::string config = dir.write("config.toml", fake_config({}, "limits = { memory = \"64M\" }\n"));
  // HARNESSD_NO_CGROUPS makes harnessd see a machine without cgroups.
  Output check = run_harnessd_env({"HARNESSD_NO_CGROUPS=1"}, {"--config", config, "harnesses", "--check"});
  CHECK(check.code == 1);
  CHECK(check.out.find("limits: none (HARNESSD_NO_CGROUPS is set)") != std::string::npos);
  CHECK(check.out.find("limits: memory 64M: refused") != std::string::npos);
  Output enforced = run_harnessd({"--config", config, "harnesses", "--check"});
  CHECK(enforced.out.find("limits: memory 64M, enforced by cgroup v1") != std::string::npos);
}
