// Remote profiles: ssh:// addresses, the ssh argv and its quoting, the
// launcher's placeholders, the profile keys and their refusals, and where a
// pool puts a new session.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "harnesses/profile.h"
#include "harnesses/remote.h"

using namespace harnessd::harnesses;
using harnessd::Expected;

namespace {

Expected<HarnessProfile> profile(const std::string& text) { return profile_from_toml("far", toml::parse(text), nullptr); }

std::string error_of(const std::string& text) {
  auto p = profile(text);
  return p ? "" : p.error().message;
}

}  // namespace

TEST_CASE("ssh:// addresses name a user, a host and a port, and nothing that ssh would read as an option") {
  auto t = parse_ssh_url("ssh://dev@w1.example.org:2222");
  REQUIRE(t);
  CHECK(t->user == "dev");
  CHECK(t->host == "w1.example.org");
  CHECK(t->port == 2222);
  t = parse_ssh_url("ssh://10.0.0.2");
  REQUIRE(t);
  CHECK(t->user.empty());
  CHECK(t->port == 0);
  t = parse_ssh_url("ssh://[fd00::2]:22/");
  REQUIRE(t);
  CHECK(t->host == "fd00::2");
  CHECK(t->port == 22);
  for (const char* bad : {"w1", "ssh://", "ssh://-oProxyCommand=x", "ssh://a b", "ssh://h:0", "ssh://h:70000",
                          "ssh://h:", "ssh://h/path", "ssh://fd00::2", "ssh://[fd00::2", "ssh://-l@h", "https://h"}) {
    INFO(bad);
    CHECK_FALSE(parse_ssh_url(bad));
  }
}

TEST_CASE("the remote command is quoted so that a POSIX shell gives back each argument as it was") {
  const std::vector<std::string> argv = {"harnessd", "--worker", "it's", "$HOME `id` ; rm -rf / \"x\"", "", "a\nb"};
  const std::string line = shell_quoted(argv);
  // sh -c 'printf "[%s]" "$@"' sh <line>: what the remote shell would run.
  const std::string script = "/bin/sh -c " + shell_quoted({"set -- " + line + "; printf '[%s]' \"$@\""});
  FILE* out = ::popen(script.c_str(), "r");
  REQUIRE(out);
  std::string got;
  char buf[256];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, out)) got.append(buf, n);
  REQUIRE(::pclose(out) == 0);
  std::string want;
  for (const auto& a : argv) want += "[" + a + "]";
  CHECK(got == want);
}

TEST_CASE("ssh runs in batch mode with keep-alives, the profile's options first, and the target after --") {
  auto p = profile(R"(remote = "ssh://dev@w1:2222"
ssh_options = ["-i", "/keys/hd"]
remote_harness = "claude"
keepalive_interval = 2
keepalive_count = 4)");
  REQUIRE(p);
  CHECK(p->kind == "acp");
  CHECK(p->command == std::vector<std::string>{"harnessd", "--worker", "--harness", "claude"});
  CHECK(ssh_argv(p->remote, p->remote.hosts.front()) ==
        std::vector<std::string>{"ssh", "-T", "-o", "BatchMode=yes", "-i", "/keys/hd", "-o", "ServerAliveInterval=2",
                                 "-o", "ServerAliveCountMax=4", "-o", "ConnectTimeout=8", "-p", "2222", "-l", "dev",
                                 "--", "w1", "'harnessd' '--worker' '--harness' 'claude'"});
  CHECK(host_label("ssh://dev@w1:2222") == "w1");
}

TEST_CASE("remote profile keys are checked, and what belongs to the worker is refused here") {
  CHECK(error_of(R"(remote = "w1")").find("is not an ssh://") != std::string::npos);
  CHECK(error_of(R"(remote = "ssh://w1"
hosts = ["ssh://w2"])") == "[harness.far]: give either remote or hosts, not both");
  CHECK(error_of(R"(hosts = [])") == "[harness.far].hosts must name at least one ssh:// host");
  CHECK(error_of(R"(hosts = ["ssh://w1", "ssh://w1"])") == "[harness.far].hosts names a host twice");
  CHECK(error_of(R"(capacity = 3)") == "[harness.far]: remote settings need remote = \"ssh://...\" or hosts = [...]");
  CHECK(error_of(R"(remote = "ssh://w1"
command = ["x"])") == "[harness.far].command belongs in the worker's profile (remote_harness) on the worker host");
  CHECK(error_of(R"(remote = "ssh://w1"
sandbox = "read-only")").find(".sandbox belongs in the worker's profile") != std::string::npos);
  CHECK(error_of(R"(remote = "ssh://w1"
warm = 1)") == "[harness.far]: warm adapters cannot be remote or launched; set warm = 0");
  CHECK(error_of(R"(remote = "ssh://w1"
launcher = ["docker", "run"])").find("put the launcher in the worker's profile") != std::string::npos);
  CHECK(error_of(R"(remote = "ssh://w1"
remote_cwd = "/srv/{workspace}")").find("unknown placeholder {workspace}") != std::string::npos);
  CHECK(error_of(R"(remote = "ssh://w1"
keepalive_interval = 0)") == "[harness.far].keepalive_interval must be a whole number from 1 to 3600");
  CHECK(error_of(R"(remote = "ssh://w1"
forward_client_fs = "yes")") == "[harness.far].forward_client_fs must be true or false");
  auto p = profile(R"(hosts = ["ssh://w1", "ssh://w2"]
capacity = 3
remote_cwd = "/srv/{harness}{cwd}"
forward_client_fs = true)");
  REQUIRE(p);
  CHECK(p->remote.capacity == 3);
  CHECK(p->remote.forward_client_fs);
  CHECK(*expand(p->remote.cwd, {"/home/a/x", "sess_1", "far"}) == "/srv/far/home/a/x");
}

TEST_CASE("a launcher is an argv prefix whose placeholders are filled per session, JSON passing as it is") {
  auto p = profile_from_toml("boxed", toml::parse(R"(command = ["agent", "--acp"]
launcher = ["kubectl", "run", "-i", "hd-{session_slug}", "--overrides={\"spec\":{}}", "-v", "{cwd}:{cwd}", "--"])"),
                             nullptr);
  REQUIRE(p);
  CHECK(launched_argv(p->launcher, {"/w", "sess_06AB", "boxed"}, {"agent", "--acp"}) ==
        std::vector<std::string>{"kubectl", "run", "-i", "hd-sess-06ab", "--overrides={\"spec\":{}}", "-v", "/w:/w",
                                 "--", "agent", "--acp"});
  CHECK_FALSE(profile_from_toml("boxed", toml::parse(R"(command = ["agent"]
launcher = ["docker", "{image}"])"),
                                nullptr));
  CHECK_FALSE(profile_from_toml("boxed", toml::parse(R"(command = ["agent"]
launcher = [])"),
                                nullptr));
}
