// AdapterSession in process, against the fake agent: the handshake, the
// host's choices applied again, resuming an earlier adapter session, the
// start-up deadline, and what happens when the adapter dies.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "acp/loop.h"
#include "adapters/adapter_session.h"
#include "adapters/reaper.h"
#include "daemon_process.h"
#include "schema/rpc_error.h"

using namespace harnessd;
using namespace harnessd::adapters;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// One AdapterSession on its own loop, with what its hooks saw.
struct Fixture {
  acp::Loop loop;
  Reaper reaper{loop};
  std::vector<std::string> agent_args;
  json choices = json::object();
  std::chrono::milliseconds start_timeout = 10s;
  bool resumable = true;
  std::vector<std::pair<json, bool>> options_seen;  // (configOptions, announce)
  std::vector<json> created;
  std::vector<json> updates;
  std::unique_ptr<AdapterSession> session;

  Fixture() {
    // As in every program that serves ACP (serve_stdio): a write to an
    // adapter that is gone fails with EPIPE instead of killing us.
    signal(SIGPIPE, SIG_IGN);
    AdapterSession::Hooks hooks;
    hooks.spec = [this] {
      AdapterSessionSpec spec;
      spec.link.process.argv = {test::fake_agent_exe()};
      spec.link.process.argv.insert(spec.link.process.argv.end(), agent_args.begin(), agent_args.end());
      spec.link.process.cwd = "/tmp";
      spec.link.process.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
      spec.link.process.guard_exe = test::guard_exe();
      spec.link.label = "test";
      spec.command = {"fake_agent"};
      spec.install_hint = "build it";
      spec.cwd = "/tmp";
      spec.config_choices = choices;
      spec.start_timeout = start_timeout;
      return spec;
    };
    hooks.bind = [this](AdapterLink& link) {
      link.rpc().on_notification("session/update", [this](const json& params) { updates.push_back(params); });
    };
    hooks.options = [this](const json& answer, bool announce) {
      options_seen.emplace_back(answer.value("configOptions", json()), announce);
    };
    hooks.created = [this](const json& offered) { created.push_back(offered); };
    hooks.resumable = [this] { return resumable; };
    session = std::make_unique<AdapterSession>(loop, reaper, 2s, "test session", "fake", std::move(hooks));
  }

  ~Fixture() {
    session.reset();
    run_until([this] { return reaper.size() == 0; });
    loop.close();
  }

  // Runs the loop until `done` holds (checked every 2 ms); false after 10 s.
  bool run_until(const std::function<bool()>& done) {
    bool ok = false;
    acp::Timer poll(loop), limit(loop);
    std::function<void()> check = [&] {
      if (done()) {
        ok = true;
        loop.stop();
        return;
      }
      poll.start(2ms, check);
    };
    limit.start(10s, [&] { loop.stop(); });
    loop.post([&] { check(); });
    loop.run();
    return ok;
  }

  Expected<void, RpcError> ensure() {
    std::optional<Expected<void, RpcError>> result;
    session->ensure([&](Expected<void, RpcError> r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    return *result;
  }

  acp::Connection::CallResult prompt(const std::string& text) {
    std::optional<acp::Connection::CallResult> result;
    session->prompt(json::array({{{"type", "text"}, {"text", text}}}),
                    [&](acp::Connection::CallResult r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    return *result;
  }
};

std::string model_of(const json& options) {
  for (const auto& o : options) {
    if (o.value("id", "") == "model") return o.value("currentValue", "");
  }
  return "";
}

}  // namespace

TEST_CASE("adapter session: initialize and session/new, then a prompt answered") {
  Fixture f;
  auto ready = f.ensure();
  REQUIRE(ready);
  CHECK(f.session->ready());
  CHECK(f.session->pid() > 0);
  CHECK(f.session->id().rfind("fake-", 0) == 0);
  REQUIRE(f.created.size() == 1);
  CHECK(f.created[0] == json::array());
  CHECK(f.session->restore_outcome().is_null());

  // A second caller is answered at once, by the same adapter.
  int pid = f.session->pid();
  bool second = false;
  f.session->ensure([&](Expected<void, RpcError> r) { second = static_cast<bool>(r); });
  CHECK(second);
  CHECK(f.session->pid() == pid);

  auto answer = f.prompt("echo hello");
  REQUIRE(answer);
  CHECK((*answer)["stopReason"] == "end_turn");
  CHECK_FALSE(f.session->prompting());
  REQUIRE(f.updates.size() == 1);
  CHECK(f.updates[0]["update"]["content"]["text"] == "hello");
  CHECK(f.updates[0]["sessionId"] == f.session->id());
}

TEST_CASE("adapter session: the host's choices are applied again to a new adapter session") {
  Fixture f;
  f.agent_args = {"--config-options"};
  f.choices = {{"model", "fake-large"}};
  REQUIRE(f.ensure());
  // session/new's list is not final while the choice is being applied.
  REQUIRE(f.created.size() == 1);
  CHECK(model_of(f.created[0]) == "fake-small");
  REQUIRE(f.run_until([&] { return f.options_seen.size() == 2; }));
  CHECK_FALSE(f.options_seen[0].second);
  CHECK(model_of(f.options_seen[1].first) == "fake-large");
  CHECK(f.options_seen[1].second);
  auto answer = f.prompt("model");
  REQUIRE(answer);
  CHECK(f.updates.back()["update"]["content"]["text"] == "model fake-large");

  // A choice made now reaches the hook before the caller.
  std::optional<acp::Connection::CallResult> set;
  f.session->set_config_option("model", "fake-small", [&](acp::Connection::CallResult r) {
    CHECK(f.options_seen.size() == 3);
    set = std::move(r);
  });
  REQUIRE(f.run_until([&] { return set.has_value(); }));
  REQUIRE(*set);
  CHECK(model_of(f.options_seen[2].first) == "fake-small");
}

TEST_CASE("adapter session: a retired adapter's session is resumed by the next adapter") {
  test::TempDir state;
  Fixture f;
  f.agent_args = {"--resume", "--state-dir", state.path()};
  REQUIRE(f.ensure());
  const std::string first = f.session->id();
  const int first_pid = f.session->pid();
  REQUIRE(f.prompt("echo one"));
  f.session->retire();
  CHECK_FALSE(f.session->started());
  CHECK(f.session->resume_id() == first);

  REQUIRE(f.ensure());
  CHECK(f.session->pid() != first_pid);
  CHECK(f.session->id() == first);
  CHECK(f.session->resume_id().empty());
  CHECK(f.session->restore_outcome() ==
        json({{"restored", true}, {"method", "session/resume"}, {"adapterSessionId", first}}));
  CHECK(f.created.size() == 1);  // resumed, not created
  f.updates.clear();
  REQUIRE(f.prompt("history"));
  CHECK(f.updates.back()["update"]["content"]["text"] == "history: echo one");
}

TEST_CASE("adapter session: no resume without the capability, and none when not resumable") {
  Fixture f;
  f.session->set_resume_id("fake-from-before");
  REQUIRE(f.ensure());
  CHECK(f.session->id() != "fake-from-before");
  CHECK(f.session->restore_outcome()["restored"] == false);
  CHECK(f.session->restore_outcome()["reason"].get<std::string>().find("neither session/resume nor session/load") !=
        std::string::npos);
  CHECK(f.created.size() == 1);

  f.resumable = false;
  f.session->retire();
  CHECK(f.session->resume_id().empty());
}

TEST_CASE("adapter session: an adapter that does not finish start-up in time is stopped") {
  Fixture f;
  f.agent_args = {"--no-init-reply"};
  f.start_timeout = 200ms;
  auto ready = f.ensure();
  REQUIRE_FALSE(ready);
  CHECK(ready.error().code == rpc_code::kAdapterFailed);
  CHECK(ready.error().message == "adapter of harness 'fake' did not finish start-up within 0.2 s");
  CHECK(ready.error().data["harness"] == "fake");
  CHECK_FALSE(f.session->started());
  // The Reaper has it and sees it exit (stdin EOF, then the kill ladder).
  CHECK(f.run_until([&] { return f.reaper.size() == 0; }));
}

TEST_CASE("adapter session: adapters that cannot start or refuse a session") {
  Fixture f;
  SECTION("no such program") {
    f.agent_args = {};
    AdapterSession::Hooks hooks;
    // The spec's argv names a program that is not there.
    f.session.reset();
    hooks.spec = [] {
      AdapterSessionSpec spec;
      spec.link.process.argv = {"no-such-harness-program"};
      spec.link.process.cwd = "/tmp";
      spec.link.process.env = {"PATH=/usr/bin:/bin"};
      spec.link.process.guard_exe = test::guard_exe();
      spec.command = {"no-such-harness-program"};
      spec.install_hint = "install it";
      return spec;
    };
    f.session = std::make_unique<AdapterSession>(f.loop, f.reaper, 2s, "test session", "absent", std::move(hooks));
    auto ready = f.ensure();
    REQUIRE_FALSE(ready);
    CHECK(ready.error().code == rpc_code::kHarnessUnavailable);
    CHECK(ready.error().message.find("harness 'absent' cannot start: ") == 0);
    CHECK(ready.error().data == json({{"harness", "absent"}, {"command", {"no-such-harness-program"}},
                                      {"hint", "install it"}}));
  }
  SECTION("exits at once") {
    f.agent_args = {"--exit-on-start", "7"};
    auto ready = f.ensure();
    REQUIRE_FALSE(ready);
    CHECK(ready.error().code == rpc_code::kAdapterFailed);
    CHECK(ready.error().message == "adapter of harness 'fake' exited (exit code 7)");
    CHECK(ready.error().data["exitCode"] == 7);
    CHECK(ready.error().data["stderrTail"].get<std::string>().find("refusing to start") != std::string::npos);
  }
  SECTION("refuses session/new") {
    f.agent_args = {"--new-error"};
    auto ready = f.ensure();
    REQUIRE_FALSE(ready);
    CHECK(ready.error().message ==
          "adapter of harness 'fake' failed to create a session: cannot create session");
    CHECK(f.created.empty());
  }
}

TEST_CASE("adapter session: a prompt that kills the adapter fails with how it ended") {
  Fixture f;
  REQUIRE(f.ensure());
  const std::string id = f.session->id();
  auto answer = f.prompt("crash 5");
  REQUIRE_FALSE(answer);
  CHECK(answer.error().code == rpc_code::kAdapterFailed);
  CHECK(answer.error().message == "adapter of harness 'fake' exited (exit code 5)");
  CHECK(answer.error().data["stderrTail"].get<std::string>().find("crashing") != std::string::npos);
  // The link retires itself; its session is what the next adapter resumes.
  REQUIRE(f.run_until([&] { return !f.session->started(); }));
  CHECK(f.session->resume_id() == id);
  CHECK_FALSE(f.session->prompting());
  REQUIRE(f.ensure());
  CHECK(f.session->ready());
}
