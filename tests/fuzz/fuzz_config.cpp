// fuzz_config: the TOML config loader, and what the daemon derives from a
// config it accepted (adapter argv and environment, capabilities).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "harnesses/profile.h"
#include "worker/agent.h"
#include "worker/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  using namespace harnessd;
  std::string text(reinterpret_cast<const char*>(bytes), size);
  auto config = worker::parse_config(text, "/etc/harnessd-fuzz/config.toml");
  if (!config) {
    if (config.error().message.empty()) fuzz::fail("a config was refused without a message");
    return 0;
  }
  if (!config->harnesses.count(config->daemon.default_harness)) {
    fuzz::fail("the config was accepted with an unknown default harness");
  }
  if (config->daemon.max_line_bytes == 0) fuzz::fail("the config was accepted with max_line_bytes 0");
  static const std::vector<std::string> parent = {"PATH=/usr/bin", "HOME=/root", "SECRET=1"};
  for (const auto& [name, profile] : config->harnesses) {
    (void)harnesses::known_config_options(profile);
    auto argv = harnesses::adapter_argv(profile, "/usr/bin/harnessd");
    if (argv.empty()) fuzz::fail("harness '" + name + "' has an empty argv");
    (void)harnesses::adapter_environment(profile, parent);
  }
  (void)worker::agent_capabilities(*config).dump();
  return 0;
}
