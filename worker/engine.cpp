// The engine's set-up and its bounded shutdown.
#include "worker/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "acp/files.h"
#include "acp/log.h"
#include "adapters/process.h"
#include "harnesses/profile.h"
#include "worker/relay.h"

namespace harnessd::worker {

Engine::Engine(acp::Loop& loop, acp::Connection& host, EngineOptions options)
    : options_(std::move(options)),
      reaper_(loop),
      live_(loop, live_adapter_cap(options_.config.daemon), options_.config.daemon.adapter_idle_ttl),
      deadline_(loop) {
  store_ =
      Store::open(loop, options_.state_dir.empty() ? acp::default_state_home() : options_.state_dir, options_.store);
  rt_ = std::make_unique<Runtime>(Runtime{
      loop, options_.config, host, reaper_, *store_, options_.guard_exe,
      options_.self_exe.empty() ? adapters::self_executable() : options_.self_exe, adapters::current_environment()});
  rt_->sweep_orphans = options_.sweep_orphans;
  rt_->prestart = options_.prestart;
  rt_->live = &live_;
  rt_->adapter_output_gate = &adapter_output_gate_;
  rt_->host_input_gate = &host_input_gate_;
  store_hold_ = std::make_unique<acp::FlowGate::Hold>(adapter_output_gate_);
  store_->set_watermarks(options_.config.daemon.queue_high_water, options_.config.daemon.queue_low_water,
                         [hold = store_hold_.get()](bool over) {
                           acp::log::debug(over ? "the state directory is behind; holding the adapters' output back"
                                                : "the state directory caught up");
                           hold->set(over);
                         });
  // The newest record of each harness tells what its adapter offers.
  for (auto& [harness, offered] : store_->harness_options()) {
    if (!harness.empty()) rt_->harness_options[harness] = std::move(offered);
  }
  // Harnesses whose options are known without running them; a record of
  // what an adapter offered is newer knowledge and wins.
  for (const auto& [name, profile] : options_.config.harnesses) {
    nlohmann::json known = harnesses::known_config_options(profile);
    if (known.is_array() && !rt_->harness_options.count(name)) rt_->harness_options[name] = std::move(known);
  }
  rt_->breaker_changed = [this] { publish_harnesses(); };
  rt_->budgets = &budgets_;
  load_budgets();
  if (options_.warm) start_warm_pools();
  agent_ = std::make_unique<Agent>(*rt_);
}

void Engine::load_budgets() {
  // Budgets survive a restart: what counts is read back from the ledger.
  // Only when a harness has one, so that a start without budgets never
  // reads history.
  bool any = false;
  for (const auto& [name, profile] : options_.config.harnesses) {
    any = any || profile.max_runs_per_hour || profile.max_tokens_per_day;
  }
  if (!any) return;
  const auto now = Budgets::Clock::now();
  StateDb::RunFilter filter;
  filter.since = acp::iso_time(now - Budgets::kLookBack);
  budgets_.load(store_->list_runs(filter).runs, now);
}

void Engine::start_warm_pools() {
  // A warm adapter runs in harnessd's own directory until a session takes
  // it: the session's cwd goes in its session/new.
  char buf[4096];
  const std::string cwd = ::getcwd(buf, sizeof buf) ? buf : "/";
  const auto& d = options_.config.daemon;
  for (const auto& [name, profile] : options_.config.harnesses) {
    if (profile.warm == 0) continue;
    adapters::WarmPool::Options o;
    o.harness = name;
    o.size = profile.warm;
    o.kill_grace = d.kill_grace;
    o.start_timeout = d.start_timeout;
    o.limits = profile.limits;
    o.link = [rt = rt_.get(), profile = &profile, cwd, name = name] {
      return adapter_link_options(*rt, *profile, cwd, "warm " + name);
    };
    o.client_capabilities = [rt = rt_.get()] { return adapter_client_capabilities(*rt); };
    rt_->warm[name] = std::make_unique<adapters::WarmPool>(rt_->loop, reaper_, &live_, &rt_->breaker(name), std::move(o));
  }
  // Filled once the host has said what it offers (initialize), and again
  // whenever a place under the cap comes free.
  live_.on_room([rt = rt_.get()] {
    for (auto& [name, pool] : rt->warm) pool->fill();
  });
}

Engine::~Engine() {
  rt_->host.when_all_answered(nullptr);
  agent_.reset();
  deadline_.stop();
  if (published_) ::unlink(harnesses_file(rt_->store.dir(), rt_->store.instance()).c_str());
  store_.reset();  // finishes queued writes
}

void Engine::publish_harnesses() {
  // A small file beside the daemon's lock, replaced whole: `harnessd
  // status` and `harnesses --check` read it while the lock is held. Written
  // only when a breaker changes, which a start failure causes.
  nlohmann::json harnesses = nlohmann::json::object();
  const auto now = std::chrono::steady_clock::now();
  const auto wall = std::chrono::system_clock::now();
  for (const auto& [name, breaker] : rt_->breakers) {
    nlohmann::json s = breaker.status(now);
    if (auto retry = s.find("retryAfterMs"); retry != s.end()) {
      s["until"] = acp::iso_time(wall + std::chrono::milliseconds(retry->get<long long>()));
    }
    harnesses[name] = std::move(s);
  }
  const std::string file = harnesses_file(rt_->store.dir(), rt_->store.instance());
  const std::string tmp = file + ".tmp";
  const std::string text = nlohmann::json{{"pid", ::getpid()}, {"harnesses", harnesses}}.dump() + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || acp::write_all(fd, text) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), file.c_str()) != 0) {
    acp::log::warn("cannot write " + file + ": " + std::strerror(errno));
    return;
  }
  published_ = true;
}

std::string harnesses_file(const std::string& state_dir, const std::string& instance) {
  return state_dir + "/daemons/" + instance + ".harnesses.json";
}

void Engine::shutdown(const std::string& why, acp::UniqueFunction<void()> done, bool close_sessions) {
  if (stopping_) return;
  stopping_ = true;
  done_ = std::move(done);
  acp::log::info("shutting down: " + why);
  for (auto& [name, pool] : rt_->warm) pool->stop();
  // Two things end the closing: every prompt answered, and every adapter
  // gone. Adapters get a bounded time. Answers are not cut short by it:
  // with many prompts queued, recording each one's cancellation can take
  // longer than the adapters do, and a prompt left unanswered would be a
  // run the host never hears the end of. They get a bound of their own,
  // for a state directory that stopped taking writes.
  auto step = [this] {
    if (answered_ && adapters_gone_) drain_store();
  };
  deadline_.start(options_.config.daemon.cancel_grace + options_.config.daemon.kill_grace + std::chrono::seconds(3),
                  [this, step] {
                    acp::log::warn("adapters did not exit in time; going on without them");
                    adapters_gone_ = true;
                    if (!answered_) {
                      deadline_.start(std::chrono::seconds(60), [this] {
                        acp::log::error("open prompts were not all answered within 60 s; going on without them");
                        drain_store();
                      });
                    }
                    step();
                  });
  // Every prompt of a session closed here is answered once close_all
  // reports; a request still on its way (a session/close answering its
  // queue, a load reading the transcript) is waited for too.
  agent_->close_all(
      [this, step] {
        rt_->host.when_all_answered([this, step] {
          answered_ = true;
          step();
        });
      },
      close_sessions);
  reaper_.when_empty([this, step] {
    if (adapters_gone_) return;
    adapters_gone_ = true;
    step();
  });
}

void Engine::drain_store() {
  if (draining_) return;
  draining_ = true;
  rt_->host.when_all_answered(nullptr);  // the deadline may have come first
  auto finish = [this] {
    deadline_.stop();
    if (auto done = std::move(done_)) done();
  };
  deadline_.start(std::chrono::seconds(30), [finish] {
    acp::log::error("the state directory did not take the last writes in 30 s; going on anyway");
    finish();
  });
  store_->barrier_all([finish](Expected<void>) { finish(); });
}

}  // namespace harnessd::worker
